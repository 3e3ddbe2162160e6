"""Schedules: ε as a callable of the training step, and the paper's learning-rate decay (:func:`step_decay`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

from ._validation import check_finite_nonnegative

__all__ = ["EpsLike", "LinearWarmup", "check_eps_value", "format_eps", "linear_warmup", "parse_eps", "parse_eps_list",
           "resolve_eps", "step_decay", "validate_eps"]

EpsLike = Union[float, Callable[[int], float]]


class LinearWarmup:
    """ε rising linearly from ``start`` to ``eps`` over ``warmup_steps`` steps, then constant.

    Stateless (a pure function of the step), so resuming only needs the step counter.

    Args:
        eps: final attack strength.
        warmup_steps: steps to reach it (0 means constant).
        start: strength at step 0.

    Example:
        >>> sched = LinearWarmup(8 / 255, warmup_steps=100)
        >>> sched(50) == 4 / 255
        True
    """

    def __init__(self, eps: float, warmup_steps: int, start: float = 0.0) -> None:
        self.eps = check_finite_nonnegative("eps", eps)
        self.start = check_finite_nonnegative("start", start)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        if self.warmup_steps == 0 or step >= self.warmup_steps:
            return self.eps
        frac = max(step, 0) / self.warmup_steps
        return self.start + (self.eps - self.start) * frac

    def __repr__(self) -> str:
        return f"LinearWarmup(eps={self.eps!r}, warmup_steps={self.warmup_steps}, start={self.start!r})"


def linear_warmup(eps: float, warmup_steps: int, start: float = 0.0) -> LinearWarmup:
    """A :class:`LinearWarmup` schedule (ε from ``start`` to ``eps`` over ``warmup_steps``)."""
    return LinearWarmup(eps, warmup_steps, start)


def validate_eps(eps: Any) -> EpsLike:
    """Check an ε given as a number or a schedule; a schedule is probed at step 0."""
    if callable(eps):
        check_finite_nonnegative("eps schedule value at step 0", eps(0))
        return eps
    return check_eps_value(eps)


def check_eps_value(eps: Any) -> float:
    """One strength in pixel units as a float, or a clear error (a per-channel ε points to ``normalization=``)."""
    if isinstance(eps, str):
        raise TypeError(f"eps must be a real number, got the string {eps!r}: write 8/255 as a number in Python, or "
                        "parse text with advhooks.parse_eps")
    if _is_several_values(eps):
        raise TypeError(
            "eps must be one number in pixel units, got several values: a per-channel eps (eps / std, as in "
            "scripts that attack normalised inputs) is what normalization=(mean, std) computes; give e.g. "
            "eps=8/255, normalization=(mean, std)"
        )
    return check_finite_nonnegative("eps", eps)


def _is_several_values(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return len(value) > 1
    numel = getattr(value, "numel", None)  # a tensor or an array, without importing torch here
    size = numel() if callable(numel) else getattr(value, "size", None)
    return isinstance(size, int) and size > 1


def resolve_eps(eps: EpsLike, step: int) -> float:
    """The strength at ``step``, checked (a schedule may not return a negative or non-finite ε)."""
    if callable(eps):
        return check_finite_nonnegative(f"eps schedule value at step {step}", eps(step))
    return eps


def parse_eps(text: str) -> float:
    """A strength written naturally: ``"8/255"``, ``"0.5/255"``, ``"0.03"``.

    Example:
        >>> parse_eps("0.5/255") == 0.5 / 255
        True
    """
    part = text.strip()
    try:
        num, _, den = part.partition("/")
        return float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"eps must be a number or a fraction like 8/255, got {text!r}") from None


def format_eps(eps: float) -> str:
    """A strength as people read it and as a number, everywhere advhooks prints one: ``"8/255 (0.03137)"``.

    Example:
        >>> format_eps(8 / 255)
        '8/255 (0.03137)'
    """
    return f"{eps * 255:.3g}/255 ({eps:.4g})"


def parse_eps_list(text: str) -> list[float]:
    """``"0.5/255,1/255,2/255"`` → floats (see :func:`parse_eps`).

    Example:
        >>> parse_eps_list("1/255, 0.5")
        [0.00392156862745098, 0.5]
    """
    parts = [p.strip() for p in text.split(",")]
    if any(not p for p in parts):
        raise ValueError(f"eps list has an empty entry: {text!r}")
    return [parse_eps(p) for p in parts]


def step_decay(epoch: int, epochs: int) -> float:
    """The paper's learning-rate factor: 1, then 0.1 from ``epochs // 2``, 0.01 from ``3 * epochs // 4``.

    (Rice et al.'s schedule, lr / 10 at epochs 100 and 150 of 200, scaled to any length; ``epoch`` counts
    from 0.) Use it for adversarial runs too, so that they compare with the clean benchmark like for like:
    ``torch.optim.lr_scheduler.LambdaLR(opt, lambda e: step_decay(e, epochs))``.

    Example:
        >>> [step_decay(e, 8) for e in (0, 3, 4, 5, 6, 7)]
        [1.0, 1.0, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002]
    """
    return 0.1 ** ((epoch >= epochs // 2) + (epoch >= (3 * epochs) // 4))
