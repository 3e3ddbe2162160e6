"""The checks of an attack call, outside the iteration loop: ε and the criterion resolved, the inputs inside the
bounds and finite, integer targets of the right length, a model on the inputs' device and dtype. A check
that reads tensor values costs one host read per call (``out_of_bounds="clamp"`` skips the input check).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from ..schedules import check_eps_value, resolve_eps
from .config import AttackConfig
from .criteria import Criterion, per_sample
from .domain import InputDomain

__all__ = ["InputChecks", "check_call", "check_model_matches", "check_targets"]


# Inputs this far outside the bounds (relative to the box width) still count as inside: it absorbs the
# rounding of a normalise/denormalise round trip.
_BOUNDS_TOLERANCE = 1e-5


def check_call(config: AttackConfig, inputs: Any, targets: Any, eps: float | None, step: int,
               criterion: Criterion | None) -> tuple[float, Criterion]:
    """The checks of one call that need no host read; returns its strength and per-sample criterion."""
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise TypeError("inputs must be a floating-point tensor (N, ...)")
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch (N, ...), got shape {tuple(inputs.shape)}")
    check_targets(inputs, targets)
    eps = check_eps_value(config.eps_at(step) if eps is None else resolve_eps(eps, step))
    config.domain.check_eps(eps, config.norm)
    return eps, config.criterion_fn if criterion is None else per_sample(criterion)



class InputChecks:
    """NaN/inf inputs, inputs outside the bounds, pixel inputs under ``normalization=``, and class labels
    outside the logits' range: computed on the device, read on the host in one go.

    The label range needs the number of classes, known from the first forward's logits (shape metadata,
    no read), so the one read happens there, before the first loss: on CUDA an out-of-range label would
    otherwise be a device-side assert that kills the process. A silently wrong attack is worse than the read.
    """

    def __init__(self, x: torch.Tensor, domain: InputDomain, placed: Any) -> None:
        self.x, self.domain, self.placed = x, domain, placed
        self.flags = {"nonfinite": (~torch.isfinite(x)).any()}
        if domain.is_bounded:
            pixels = domain.pixels(x, placed)
            tol = _BOUNDS_TOLERANCE * (placed.high - placed.low)
            self.flags["outside"] = ((pixels < placed.low - tol) | (pixels > placed.high + tol)).any()
        # Normalised inputs have values below 0 wherever a pixel is under the mean; a first batch with none
        # is almost surely still in pixel units (normalization= given, but the data is not normalised yet).
        if not domain.first_batch_checked and domain.maps_zero_below_zero:
            self.flags["pixel_units"] = (x >= 0).all()
        domain.first_batch_checked = True

    def read(self, logits: torch.Tensor | None, targets: torch.Tensor) -> None:
        """Read every flag with one host read; raise (or warn) for what they show."""
        flags = dict(self.flags)
        classes = None
        if logits is not None and logits.ndim == 2 and targets.ndim == 1 and not targets.is_floating_point():
            classes = logits.shape[1]
            flags["labels"] = ((targets < 0) | (targets >= classes)).any()
        values = dict(zip(flags, torch.stack(list(flags.values())).tolist(), strict=True))
        x, domain, placed = self.x, self.domain, self.placed
        if values.get("pixel_units"):
            warnings.warn("normalization=(mean, std) is set but every input of the first batch is >= 0: are the "
                          "inputs still in pixel units? normalization= expects inputs already normalised as "
                          "(pixel - mean) / std; drop it for pixel inputs", UserWarning, stacklevel=5)
        if values["nonfinite"]:
            raise ValueError(f"inputs contain NaN or inf values ({int((~torch.isfinite(x)).sum())} of {x.numel()}); "
                             "clean the batch before attacking it")
        if values.get("outside"):
            pixels = domain.pixels(x, placed)
            lo, hi = pixels.min().item(), pixels.max().item()
            raise ValueError(
                f"inputs lie outside the attack's bounds (pixel range [{lo:.4g}, {hi:.4g}] vs bounds "
                f"{domain.bounds!r}); pass the right bounds (or normalization=(mean, std) for normalised "
                "inputs), bounds=None for unbounded inputs, or out_of_bounds='clamp' to clamp them"
            )
        if values.get("labels"):
            bad = targets[(targets < 0) | (targets >= classes)]
            raise ValueError(f"targets hold a class index outside [0, {classes}) for logits of {classes} classes "
                             f"(e.g. {int(bad[0])})")


def check_targets(inputs: torch.Tensor, targets: Any) -> None:
    """Shape and dtype checks that need no host read (the label range is read with the input checks)."""
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a tensor, got {type(targets).__name__}")
    if targets.ndim == 0 or targets.shape[0] != inputs.shape[0]:
        rows = "a scalar" if targets.ndim == 0 else f"{targets.shape[0]} rows"
        raise ValueError(f"targets has {rows} but inputs has {inputs.shape[0]}: one target per sample")


def check_model_matches(module: nn.Module, inputs: torch.Tensor, precision: str | None) -> None:
    """The model's parameters on the inputs' device and (without autocast) of their dtype."""
    devices, dtypes = set(), set()
    for p in module.parameters():
        if isinstance(p, UninitializedParameter):
            continue
        devices.add(p.device)
        if p.is_floating_point():
            dtypes.add(p.dtype)
    if len(devices) == 1:
        (device,) = devices
        if device != inputs.device and not (device.type == inputs.device.type and device.index is None):
            raise ValueError(f"inputs are on {inputs.device} but the model's parameters are on {device}; "
                             "move them to the same device")
    autocasting = precision is not None or torch.is_autocast_enabled(inputs.device.type)
    if len(dtypes) == 1 and not autocasting:
        (dtype,) = dtypes
        if dtype != inputs.dtype:
            raise TypeError(f"inputs are {inputs.dtype} but the model's parameters are {dtype}; cast one of "
                            "them (or run under torch.autocast)")
