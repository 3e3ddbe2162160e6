"""The geometry of the Lp balls: uniform random starts, steepest-ascent directions, projections.

All functions work on a whole batch at once (per-sample norms over every non-batch dimension) and
never read a tensor value on the host, so they are safe inside a captured or compiled loop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .sample_noise import SampleNoise

__all__ = ["NORMS", "Region", "dual_norm", "project_", "random_in_ball_", "steepest_direction_"]

NORMS = ("linf", "l2")
_TINY = 1e-12


class Region(NamedTuple):
    """Where δ may go: the ε-ball of ``norm`` within the box ``[low, high]`` (``None``: no box), as
    ``project_(delta, *region)`` takes it."""

    norm: str
    eps: float
    low: torch.Tensor | None
    high: torch.Tensor | None


def _per_sample_l2(t: torch.Tensor) -> torch.Tensor:
    shape = (t.shape[0],) + (1,) * (t.ndim - 1)
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), ord=2, dim=1).reshape(shape)


def random_in_ball_(
    delta: torch.Tensor, norm: str, eps: float, generator: torch.Generator | SampleNoise | None = None
) -> torch.Tensor:
    """Fill ``delta`` in place with points uniform in the ε-ball of ``norm`` (one per sample).

    ``generator``: a ``torch.Generator`` (default the global one), or a :class:`SampleNoise` whose numbers are a
    function of each sample's index (an evaluation's starts, the same on any number of processes).
    """
    if norm == "linf":
        noise = _draw("rand", delta.shape, generator, delta)
        delta.copy_(noise.mul_(2 * eps).sub_(eps))
        return delta
    # Uniform in the L2 ball: a Gaussian direction and radius ε·U^(1/d).
    direction = _draw("randn", delta.shape, generator, delta)
    d = delta[0].numel()
    u = _draw("rand", (delta.shape[0],) + (1,) * (delta.ndim - 1), generator, delta)
    radius = u.pow_(1.0 / d).mul_(eps)
    delta.copy_(direction.div_(_per_sample_l2(direction).clamp_min_(_TINY)).mul_(radius))
    return delta


def _draw(kind: str, shape: tuple[int, ...], generator: torch.Generator | SampleNoise | None,
          like: torch.Tensor) -> torch.Tensor:
    """``torch.rand`` / ``torch.randn`` of ``shape`` on ``like``'s device and dtype, from ``generator``."""
    if isinstance(generator, SampleNoise):
        return getattr(generator, kind)(shape, device=like.device, dtype=like.dtype)
    return getattr(torch, kind)(shape, generator=generator, device=like.device, dtype=like.dtype)


def steepest_direction_(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Turn ``grad`` in place into the unit steepest-ascent direction of ``norm``.

    L∞: ``sign(g)``; L2: ``g / ‖g‖₂`` (zero where the gradient is zero).
    """
    if norm == "linf":
        return grad.sign_()
    return grad.div_(_per_sample_l2(grad).clamp_min_(_TINY))


def project_(delta: torch.Tensor, norm: str, eps: float, low: torch.Tensor | None = None,
             high: torch.Tensor | None = None) -> torch.Tensor:
    """Project ``delta`` in place onto the ε-ball, then into the box ``[low, high]``.

    For L∞ the caller may pass ``low``/``high`` already intersected with ``[-ε, ε]``; the result is the
    exact projection onto the intersection. For L2 the box clamp after rescaling keeps the norm ≤ ε
    because the box contains 0 (clamping only shrinks coordinates towards it).
    """
    if norm == "linf":
        if low is None:
            return delta.clamp_(-eps, eps)
        return delta.clamp_(low, high)
    factor = (eps / _per_sample_l2(delta).clamp_min_(_TINY)).clamp_max_(1.0)
    delta.mul_(factor)
    if low is not None:
        delta.clamp_(low, high)
    return delta


def dual_norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample dual norm of ``t``: ‖t‖₁ for an L∞ attack, ‖t‖₂ for L2 (first-order loss increase)."""
    flat = t.reshape(t.shape[0], -1)
    return torch.linalg.vector_norm(flat, ord=1 if norm == "linf" else 2, dim=1)
