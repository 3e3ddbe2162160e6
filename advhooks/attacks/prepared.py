"""What a search over the ε-ball needs before its first query, shared by the evaluation attacks (Square, FAB):
the inputs checked once, δ's box in pixel units, and a forward of ``inputs + δ`` in eval mode.

The perturbation δ lives in pixel units as for every attack here (:mod:`advhooks.attacks.domain`); the model
sees ``x + δ / std`` under a normalisation. The model is left exactly as found (:func:`attack_mode`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._outputs import call_model
from .checks import InputChecks, check_model_matches, check_targets
from .domain import Bounds, InputDomain, Normalization
from .functional import apply_delta, delta_box
from .model_state import attack_mode, unwrap_parallel

__all__ = ["Prepared", "prepared"]


@dataclass
class Prepared:
    """One batch ready to be searched: ``forward(δ)`` gives the logits at ``x + δ``, ``inputs(δ)`` the point."""

    x: torch.Tensor
    low: torch.Tensor | None  # δ's box, pixel units (the L∞ ball folded in for norm="linf" when ball=True)
    high: torch.Tensor | None
    module: nn.Module
    domain: InputDomain
    placed: Any
    input_key: str | None
    model_kwargs: dict
    classes: int = 0  # the logits' width, from the checking forward

    def forward(self, delta: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at ``x + δ`` (δ in pixel units), or at ``x[rows] + δ`` for a subset of the batch."""
        x = self.x if rows is None else self.x[rows]
        inv_std = self.placed.inv_std
        return call_model(self.module, x + (delta if inv_std is None else delta * inv_std), self.input_key,
                          self.model_kwargs)

    def box(self, rows: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """δ's box ``(low, high)``, of the whole batch or of ``rows``; ``(None, None)`` when unbounded."""
        if self.low is None or rows is None:
            return self.low, self.high
        return self.low[rows], self.high[rows]

    def inputs(self, delta: torch.Tensor) -> torch.Tensor:
        """The model input ``x + δ``, clamped into the bounds."""
        return apply_delta(self.x, delta, self.domain, self.placed)



def domain_of(bounds: Bounds | InputDomain, normalization: Normalization) -> InputDomain:
    """``bounds`` as a validated :class:`InputDomain`."""
    return bounds if isinstance(bounds, InputDomain) else InputDomain(bounds, normalization)


@contextmanager
def prepared(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, eps: float, norm: str,
             domain: InputDomain, *, ball: bool = True, input_key: str | None = None,
             model_kwargs: Mapping[str, Any] | None = None) -> Iterator[Prepared]:
    """Check one call's inputs (one host read) and hold the model in eval mode while the search runs.

    ``ball=False`` leaves the L∞ ball out of δ's box (FAB searches for the smallest perturbation, of any size).
    """
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise TypeError("inputs must be a floating-point tensor (N, ...)")
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch (N, ...), got shape {tuple(inputs.shape)}")
    check_targets(inputs, targets)
    domain.check_eps(eps, norm)
    check_model_matches(unwrap_parallel(model), inputs, None)
    x = inputs.detach()
    placed = domain.place(x)
    checks = InputChecks(x, domain, placed)
    low, high = delta_box(x, domain, placed, norm if ball else "l2", eps)
    with attack_mode(model, "eval") as module, torch.no_grad():
        state = Prepared(x, low, high, module, domain, placed, input_key, dict(model_kwargs or {}))
        logits = state.forward(torch.zeros_like(x))
        checks.read(logits, targets)
        state.classes = logits.shape[1] if logits.ndim == 2 else 0
        yield state
