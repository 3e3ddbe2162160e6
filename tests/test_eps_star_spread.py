"""The run-to-run spread in ε*'s bands, the "poorly determined" answer, the disagreement sentence, and the
study's band on the log scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advhooks.benchmark import CleanBenchmark
from advhooks.kit.estimate import EpsStarEstimate, spread
from advhooks.kit.estimate.agreement import disagreement
from advhooks.kit.estimate.crossing import POORLY_DETERMINED, fill_crossing
from advhooks.kit.study.summary import _combined_band

CLEAN = 0.03


def _benchmark(r_star: float, rng: np.random.Generator, n: int = 1000) -> CleanBenchmark:
    losses = torch.as_tensor(rng.exponential(r_star, n), dtype=torch.float64)
    mean = float(losses.mean())
    return CleanBenchmark(clean_test_loss=mean, clean_train_loss=CLEAN, generalization_gap=mean - CLEAN,
                          clean_test_accuracy=0.9, clean_train_accuracy=1.0,
                          test_loss_stderr=float(losses.std() / math.sqrt(n)), n_test=n, n_train=1000,
                          test_losses=losses)


def test_isotonic_fit_and_the_departure_it_shows():
    assert spread.isotonic([1.0, 2.0, 3.0]) == [1.0, 2.0, 3.0]
    assert spread.isotonic([3.0, 1.0, 2.0]) == [2.0, 2.0, 2.0]
    assert spread.monotone_departure([0.1, 0.2, 0.4]) == 0.0
    # one pair out of order by a factor r: |ln r| / sqrt(2), the sd of one of two runs that differ by ln r
    assert spread.monotone_departure([0.1, 0.2, 0.1, 0.3]) == pytest.approx(math.log(2) / math.sqrt(2))
    # a tie between separate blocks is not a pooled degree of freedom
    assert spread.monotone_departure([0.1, 0.1, 0.2, 0.1, 0.3]) == pytest.approx(math.log(2) / math.sqrt(2))


@pytest.mark.parametrize("method", ["grid", "finetune"])
def test_the_band_covers_a_known_crossing_under_run_to_run_noise(method):
    """Truth: R̂(ε) = 0.03 + 0.006 ε + 0.0004 ε² meets R*(0) = 0.1 at ε* ≈ 7.3. Every repetition is another
    set of runs: each point (one run per ε) off the curve by the relative run-to-run spread the method assumes,
    R*(0) off by another clean run's spread and its own test sample's; the 80 % band covers the true ε* in
    about 80 % of them, and is of real width."""
    rng = np.random.default_rng(5)
    true_r, grid = 0.1, [2.0, 4.0, 6.0, 8.0, 12.0]

    def curve(e):
        return CLEAN + 0.006 * e + 0.0004 * e * e

    truth = (-0.006 + math.sqrt(0.006 ** 2 + 4 * 0.0004 * (true_r - CLEAN))) / (2 * 0.0004)
    covered, widths, reps = 0, [], 200
    for rep in range(reps):
        # another clean run's R*(0): off by BENCHMARK_SPREAD test-set standard errors (1000 exponential losses)
        bench = _benchmark(true_r * (1 + spread.BENCHMARK_SPREAD / math.sqrt(1000) * rng.standard_normal()), rng)
        est = EpsStarEstimate(method, None, bench.clean_test_loss, "linf", level=0.8)
        run_sd = spread.RUN_SPREAD[method]
        est.points = [{"eps": e, "run": 0, "loss": curve(e) * (1 + run_sd * rng.standard_normal()), "stderr": 0.002}
                      for e in grid]
        fill_crossing(est, bench, draws=400, seed=rep)
        if est.value is None or est.interval is None:
            continue
        covered += est.interval[0] <= truth <= est.interval[1]
        widths.append(est.interval[1] / est.interval[0])
    assert 0.72 * reps <= covered <= 0.93 * reps, covered
    assert 1.1 < np.median(widths) < POORLY_DETERMINED


def test_a_flat_curve_is_poorly_determined_and_says_so():
    rng = np.random.default_rng(0)
    bench = _benchmark(0.1, rng)
    est = EpsStarEstimate("grid", None, bench.clean_test_loss, "linf")
    # R̂ creeps from 0.09 to 0.11 over a factor 8 of ε: the crossing moves far for a small change of R̂
    est.points = [{"eps": e, "run": 0, "loss": bench.clean_test_loss + 0.0025 * (e - 5.0), "stderr": 0.004}
                  for e in (1.0, 2.0, 4.0, 8.0)]
    fill_crossing(est, bench, include_clean=False, draws=400)
    assert est.value is not None and est.poorly_determined
    assert any(w.startswith("poorly determined") for w in est.warnings)
    assert "POORLY" in est.summary()
    steep = EpsStarEstimate("grid", None, bench.clean_test_loss, "linf")
    steep.points = [{"eps": e, "run": 0, "loss": bench.clean_test_loss * (e / 3.0) ** 2, "stderr": 0.002}
                    for e in (1.0, 2.0, 4.0, 8.0)]
    fill_crossing(steep, bench, include_clean=False, draws=400)
    assert steep.value == pytest.approx(3.0, rel=0.1) and not steep.poorly_determined


def _estimate(**kw) -> EpsStarEstimate:
    est = EpsStarEstimate("finetune", 10 / 255, 0.1, "linf", interval=(8 / 255, 12 / 255))
    for k, v in kw.items():
        setattr(est, k, v)
    return est


def _check(regime: str, health=None) -> dict:
    return {"eps": 10 / 255, "regime": regime, "health": health}


def test_the_disagreement_says_what_disagrees_and_where_the_evidence_points():
    assert disagreement(_estimate(first_order=11 / 255, lower_bound=4 / 255)) is None
    alone = disagreement(_estimate(first_order=20 / 255))
    assert "the first-order value 20/255" in alone and "lies above the band" in alone
    assert "it points to a larger eps* than the estimate (only the first-order value says so" in alone
    below = disagreement(_estimate(first_order=5 / 255))  # an overestimating figure below the band: no caveat
    assert below.endswith("it points to a smaller eps* than the estimate")
    # the run from scratch is a direct measurement: it outweighs the first-order value
    checked = disagreement(_estimate(first_order=20 / 255, verification=_check("above eps*")))
    assert "reads above eps* (rho's band excludes 1)" in checked
    assert checked.endswith("a smaller eps* than the estimate")
    split = disagreement(_estimate(lower_bound=14 / 255, verification=_check("above eps*")))
    assert "is split" in split
    # a check whose run diverged says nothing; near eps* agrees
    assert disagreement(_estimate(verification=_check("clean-like", health="diverged (NaN/inf loss)"))) is None
    assert disagreement(_estimate(verification=_check("near eps*"))) is None
    assert "DISAGREEMENT" in _estimate(disagreement=alone).summary()


def test_the_study_band_over_seeds_stays_positive():
    """Two seeds that disagree by 2.5x (the held-out set's 25.3 and 9.9 /255) give a wide band, never a negative
    one: the band is on the log scale around the geometric mean."""
    mean, band = _combined_band([25.3 / 255, 9.9 / 255], [(14.6 / 255, 29.0 / 255), (8.27 / 255, 11.1 / 255)], 0.8)
    assert mean == pytest.approx(math.sqrt(25.3 * 9.9) / 255)
    assert 0 < band[0] < 9.9 / 255 and band[1] > 25.3 / 255


def test_a_seed_whose_band_reaches_zero_widens_the_study_band_to_zero():
    """A poorly determined seed (band down to 0) is not dropped: the band over seeds reaches 0 too."""
    _, band = _combined_band([5 / 255, 6 / 255, 5.1 / 255], [(0.0, 20 / 255), (0.0, 20 / 255), (4.9 / 255, 5.3 / 255)],
                             0.8)
    assert band[0] == 0.0 and band[1] > 20 / 255 * 0.5


def test_eps_star_is_the_supremum_and_an_earlier_crossing_is_named():
    """R̂ above R*(0) at 2, back below at 3 (θ̂ stopped in another phase of training), above again at 4: ε* is
    the last crossing, between 3 and 4, and a warning names the earlier one."""
    rng = np.random.default_rng(1)
    bench = _benchmark(0.1, rng)
    r = bench.clean_test_loss
    est = EpsStarEstimate("grid", None, r, "linf")
    est.points = [{"eps": e, "run": 0, "loss": v, "stderr": 0.001}
                  for e, v in ((1.0, 0.8 * r), (2.0, 1.2 * r), (3.0, 0.9 * r), (4.0, 1.3 * r))]
    fill_crossing(est, bench, include_clean=False, draws=400)
    assert est.bracket == (3.0, 4.0) and est.value == pytest.approx(3.25)
    assert any(w.startswith("R-hat is above R*(0) already at eps") for w in est.warnings)


def test_the_ladder_grows_while_its_largest_point_is_below_and_only_downward_when_asked():
    from advhooks.kit.estimate.crossing import bracket_crossing

    dip = {1.0: 0.5, 2.0: 1.5, 4.0: 0.8, 8.0: 2.0}  # above at 2, below again at 4: eps* lies beyond 4
    assert list(bracket_crossing([1.0, 2.0, 4.0], dip.get, 1.0, growth=2.0)) == [1.0, 2.0, 4.0, 8.0]
    above = {1.0: 2.0, 0.5: 0.5}
    assert list(bracket_crossing([1.0], above.get, 1.0, growth=2.0)) == [1.0, 0.5]
    assert list(bracket_crossing([1.0], above.get, 1.0, growth=2.0, below=False)) == [1.0]  # the clean point brackets
