"""Criteria: per-sample losses ``criterion(logits, targets)``, what an attack maximises (and what
:class:`~advhooks.AdversarialStep` trains on). The training objectives (AT, TRADES, MART) are in
:mod:`advhooks.losses`."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Criterion", "cross_entropy", "kl_to_reference", "per_sample", "upcast"]

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32 (half-precision logits from autocast are widened; float64 kept)."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy, the default criterion (in at least float32).

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


def per_sample(criterion: Criterion | None) -> Criterion:
    """A criterion returning one loss per sample, from a user criterion.

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


def kl_to_reference(logits: torch.Tensor, reference_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p_ref ‖ softmax(logits)): TRADES' attack criterion.

    Args:
        logits: logits on the perturbed input.
        reference_log_probs: log-probabilities on the clean input (detached).
    """
    log_q = F.log_softmax(upcast(logits), dim=1)
    return F.kl_div(log_q, upcast(reference_log_probs), reduction="none", log_target=True).sum(dim=1)
