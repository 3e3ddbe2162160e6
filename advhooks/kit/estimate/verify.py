"""The check of an ε* estimate: one monitored adversarial run from scratch at the estimate, whose verdict should be
``near eps*`` (the cost of one grid run)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from ...attacks.domain import Normalization
from ...benchmark import CleanBenchmark, Recipe
from ...monitor.report import ABOVE, CLEAN_LIKE, DIVERGED, FAR_ABOVE, NEAR, NO_VERDICT, NOT_LEARNING
from ...schedules import format_eps
from ..training import PassCounter
from .grid import monitored_run, record_health
from .result import EpsStarEstimate

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


def verify_estimate(est: EpsStarEstimate, model_factory: Callable[[], nn.Module], train_set: Dataset,
                    test_set: Dataset, benchmark: CleanBenchmark, *, recipe: Recipe | None = None,
                    attack: str = "pgd", norm: str = "linf", steps: int = 10, seed: int = 0,
                    normalization: Normalization = None, train_subset: int | None = 512,
                    train_eval_set: Dataset | None = None, device: torch.device | str = "cpu",
                    progress: Callable[[str], None] | None = None) -> EpsStarEstimate:
    """Train once from scratch at ``est.value`` with the benchmark's recipe under a PhaseMonitor (exactly a grid
    point) and write its verdict into ``est.verification``: ``{"eps", "regime", "ratio", "ratio_interval",
    "rhat", "early_stopped_epoch", "confirms", "health", "meaning", "seconds"}``. ``near eps*`` (ρ's band contains 1)
    from a healthy run (``health`` ``None``: :func:`~advhooks.kit.estimate.grid.record_health`) confirms the estimate;
    ``clean-like`` says ε* lies above it, ``above eps*`` below it (then a warning says so).
    An estimate without a value is left as it is. Returns ``est``.
    """
    if est.value is None or est.value <= 0:
        est.warnings.append("no estimate to verify")
        return est
    started, counter = time.perf_counter(), PassCounter()
    recipe = recipe or Recipe.from_record(benchmark.training)
    monitor, history = monitored_run(model_factory, train_set, test_set, benchmark, est.value, run=0, seed=seed,
                                     recipe=recipe, attack=attack, norm=norm, steps=steps,
                                     normalization=normalization, train_subset=train_subset,
                                     train_eval_set=train_eval_set, device=torch.device(device), counter=counter,
                                     progress=progress)
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
