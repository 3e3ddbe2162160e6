"""Where the curve R̂(ε) crosses R*(0) for the last time (ε* = sup{ε : R̂(θ̂(ε), ε) ≤ R*(0)}), with its band: one
definition for the grid, the run records and the fine-tune (each gives measured points ``{"eps", "run", "loss",
"stderr"}``; this turns them into ε*), and the adaptive strengths that bracket it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...benchmark import CleanBenchmark
from ...schedules import format_eps
from ...uncertainty import bootstrap_means, normal_draws, propagate
from .result import EpsStarEstimate
from .spread import benchmark_draws, point_errors

# A band wider than this factor (high / low) makes the estimate poorly determined: the paper's fine-tune is accurate
# to ×1.4 / ÷1.9 (a span of 2.7), and a band much wider says less than the method can.
POORLY_DETERMINED = 3.0
# How the fine-tune's strengths, and the grid's beyond its points, grow (or shrink) until R̂ is on both sides of R*(0).
GROWTH = 1.5


def r_star_draws(benchmark: CleanBenchmark, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Draws of R*(0): the bootstrap of the stored per-sample test losses, else normal with its s.e."""
    if benchmark.test_losses is not None and benchmark.test_losses.numel() > 1:
        return bootstrap_means(benchmark.test_losses.double().numpy(), draws, rng)
    return normal_draws([benchmark.clean_test_loss], [benchmark.test_loss_stderr], draws, rng)[:, 0]


def interpolate_crossing(eps: list[float], losses: list[float], target: float):
    """ε* of the piecewise-linear L(ε) through the points: sup{ε : L(ε) <= ``target``}, the definition's supremum
    (where L crosses ``target`` from below for the last time), and the bracketing pair; ``(None, None)`` when
    the last point is still at or below ``target`` (ε* lies beyond) or every point is above it.

    Example:
        >>> interpolate_crossing([1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 0.5, 1.5], 1.0)  # not the first crossing, 1.5
        (3.5, (3.0, 4.0))
    """
    if not losses or losses[-1] <= target:
        return None, None
    below = [i for i, v in enumerate(losses) if v <= target]
    if not below:
        return None, None
    i = below[-1]
    (e0, l0), (e1, l1) = (eps[i], losses[i]), (eps[i + 1], losses[i + 1])
    return e0 + (target - l0) * (e1 - e0) / (l1 - l0), (e0, e1)


def extrapolate_crossing(eps: list[float], losses: list[float], target: float) -> float | None:
    """Where the line through the last two points reaches ``target``, for a curve still at or below it at its end
    (``None`` when that line does not rise)."""
    if len(eps) < 2 or losses[-1] <= losses[-2]:
        return None
    slope = (losses[-1] - losses[-2]) / (eps[-1] - eps[-2])
    return eps[-1] + (target - losses[-1]) / slope


def censored_crossing(eps: list[float], losses: list[float], target: float) -> float | None:
    """The crossing of one Monte-Carlo draw; a draw whose curve ends at or below ``target`` counts as the grid's end.

    Dropping such draws would bias the band low (they are the draws where ε* is largest), so they are kept
    at the largest ε, and the band then says it reaches the grid's edge. Draws above ``target`` at every point
    count as the first ε.
    """
    value, _ = interpolate_crossing(eps, losses, target)
    if value is not None:
        return value
    return eps[-1] if losses[-1] <= target else eps[0]


def extrapolated_crossing(eps: list[float], losses: list[float], target: float) -> float | None:
    """The crossing of one Monte-Carlo draw of a curve that may end below ``target`` (a fine-tune ladder stopped at
    its cap): interpolated where it crosses, else extrapolated as the estimate itself was."""
    value, _ = interpolate_crossing(eps, losses, target)
    if value is None and losses and losses[-1] <= target:
        return extrapolate_crossing(eps, losses, target)
    return value


def curve_of(points: Sequence[dict[str, Any]], benchmark: CleanBenchmark, include_clean: bool = True,
             method: str = "grid") -> tuple[list[float], list[float], list[float]]:
    """The curve (ε, mean R̂, its error) of measured points: runs at one ε averaged, the error combining their
    sampling errors and the run-to-run spread (:mod:`.spread`); with ``include_clean`` the benchmark's own point
    (0, R̂(θ̂(0), 0)) first, itself one clean run."""
    per_eps: dict[float, list[tuple[float, float]]] = {}
    for p in points:
        if p.get("loss") is not None:
            per_eps.setdefault(float(p["eps"]), []).append((float(p["loss"]), float(p.get("stderr") or 0.0)))
    if include_clean and benchmark.clean_train_loss is not None and 0.0 not in per_eps:
        per_eps[0.0] = [(float(benchmark.clean_train_loss), 0.0)]
    xs = sorted(per_eps)
    ys, errors = point_errors([per_eps[e] for e in xs], method)
    return xs, ys, errors


def fill_crossing(est: EpsStarEstimate, benchmark: CleanBenchmark, *, include_clean: bool = True,
                  extrapolate: bool = False, draws: int = 2000, seed: int = 0) -> None:
    """ε* of ``est.points``: the largest ε where the piecewise-linear curve (:func:`curve_of`) is at or below R*(0)
    (:func:`interpolate_crossing`), its bracket, its band
    (R*(0) drawn from the benchmark's bootstrap, every point from its error, the crossings' quantiles at
    ``est.level``), each run's own crossing and what the reader should know, all written into ``est``.

    ``extrapolate``: a curve that stays below R*(0) is extrapolated from its last two points (said in a warning)
    instead of left without a value.
    """
    r_star = benchmark.clean_test_loss
    xs, ys, ses = curve_of(est.points, benchmark, include_clean, est.method)
    if not any(e > 0 for e in xs):
        est.warnings.append("no usable point at eps > 0 (every run failed?): no curve to cross R*(0)")
        return
    est.value, est.bracket = interpolate_crossing(xs, ys, r_star)
    if est.value is None and extrapolate and ys and ys[-1] <= r_star:
        est.value = extrapolate_crossing(xs, ys, r_star)
        if est.value is not None:
            est.bracket, est.extrapolated = (xs[-1], None), True
            est.warnings.append(f"extrapolated: R-hat is still below R*(0) at the largest eps {format_eps(xs[-1])}; "
                                f"the line through the last two points reaches it at {format_eps(est.value)}")
    _say_earlier_crossings(est, xs, ys, r_star)
    adversarial = sorted({e for e in xs if e > 0})
    if est.value is not None and est.bracket[0] == 0.0 and len(adversarial) < 2:
        est.warnings.append("eps* is interpolated between the clean point (eps 0) and a single adversarial run: the "
                            "straight line between them is a guess; add runs around eps*")
    rng = np.random.default_rng(seed)
    samples = np.column_stack([benchmark_draws(r_star_draws(benchmark, draws, rng), benchmark.test_loss_stderr, rng),
                               normal_draws(ys, ses, draws, rng)])
    crossing = extrapolated_crossing if extrapolate else censored_crossing
    est.interval = propagate(lambda row: crossing(xs, list(row[1:]), row[0]), samples, level=est.level)
    if not extrapolate and est.interval is not None and est.value is not None and est.interval[1] >= xs[-1]:
        est.warnings.append(f"the band reaches the largest eps {format_eps(xs[-1])}: eps* may lie beyond it; "
                            "add a larger eps to bound it")
    _judge_determination(est)
    est.per_run = _per_run_crossings(est.points, xs, ys, r_star)
    if len(est.per_run) > 1:
        est.spread = float(np.std(est.per_run, ddof=1))
    if est.value is None and ys:
        est.bracket, warning = _unbracketed(xs, ys, r_star)
        est.warnings.append(warning)
    if est.value is not None and est.interval is None:
        est.warnings.append("the band is undefined: in most draws the loss curve does not cross R*(0) inside the grid")


def _say_earlier_crossings(est: EpsStarEstimate, xs: list[float], ys: list[float], r_star: float) -> None:
    """A warning when R̂ is above R*(0) at a smaller ε than the crossing taken and falls back below it (θ̂ stopped
    in another phase of training there, or noise): ε* is the supremum, and the band carries the ambiguity."""
    if est.value is None or est.bracket is None or est.bracket[0] is None:
        return
    earlier = [(e, v) for e, v in zip(xs, ys, strict=True) if e < est.bracket[0] and v > r_star]
    if earlier:
        e, v = earlier[0]
        est.warnings.append(f"R-hat is above R*(0) already at eps {format_eps(e)} ({v:.4f} > {r_star:.4f}) and falls "
                            f"back below it: eps* is the largest eps where R-hat <= R*(0) (the definition's "
                            "supremum); the points between are training noise or another phase of training, and "
                            "the band holds them")


def _judge_determination(est: EpsStarEstimate) -> None:
    """Mark an estimate whose band spans more than ``POORLY_DETERMINED`` (or cannot be drawn) as poorly determined,
    with the sentence that says why."""
    if est.value is None:
        return
    if est.interval is None:
        span = "cannot be drawn"
    elif est.interval[0] <= 0:
        span = "reaches 0"
    elif est.interval[1] / est.interval[0] > POORLY_DETERMINED:
        span = f"spans a factor {est.interval[1] / est.interval[0]:.1f}"
    else:
        return
    est.poorly_determined = True
    est.warnings.append(f"poorly determined: R-hat(eps) is flat near R*(0) for its noise, so the band {span}; "
                        f"eps* = {format_eps(est.value)} is one reading of that curve (more runs per eps narrow it)")


def _per_run_crossings(points: list[dict[str, Any]], xs: list[float], ys: list[float], r_star: float) -> list[float]:
    """Each run's own crossing (with the shared clean point at ε = 0), when there are several runs."""
    runs = sorted({p["run"] for p in points})
    out = []
    for run in runs if len(runs) > 1 else []:
        pts = sorted((p["eps"], p["loss"]) for p in points if p["run"] == run and p.get("loss") is not None)
        clean = [(xs[0], ys[0])] if xs and xs[0] == 0.0 else []
        value, _ = interpolate_crossing(*map(list, zip(*(clean + pts), strict=True)), r_star) if pts else (None, None)
        if value is not None:
            out.append(value)
    return out


def _unbracketed(xs: list[float], ys: list[float], r_star: float) -> tuple[tuple, str]:
    """Where ε* lies when the curve does not cross R*(0) inside the grid, and the warning that says so."""
    if all(v > r_star for v in ys) and xs[0] == 0.0:
        return (None, 0.0), (f"even the clean model's own training loss ({ys[0]:.4f}, eps = 0) is above R*(0) = "
                             f"{r_star:.4f}: the benchmark's clean model is not fitted (Delta <= 0), so nothing can "
                             "be measured against it; record the benchmark with more epochs")
    if all(v > r_star for v in ys):
        return (None, xs[0]), (f"the grid does not bracket the crossing: every loss is above R*(0) = {r_star:.4f}, "
                               f"so eps* < {format_eps(xs[0])}; add smaller eps")
    return (xs[-1], None), (f"the grid does not bracket the crossing: the loss at the largest eps is at or below "
                            f"R*(0) = {r_star:.4f}, so eps* > {format_eps(xs[-1])}; add larger eps")


def bracket_crossing(ladder: Sequence[float], measure: Callable[[float], float | None], target: float, *,
                     growth: float = GROWTH, max_points: int = 6, below: bool = True) -> dict[float, float | None]:
    """Adaptive strengths (the fine-tune's ladder, the grid's extension): measure ``ladder``, then extend it
    geometrically (× ``growth`` beyond the largest while its value is at or below ``target``, ÷ ``growth`` below
    the smallest while every value is above it) until the crossing is bracketed; stops at
    ``max_points`` or at a point where ``measure`` returns ``None`` (every run failed). ``below=False``: never below
    the smallest (a curve that starts at the clean point, under R*(0), is bracketed from below already). Returns
    ε → value, in the order measured.

    Example:
        >>> sorted(bracket_crossing([1.0], lambda e: 0.1 * e, 0.25, growth=2.0).items())
        [(1.0, 0.1), (2.0, 0.2), (4.0, 0.4)]
    """
    measured = {e: measure(e) for e in ladder}
    while len(measured) < max_points:
        losses = [v for v in measured.values() if v is not None]
        if any(v is None for v in measured.values()) or not losses:
            break
        top = measured[max(measured)]
        if top is not None and top <= target:  # ε* = sup{ε : R̂ <= R*(0)} lies beyond the largest
            nxt = max(measured) * growth
        elif below and all(v > target for v in losses):
            nxt = min(measured) / growth
        else:
            break
        measured[nxt] = measure(nxt)
    return measured
