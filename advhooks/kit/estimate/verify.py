"""The check of an ε* estimate: one monitored adversarial run from scratch at the estimate, whose verdict should be
``near eps*`` (the cost of one grid run)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from ...benchmark import CleanBenchmark
from ...monitor.report import ABOVE, CLEAN_LIKE, DIVERGED, FAR_ABOVE, NEAR, NO_VERDICT, NOT_LEARNING
from ...schedules import format_eps
from ..training import PassCounter
from .grid import monitored_run, record_health
from .result import EpsStarEstimate
from .settings import EstimationData, GridSettings

SAYS_NOTHING = "it says nothing about the estimate"
# What each verdict of the run at the estimate says about the estimate.
MEANING = {
    NEAR: "confirms the estimate",
    CLEAN_LIKE: "eps* lies above the estimate (the run at it still trains like clean training)",
    ABOVE: "eps* lies below the estimate (the run at it is already above eps*)",
    FAR_ABOVE: "eps* lies well below the estimate",
    NO_VERDICT: f"the run at it has no finite R-hat: {SAYS_NOTHING}",
    DIVERGED: f"the run at it diverged (NaN/inf loss): {SAYS_NOTHING}",
    NOT_LEARNING: f"the run at it did not learn (R-hat and the clean loss at chance level): {SAYS_NOTHING}",
}


def verify_estimate(est: EpsStarEstimate, model_factory: Callable[[], nn.Module], data: EstimationData,
                    benchmark: CleanBenchmark, settings: GridSettings | None = None, *,
                    device: torch.device | str = "cpu",
                    progress: Callable[[str], None] | None = None) -> EpsStarEstimate:
    """Train once from scratch at ``est.value`` under a PhaseMonitor, exactly a grid point with ``settings`` (its
    recipe, default the benchmark's), and write its verdict into ``est.verification``: ``{"eps", "regime", "ratio",
    "ratio_interval", "rhat", "early_stopped_epoch", "confirms", "health", "meaning", "seconds"}``. ``near eps*``
    (ρ's band contains 1) from a healthy run (``health`` ``None``: :func:`~advhooks.kit.estimate.grid.record_health`)
    confirms the estimate; ``clean-like`` says ε* lies above it, ``above eps*`` below it (then a warning says so).
    An estimate without a value is left as it is. Returns ``est``.
    """
    if est.value is None or est.value <= 0:
        est.warnings.append("no estimate to verify")
        return est
    data.needing_test_set("the check of an estimate")
    started, counter = time.perf_counter(), PassCounter()
    monitor, history = monitored_run(model_factory, data, benchmark, est.value, settings or GridSettings(), run=0,
                                     device=torch.device(device), counter=counter, progress=progress)
    report, record = history[-1]["report"], monitor.record()
    rhat = record["rhat"] or {}
    # The run is judged as the estimators judge a run record (a NaN epoch anywhere, not only the last, sets it apart).
    health = record_health(record, monitor.level)
    meaning = MEANING.get(report.regime, "") if health is None else f"the run at it is {health}: {SAYS_NOTHING}"
    confirms = report.regime == NEAR and health is None
    est.verification = {
        "eps": est.value, "regime": report.regime, "ratio": report.ratio, "ratio_interval": list(report.ratio_interval),
        "rhat": rhat.get("mean"), "early_stopped_epoch": rhat.get("epoch"), "confirms": confirms, "health": health,
        "meaning": meaning, "seconds": time.perf_counter() - started}
    if not confirms:
        est.warnings.append(f"the run from scratch at the estimate {format_eps(est.value)} reads {report.regime} "
                            f"(rho {report.ratio:.3f}): {meaning}")
    return est
