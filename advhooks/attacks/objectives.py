"""What an attack maximises: per-sample losses of ``(logits, targets)``."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Objective", "cross_entropy", "per_sample", "upcast"]

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32 (half-precision logits from autocast are widened; float64 kept)."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy, the default attack objective (in at least float32).

    ``targets`` are integer class labels ``(N,)`` or class probabilities shaped like the logits.
    """
    logits = upcast(logits)
    if targets.is_floating_point() and targets.shape != logits.shape:
        raise TypeError(f"targets must be integer class labels (N,) or class probabilities shaped like the logits "
                        f"{tuple(logits.shape)}; got {targets.dtype} of shape {tuple(targets.shape)}")
    try:
        return F.cross_entropy(logits, targets, reduction="none")
    except IndexError as err:  # the CPU kernel's "Target 12 is out of bounds."
        classes = logits.shape[1] if logits.ndim > 1 else logits.shape[0]
        raise ValueError(f"targets hold a class index outside [0, {classes}) for logits of {classes} classes "
                         f"({err})") from None


def per_sample(criterion: Objective | None) -> Objective:
    """An objective returning one loss per sample, from a user criterion.

    ``None`` gives :func:`cross_entropy`. A loss module with a ``reduction`` attribute (``nn.CrossEntropyLoss()``
    and friends) is copied with ``reduction="none"``. Any other callable is used as is: it should
    return per-sample losses; one returning a scalar still drives a single-start attack, but cannot rank
    restarts.

    Args:
        criterion: ``criterion(logits, targets) -> loss``, or ``None``.
    """
    if criterion is None:
        return cross_entropy
    if not callable(criterion):
        raise TypeError(f"criterion must be callable as criterion(logits, targets), got {type(criterion).__name__}")
    if isinstance(criterion, nn.Module) and getattr(criterion, "reduction", "none") != "none":
        criterion = copy.copy(criterion)
        criterion.reduction = "none"
    return criterion
