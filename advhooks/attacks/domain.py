"""Where inputs live: box bounds in pixel units and an optional per-channel normalisation.

The attack's perturbation δ always lives in *pixel units* (the units of ε). When the pipeline
normalises before the model, the model sees ``x + δ / std`` and the box constraint
``low <= pixel(x) + δ <= high`` is enforced on δ directly. For L∞ this equals a per-channel ε of
``ε / std_c`` in normalised units; for L2 it keeps the ball round in pixel space, where ε is defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Union

import torch

__all__ = ["Bounds", "InputDomain", "Normalization"]

Scalars = Union[float, Sequence[float], torch.Tensor]
Bounds = Union[tuple[Scalars, Scalars], None]
Normalization = Union[tuple[Scalars, Scalars], None]


def _as_cpu_vector(name: str, value: Scalars) -> torch.Tensor:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got bool")
    if isinstance(value, Real):
        t = torch.tensor([float(value)], dtype=torch.float64)
    elif isinstance(value, torch.Tensor):
        t = value.detach().to("cpu", torch.float64).flatten()
    elif isinstance(value, Sequence) and not isinstance(value, str):
        try:
            t = torch.tensor([float(v) for v in value], dtype=torch.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must contain numbers, got {value!r}") from None
    else:
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got {type(value).__name__}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return t


def _pair(name: str, value: object) -> tuple[Scalars, Scalars]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (low, high) / (mean, std) or None, got {value!r}")
    return value[0], value[1]


def _broadcast_shape(t: torch.Tensor, ndim: int) -> torch.Tensor:
    # Per-channel values sit on dim 1 (N, C, ...); a single value broadcasts everywhere.
    if t.numel() == 1:
        return t.reshape(())
    if ndim < 2:
        raise ValueError(f"per-channel values need inputs with a channel dimension, got {ndim}-d inputs")
    return t.reshape(1, -1, *([1] * (ndim - 2)))


@dataclass
class _Placed:
    low: torch.Tensor | None  # pixel-space bounds, broadcastable
    high: torch.Tensor | None
    mean: torch.Tensor | None
    std: torch.Tensor | None
    inv_std: torch.Tensor | None
    input_low: torch.Tensor | None  # bounds in the model's input units
    input_high: torch.Tensor | None


@dataclass(eq=False)
class InputDomain:
    """Validated bounds and normalisation, placed on a device on demand (and cached).

    Args:
        bounds: ``(low, high)`` in pixel units, each a number or per-channel values; ``None`` for
            unbounded inputs such as embeddings.
        normalization: ``(mean, std)`` per channel when the inputs given to the attack are already
            normalised as ``(pixel - mean) / std``; ``None`` when they are in pixel units.

    Example:
        >>> d = InputDomain(bounds=(0.0, 1.0), normalization=((0.5,), (0.25,)))
        >>> d.is_bounded
        True
    """

    bounds: Bounds = (0.0, 1.0)
    normalization: Normalization = None
    _low: torch.Tensor | None = field(init=False, repr=False, default=None)
    _high: torch.Tensor | None = field(init=False, repr=False, default=None)
    _mean: torch.Tensor | None = field(init=False, repr=False, default=None)
    _std: torch.Tensor | None = field(init=False, repr=False, default=None)
    _cache: dict = field(init=False, repr=False, default_factory=dict)
    width: float | None = field(init=False, repr=False, default=None)
    first_batch_checked: bool = field(init=False, repr=False, default=False)

    def __post_init__(self) -> None:
        if self.bounds is not None:
            low, high = _pair("bounds", self.bounds)
            self._low = _as_cpu_vector("bounds low", low)
            self._high = _as_cpu_vector("bounds high", high)
            if self._low.numel() != self._high.numel() and 1 not in (self._low.numel(), self._high.numel()):
                raise ValueError(
                    f"bounds low and high must have the same number of channels, got "
                    f"{self._low.numel()} and {self._high.numel()}"
                )
            if not (self._low < self._high).all():
                raise ValueError(f"bounds must satisfy low < high in every channel, got {self.bounds!r}")
            self.width = float((self._high - self._low).max())
        if self.normalization is not None:
            mean, std = _pair("normalization", self.normalization)
            self._mean = _as_cpu_vector("normalization mean", mean)
            self._std = _as_cpu_vector("normalization std", std)
            if not (self._std > 0).all():
                raise ValueError(f"normalization std must be > 0 in every channel, got {std!r}")

    def check_eps(self, eps: float, norm: str) -> None:
        """Refuse an L∞ ε wider than the box: a ball that covers every input is an ε in the wrong units.

        (``PGD(8)`` from a script that meant ``8/255`` would otherwise run with max |δ| = 1.) L2 radii may
        legitimately exceed the box's width per coordinate, so only L∞ is checked.
        """
        if norm == "linf" and self.width is not None and eps > self.width * (1 + 1e-6):  # rounding of high − low
            hint = f" (did you mean eps={eps:g}/255?)" if self.width <= 1 and eps >= 1 else ""
            raise ValueError(f"eps={eps:g} is larger than the bounds' range {self.width:g} (bounds {self.bounds!r}): "
                             f"an L-inf ball that wide covers every input{hint}; eps is in the units of the bounds")

    @property
    def maps_zero_below_zero(self) -> bool:
        """Whether the normalisation sends a pixel value of 0 below 0 (some channel has mean > 0)."""
        return self._mean is not None and bool((self._mean > 0).any())

    @property
    def is_bounded(self) -> bool:
        """Whether the inputs have box bounds."""
        return self._low is not None

    def place(self, like: torch.Tensor) -> _Placed:
        """Return the constants as tensors on ``like``'s device and dtype, shaped to broadcast."""
        key = (like.device, like.dtype, like.ndim)
        placed = self._cache.get(key)
        if placed is None:
            placed = self._cache[key] = self._build(like)
        return placed

    def _build(self, like: torch.Tensor) -> _Placed:
        def put(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            return _broadcast_shape(t, like.ndim).to(device=like.device, dtype=like.dtype)

        low, high, mean, std = put(self._low), put(self._high), put(self._mean), put(self._std)
        inv_std = None if std is None else put(1.0 / self._std)
        input_low, input_high = low, high
        if mean is not None and low is not None:
            input_low = put((self._low - self._mean) / self._std)
            input_high = put((self._high - self._mean) / self._std)
        return _Placed(low, high, mean, std, inv_std, input_low, input_high)

    def pixels(self, inputs: torch.Tensor, placed: _Placed) -> torch.Tensor:
        """Inputs in pixel units (undoing the normalisation if there is one)."""
        if placed.mean is None:
            return inputs
        return inputs * placed.std + placed.mean
