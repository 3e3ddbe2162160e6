"""The fine-tune's adaptive strengths and its crossing, on synthetic R̂(ε) curves whose crossing is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advhooks.benchmark import CleanBenchmark
from advhooks.kit.estimate import EpsStarEstimate
from advhooks.kit.estimate.crossing import bracket_crossing, extrapolate_crossing, fill_crossing

CLEAN, R_STAR = 0.03, 0.08  # R̂(θ̂(0), 0) and the true R*(0)


def curve(e: float) -> float:
    """A convex R̂(ε), as measured on the digits (in units where ε* is about 10)."""
    return CLEAN + 0.003 * e + 0.0002 * e * e


TRUE_EPS_STAR = (-0.003 + math.sqrt(0.003 ** 2 + 4 * 0.0002 * (R_STAR - CLEAN))) / (2 * 0.0002)


def benchmark(test_losses: np.ndarray) -> CleanBenchmark:
    losses = torch.as_tensor(test_losses, dtype=torch.float64)
    mean = float(losses.mean())
    return CleanBenchmark(clean_test_loss=mean, clean_train_loss=CLEAN, generalization_gap=mean - CLEAN,
                          clean_test_accuracy=0.9, clean_train_accuracy=1.0,
                          test_loss_stderr=float(losses.std() / math.sqrt(losses.numel())), n_test=losses.numel(),
                          n_train=1000, test_losses=losses)


@pytest.mark.parametrize("start", [TRUE_EPS_STAR / 5, TRUE_EPS_STAR / 2, TRUE_EPS_STAR * 0.9, TRUE_EPS_STAR * 2.5])
def test_the_ladder_brackets_the_crossing(start):
    measured = bracket_crossing([start], curve, R_STAR, growth=1.5, max_points=6)
    below = [e for e, v in measured.items() if v <= R_STAR]
    above = [e for e, v in measured.items() if v > R_STAR]
    assert above and below, measured
    assert max(below) < TRUE_EPS_STAR < min(above)
    assert min(above) / max(below) == pytest.approx(1.5)  # a bracket one growth step wide
    assert len(measured) <= 5


def test_the_ladder_stops_at_its_cap_and_at_a_failed_point():
    flat = bracket_crossing([1.0], lambda e: CLEAN, R_STAR, growth=2.0, max_points=4)
    assert list(flat) == [1.0, 2.0, 4.0, 8.0]
    failed = bracket_crossing([1.0], lambda e: None if e > 1.5 else CLEAN, R_STAR, growth=2.0, max_points=6)
    assert list(failed) == [1.0, 2.0]


def test_a_ladder_at_its_cap_is_extrapolated_and_says_so():
    est = EpsStarEstimate("finetune", None, R_STAR, "linf")
    est.points = [{"eps": e, "run": 0, "loss": curve(e), "stderr": 0.0} for e in (1.0, 2.0, 3.0)]
    fill_crossing(est, benchmark(np.full(400, R_STAR)), extrapolate=True, draws=200)
    expected = extrapolate_crossing([0.0, 1.0, 2.0, 3.0], [CLEAN] + [curve(e) for e in (1.0, 2.0, 3.0)], R_STAR)
    assert est.value == pytest.approx(expected) and est.bracket == (3.0, None) and est.extrapolated
    assert any(w.startswith("extrapolated") for w in est.warnings)


def test_the_band_covers_the_true_crossing_at_about_its_level():
    """R*(0) from 400 noisy test losses and each R̂ with its sampling error: the 80 % band of the crossing of the
    adaptive ladder covers the true ε* in about 80 % of 150 repetitions (the piecewise-linear interpolation of a
    convex curve one growth step wide is biased by far less than the band's width)."""
    rng = np.random.default_rng(0)
    se, covered, widths = 0.004, 0, []
    for _ in range(150):
        bench = benchmark(rng.exponential(R_STAR, 400))
        est = EpsStarEstimate("finetune", None, bench.clean_test_loss, "linf", level=0.8)

        def measure(e, est=est):
            loss = curve(e) + rng.normal(0, se)
            est.points.append({"eps": e, "run": 0, "loss": loss, "stderr": se})
            return loss

        bracket_crossing([TRUE_EPS_STAR / 2.2], measure, bench.clean_test_loss, growth=1.5, max_points=6)
        fill_crossing(est, bench, extrapolate=True, draws=400, seed=int(rng.integers(1 << 30)))
        assert est.value is not None and est.interval is not None and not est.extrapolated
        covered += est.interval[0] <= TRUE_EPS_STAR <= est.interval[1]
        widths.append((est.interval[1] - est.interval[0]) / TRUE_EPS_STAR)
    assert 0.70 <= covered / 150 <= 0.92, covered
    assert 0.1 < np.median(widths) < 1.0  # a band of real width, not one that covers by being huge
