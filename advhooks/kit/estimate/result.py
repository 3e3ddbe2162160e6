"""What an ε* estimator returns (:class:`EpsStarEstimate`) and what the estimators share: the ε grid's check and the
cost counters."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ...schedules import format_eps
from ...uncertainty import DEFAULT_LEVEL
from ..training import PassCounter


@dataclass
class EpsStarEstimate:
    """An ε* estimate with what it rests on.

    Attributes:
        method: ``"grid"``, ``"finetune"``, ``"clean-probe"`` or ``"records"``.
        value: the estimate (``None`` when it cannot be given; ``warnings`` says why).
        clean_test_loss: R*(0) used.
        points: the measured ``{"eps", "loss", "run", ...}`` points (failed runs carry ``"failed"``).
        per_run: the estimate of each run (fine-tune, grid with runs > 1).
        spread: standard deviation of ``per_run`` (``None`` with one run).
        bracket: for the grid and the fine-tune, the two ε around the crossing (``(largest ε, None)`` when
            extrapolated); for the clean probe, ``(lower bound, None)``.
        extrapolated: the fine-tune's ladder reached its cap still below R*(0), so ``value`` is extrapolated.
        verification: the verdict of one monitored run from scratch at ``value``
            (:func:`~advhooks.kit.estimate.verify.verify_estimate`; ``"confirms"`` when it reads ``near eps*``).
        lower_bound / first_order: the clean probe's two figures.
        consistency: the fine-tune's slope at small ε (between its two smallest strengths) / mean‖∇ₓℓ(θ̂(0))‖_*,
            when both are known (≈ 1 expected to first order).
        seconds: wall time; forward_samples / backward_samples: per-sample passes through the model;
        train_set_passes: (forward + backward samples) / (2 · n_train), in epochs of clean training.
        warnings: what the reader should know.
        interval / level: the band ``[low, high]`` around ``value`` and its coverage (default 0.8): R*(0)'s
            bootstrap and another clean run's spread, R̂'s sampling error and the run-to-run spread
            (:mod:`~advhooks.kit.estimate.spread`), carried through the estimator.
        poorly_determined: R̂(ε) is so flat near R*(0) that the band spans more than a factor
            ``POORLY_DETERMINED`` (or cannot be drawn): the value is one reading of a flat curve, not a tight number.
        disagreement: set when the clean probe's figures or the check from scratch disagree with the band
            (:func:`~advhooks.kit.estimate.agreement.disagreement`): what each says and which side it points to.
    """

    method: str
    value: float | None
    clean_test_loss: float
    norm: str
    points: list[dict[str, Any]] = field(default_factory=list)
    per_run: list[float] = field(default_factory=list)
    spread: float | None = None
    bracket: tuple[float | None, float | None] | None = None
    extrapolated: bool = False
    verification: dict[str, Any] | None = None
    lower_bound: float | None = None
    first_order: float | None = None
    mean_grad_dual_norm: float | None = None
    consistency: float | None = None
    seconds: float = 0.0
    forward_samples: int = 0
    backward_samples: int = 0
    train_set_passes: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    interval: tuple[float, float] | None = None
    level: float = DEFAULT_LEVEL
    poorly_determined: bool = False
    disagreement: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON-ready)."""
        out = asdict(self)
        out["interval"] = None if self.interval is None else list(self.interval)
        return out

    def to_json(self, **kwargs: Any) -> str:
        """The estimate as JSON."""
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        """The estimate as an aligned table for people: value, band, R*(0), fit, probe, points, cost, warnings."""

        def u(v: float | None) -> str:
            return "-" if v is None else format_eps(v)

        band = ("-" if self.interval is None
                else f"[{u(self.interval[0])}, {u(self.interval[1])}] ({self.level:.0%} band)")
        value = ("eps* >= (lower bound)", u(self.value)) if self.method == "clean-probe" else ("eps*", u(self.value))
        rows = [("method", self.method), value, ("band", band), ("R*(0)", f"{self.clean_test_loss:.4f}")]
        if self.poorly_determined:
            rows.append(("determined", "POORLY: R-hat is flat near R*(0); read the band, not the value"))
        if self.spread is not None:
            rows.append(("spread over runs (sd)", u(self.spread)))
        if self.per_run and len(self.per_run) > 1:
            rows.append(("per run", ", ".join(format_eps(v) for v in self.per_run)))
        if self.bracket and self.method in ("grid", "records", "finetune"):
            rows.append(("bracket", f"{u(self.bracket[0])} .. {u(self.bracket[1])}"))
        if self.lower_bound is not None or self.first_order is not None:
            rows.append(("clean-probe lower bound", u(self.lower_bound)))
            rows.append(("first-order estimate", u(self.first_order)))
        if self.consistency is not None:
            rows.append(("slope / mean grad dual norm", f"{self.consistency:.3f} (about 1 expected)"))
        rows.append(("points", "; ".join(f"{format_eps(p['eps'])}: {p['loss']:.4f}" if p.get("loss") is not None
                                         else f"{format_eps(p['eps'])}: failed" for p in self.points)))
        rows.append(("cost", f"{self.seconds:.1f} s, {self.train_set_passes:.0f} training-set passes"))
        if self.verification:
            v = self.verification
            low, high = v["ratio_interval"]
            rows.append(("check: run from scratch", f"at {u(v['eps'])}: rho {v['ratio']:.3f} [{low:.3f}, {high:.3f}], "
                                                    f"{v['regime']}: {v['meaning']} ({v['seconds']:.1f} s)"))
        if self.disagreement:
            rows.append(("DISAGREEMENT", self.disagreement))
        rows += [("warning", w) for w in self.warnings]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def check_eps_grid(eps: Sequence[float], name: str = "eps") -> list[float]:
    """A sorted, non-empty, non-negative list of distinct finite strengths, or a clear ValueError."""
    values = [float(e) for e in eps]
    if not values:
        raise ValueError(f"{name} must not be empty")
    if any(not math.isfinite(e) or e < 0 for e in values):
        raise ValueError(f"{name} must contain finite values >= 0, got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not contain duplicates, got {values}")
    if values != sorted(values):
        raise ValueError(f"{name} must be sorted in increasing order, got {values}")
    return values


def _finite(v: float) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def with_cost(est: EpsStarEstimate, counter: PassCounter, start: float, n_train: int) -> EpsStarEstimate:
    """``est`` with what it cost: the wall time since ``start`` and ``counter``'s passes, also in epochs of clean
    training over ``n_train`` samples (what every estimator reports)."""
    est.seconds = time.perf_counter() - start
    est.forward_samples, est.backward_samples = counter.forward, counter.backward
    est.train_set_passes = (counter.forward + counter.backward) / (2 * max(n_train, 1))
    return est
