"""Argument checks shared by the public constructors: one place, one wording."""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real
from typing import Any

__all__ = ["check_choice", "check_finite_nonnegative", "check_loss", "check_positive", "check_positive_int",
           "check_unit_interval"]


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        try:
            import torch

            if isinstance(value, torch.Tensor) and value.numel() == 1 and value.device.type == "cpu":
                return float(value)
        except ImportError:  # pragma: no cover - torch is a hard dependency
            pass
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def check_finite_nonnegative(name: str, value: Any) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number >= 0."""
    v = _as_float(name, value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def check_loss(name: str, value: Any) -> float:
    """Return a measured loss as a float: NaN and inf pass (a diverged run is a state to report, not an input
    error), a negative value or a non-number raises."""
    v = _as_float(name, value)
    if v < 0:
        raise ValueError(f"{name} must be a loss (>= 0, or NaN/inf for a diverged run), got {value!r}")
    return v


def check_positive(name: str, value: Any) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number > 0."""
    v = _as_float(name, value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, Real) and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_unit_interval(name: str, value: Any, *, closed_right: bool = False) -> float:
    """Return ``value`` as a float, or raise if it is outside [0, 1) (or [0, 1])."""
    v = _as_float(name, value)
    ok = 0.0 <= v <= 1.0 if closed_right else 0.0 <= v < 1.0
    if not ok:
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` lower-cased, or raise if it is not one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value.lower()
