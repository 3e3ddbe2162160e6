"""ε* from monitored adversarial runs from scratch (the paper's section 5.2): :func:`estimate_grid` trains them at
each ε of a grid, :func:`estimate_from_records` combines their run records where R̂(θ̂(ε), ε) crosses R*(0)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...benchmark import CleanBenchmark, benchmark_reference
from ...monitor import RUN_RECORD_SCHEMA, PhaseMonitor
from ...monitor.report import NOT_LEARNING, chance_level
from ...monitor.rhat import rhat_estimates
from ...schedules import format_eps
from ...uncertainty import DEFAULT_LEVEL
from ..training import PassCounter, train_adversarially
from .crossing import bracket_crossing, fill_crossing
from .result import EpsStarEstimate, check_eps_grid, with_cost
from .settings import EstimationData, GridSettings, attack_name

# The grid's own monitored runs report through their records, not as warnings to the person who asked for ε*:
# a logger of their own (not registered with logging, so importing this module configures nothing) that passes
# only errors on to the estimators' logger.
_RUN_LOG = logging.Logger(__name__ + ".runs", logging.ERROR)
_RUN_LOG.parent = logging.getLogger(__name__)


@contextmanager
def seeded_run(run: int, seed: int, make_model: Callable[[], nn.Module], train_set: Dataset, batch_size: int,
               device: torch.device, counter: PassCounter) -> Iterator[tuple[nn.Module, DataLoader]]:
    """One run of an estimator: ``(model, loader)``, the model made under the run's seed (``seed + 1000 · run``),
    the loader shuffled with it, and the model's forward passes counted while the caller uses it."""
    torch.manual_seed(seed + 1000 * run)
    model = make_model().to(device)
    handle = model.register_forward_hook(counter.hook)
    gen = torch.Generator().manual_seed(seed + 1000 * run)
    try:
        yield model, DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=gen)
    finally:
        handle.remove()


def monitored_run(model_factory: Callable[[], nn.Module], data: EstimationData, benchmark: CleanBenchmark, eps: float,
                  settings: GridSettings, *, run: int, device: torch.device, counter: PassCounter,
                  progress: Callable[[str], None] | None) -> tuple[PhaseMonitor, list[dict[str, Any]]]:
    """One adversarial run from scratch at ``eps`` with the settings' recipe under a
    :class:`~advhooks.monitor.PhaseMonitor` that keeps θ̂(ε) (smallest adversarial test loss) and evaluates R̂ at its
    weights: a grid point, or the check of an estimate. Returns the monitor (its record, its last report) and the
    epochs' history."""
    s, recipe = settings, settings.recipe_of(benchmark)
    with seeded_run(run, s.seed, model_factory, data.train_set, recipe.batch_size, device, counter) as (model, loader):
        atk = s.training_attack(eps)
        monitor = PhaseMonitor(benchmark, eps=eps, total_epochs=recipe.epochs, attack=s.evaluation_attack(eps),
                               logger=_RUN_LOG, recipe={**recipe.to_dict(), "run": run, "seed": s.seed + 1000 * run})
        monitor.evaluate_with(model, data.train_eval, data.test_set, train_subset=s.train_subset, seed=s.seed,
                              device=device)
        history = train_adversarially(model, loader, atk, eps, recipe, device=device, counter=counter,
                                      monitor=monitor, progress=progress)
        monitor.evaluate_rhat()  # a no-op after the last planned epoch; a run cut short evaluates θ̂'s R̂ here
    return monitor, history


def estimate_grid(model_factory: Callable[[], nn.Module], data: EstimationData, benchmark: CleanBenchmark,
                  eps: Sequence[float], settings: GridSettings | None = None, *, device: torch.device | str = "cpu",
                  progress: Callable[[str], None] | None = None) -> EpsStarEstimate:
    """ε* from adversarial training from scratch at each ε (the paper's section 5.2), with a band.

    Each run trains with the settings' recipe (default: the clean benchmark's,
    :meth:`~advhooks.benchmark.Recipe.from_record`: the same epochs, batch size, SGD settings and schedule, lr / 10
    at 1/2 and 3/4 of the epochs) under a :class:`~advhooks.monitor.PhaseMonitor` that evaluates the adversarial
    test loss each epoch, keeps θ̂(ε) (the epoch of the smallest one) and evaluates R̂(θ̂(ε), ε) at those fixed
    weights on a fixed training subset of ``train_subset`` samples. Each run is a run record (written to
    ``records_dir`` when given, with θ̂'s weights beside it), and :func:`estimate_from_records` combines them: the
    same path as ``estimate-eps-star --method records``.

    When the largest point's R̂ is still at or below R*(0), up to ``extend`` more strengths follow, × 1.5 beyond
    it, until one is above (as the fine-tune's ladder does); without ``include_clean``, also ÷ 1.5 below the
    smallest while every point is above R*(0).

    Args:
        model_factory: makes each run's network (under the run's seed).
        data: the training and test sets (and the set R̂ is evaluated on).
        benchmark: the clean benchmark.
        eps: the grid's strengths.
        settings: :class:`~advhooks.kit.estimate.settings.GridSettings` (default: its defaults).
        device / progress: where to train; called with a line of text as the work goes on.
    """
    s = settings or GridSettings()
    data.needing_test_set("the grid")
    grid = check_eps_grid(eps)
    device = torch.device(device)
    recipe = s.recipe_of(benchmark)
    start, counter = time.perf_counter(), PassCounter()
    records = []

    def measure(e: float) -> float | None:
        """Every run at ``e``; the mean R̂ of the healthy ones (``None``: none is)."""
        healthy = []
        for run in range(s.runs):
            monitor, _ = monitored_run(model_factory, data, benchmark, e, s, run=run, device=device, counter=counter,
                                       progress=progress)
            records.append(monitor.record())
            if record_health(records[-1], s.level) is None:
                healthy.append(records[-1]["rhat"]["mean"])
            if s.records_dir is not None:  # with θ̂'s weights beside it, for `advhooks connectivity --checkpoint`
                monitor.save_record(Path(s.records_dir) / f"eps{e * 255:.4g}-run{run}.json", weights=e > 0)
        return sum(healthy) / len(healthy) if healthy else None

    measured = bracket_crossing(grid, measure, benchmark.clean_test_loss, max_points=len(grid) + s.extend,
                                below=not s.include_clean)
    est = estimate_from_records(records, benchmark, include_clean=s.include_clean, level=s.level, draws=s.draws,
                                seed=s.seed)
    est.method = "grid"
    est.settings = dict(eps=grid, attack=attack_name(s.attack), steps=s.steps, epochs=recipe.epochs, lr=recipe.lr,
                        batch_size=recipe.batch_size, runs=s.runs, seed=s.seed, train_subset=s.train_subset,
                        extend=s.extend)
    if len(measured) > len(grid):
        added = ", ".join(format_eps(e) for e in list(measured)[len(grid):])
        est.warnings.append(f"the grid's points did not bracket the crossing: added eps {added}")
    return with_cost(est, counter, start, len(data.train_set))


def record_health(record: Mapping[str, Any], level: float) -> str | None:
    """Why a run record is not a healthy measurement of R̂(θ̂(ε), ε), or ``None``: no finite R̂, a NaN/inf epoch (the
    run diverged: θ̂ is the weights from before, not what the recipe trains), R̂ and the clean loss at θ̂ at chance
    level (not learning). The estimators and the check of an estimate (``--verify``) judge runs by it alike."""
    rhat = record.get("rhat")
    if not rhat or rhat.get("mean") is None or not math.isfinite(rhat["mean"]):
        return "no finite R-hat"
    if record.get("diverged_epoch") is not None:
        return f"diverged (NaN/inf loss from epoch {record['diverged_epoch']})"
    estimate, clean = rhat_estimates(rhat)
    chance = record.get("chance_loss")
    if chance and chance_level(estimate, clean, level, round(math.exp(chance))) is not None:
        return (f"{NOT_LEARNING} (R-hat {estimate.mean:.4f} and the clean loss {clean.mean:.4f} at the chance level "
                f"ln K = {chance:.4f})")
    return None


def _kept_despite(health: str, eps: float, healthy_eps: Sequence[float]) -> bool:
    """A run at chance level above every ε where runs learn (the benchmark's clean run at 0 among them) stays a point:
    its R̂ is measured, and says ε* lies below it. One at an ε where other runs learn is a collapse of that run, not
    an effect of ε, and is left out."""
    return health.startswith(NOT_LEARNING) and eps > max(healthy_eps)


def _check_records(records: Sequence[Mapping[str, Any]], benchmark: CleanBenchmark,
                   ignore: tuple[str, ...]) -> None:
    """Refuse records of another benchmark, of mixed norms or of mixed recipes (one clear error)."""
    if not records:
        raise ValueError("no run records to combine")
    ours = benchmark_reference(benchmark)
    norms, recipes = set(), set()
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping) or rec.get("schema") != RUN_RECORD_SCHEMA:
            raise ValueError(f"record {i} is not an advhooks run record (schema {RUN_RECORD_SCHEMA})")
        name = rec.get("source") or f"record {i}"
        theirs = rec.get("benchmark") or {}
        for key in ("clean_test_loss", "created", "model_hash", "test_labels_hash"):
            a, b = ours.get(key), theirs.get(key)
            if a is not None and b is not None and a != b:
                raise ValueError(f"{name} (eps {format_eps(float(rec.get('eps') or 0))}) was measured against another "
                                 f"benchmark: {key} {b!r} vs {a!r}")
        kind = (rec.get("rhat") or {}).get("kind", "fixed weights")
        if kind != "fixed weights":
            eps = format_eps(float(rec.get("eps") or 0))
            raise ValueError(f"{name} (eps {eps}) holds a {kind} R-hat, not R-hat at theta-hat's fixed weights: "
                             "record runs with monitor.evaluate_with(model, train_data, "
                             "test_data) and call monitor.evaluate_rhat() before save_record")
        norms.add(rec.get("norm"))
        recipe = {k: v for k, v in (rec.get("recipe") or {}).items() if k not in ignore}
        recipes.add(json.dumps(recipe, sort_keys=True, default=str))
    if len(norms) > 1:
        raise ValueError(f"the records mix norms {sorted(map(str, norms))}: combine one norm at a time")
    if len(recipes) > 1:
        raise ValueError("the records come from different recipes: " + " | ".join(sorted(recipes)))


def estimate_from_records(records: Sequence[Mapping[str, Any]], benchmark: CleanBenchmark, *,
                          include_clean: bool = True, level: float = DEFAULT_LEVEL, draws: int = 2000,
                          seed: int = 0, vary: tuple[str, ...] = ("run", "seed")) -> EpsStarEstimate:
    """ε* from any set of monitored runs (:meth:`PhaseMonitor.record`), with its band.

    Runs at the same ε are averaged; a point's standard error combines the runs' sampling errors and their
    spread. ε* is where the piecewise-linear R̂(θ̂(ε), ε) crosses R*(0) (with the benchmark's own point
    (0, R̂(θ̂(0), 0)) when ``include_clean``); the band draws R*(0) from the bootstrap of the benchmark's
    per-sample test losses and each point from its error, and takes the quantiles of the crossings.

    Args:
        vary: recipe fields that may differ between the records (the run index and seed).

    Raises:
        ValueError: records of another benchmark, of mixed norms or recipes, or not run records.
    """
    _check_records(records, benchmark, vary)
    norm = next((r.get("norm") for r in records if r.get("norm")), "linf")
    est = EpsStarEstimate("records", None, benchmark.clean_test_loss, norm, level=level)
    health = [record_health(rec, level) for rec in records]
    # The clean run at ε = 0 learned with this recipe: the benchmark.
    healthy_eps = [0.0] + [float(rec["eps"]) for rec, h in zip(records, health, strict=True) if h is None]
    for rec, state in zip(records, health, strict=True):
        run = (rec.get("recipe") or {}).get("run", 0)  # records without a run index are one set of runs
        where = f"the run at eps {format_eps(float(rec.get('eps') or 0))} (run {run})"
        if state is not None and not _kept_despite(state, float(rec.get("eps") or 0), healthy_eps):
            est.points.append({"eps": rec.get("eps"), "run": run, "loss": None, "failed": state})
            est.warnings.append(f"{where} is left out: {state}")
            continue
        if state is not None:
            est.warnings.append(f"{where} is {state}: kept as a point above every eps where runs learn")
        rhat = rec["rhat"]
        est.points.append({"eps": float(rec["eps"]), "run": run, "loss": float(rhat["mean"]),
                           "stderr": float(rhat.get("stderr") or 0.0), "epoch": rec.get("early_stopped_epoch"),
                           "kind": rhat.get("kind"), "rhat_seconds": (rec.get("evaluation_seconds") or {}).get("rhat"),
                           **({"state": state} if state else {})})
    fill_crossing(est, benchmark, include_clean=include_clean, draws=draws, seed=seed)
    return est


