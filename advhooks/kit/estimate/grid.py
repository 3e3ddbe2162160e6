"""ε* from monitored adversarial runs from scratch (the paper's section 5.2): :func:`estimate_grid` trains them at
each ε of a grid, :func:`estimate_from_records` combines their run records where R̂(θ̂(ε), ε) crosses R*(0)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...attacks.domain import Normalization
from ...benchmark import CleanBenchmark, Recipe, benchmark_reference
from ...monitor import RUN_RECORD_SCHEMA, PhaseMonitor
from ...schedules import format_eps
from ...uncertainty import DEFAULT_LEVEL, bootstrap_means, normal_draws, propagate
from ..training import PassCounter, train_adversarially
from .result import (
    _RUN_LOG,
    EpsStarEstimate,
    _cost,
    censored_crossing,
    check_eps_grid,
    interpolate_crossing,
    make_attack,
)


def _study_runs(grid: list[float], runs: int, seed: int, make_model: Callable[[], nn.Module], train_set: Dataset,
                batch_size: int, device: torch.device, counter: PassCounter) -> Iterator[tuple]:
    """Each ``(run, ε, model, loader)`` of a study: a model made under the run's seed, a loader shuffled with
    it, and the model's forward passes counted while the caller uses it."""
    for run in range(runs):
        for e in grid:
            torch.manual_seed(seed + 1000 * run)
            model = make_model().to(device)
            handle = model.register_forward_hook(counter.hook)
            gen = torch.Generator().manual_seed(seed + 1000 * run)
            try:
                yield run, e, model, DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=gen)
            finally:
                handle.remove()


def estimate_grid(
    model_factory: Callable[[], nn.Module],
    train_set: Dataset,
    test_set: Dataset,
    benchmark: CleanBenchmark,
    eps: Sequence[float],
    *,
    norm: str = "linf",
    attack: str = "pgd",
    steps: int = 10,
    recipe: Recipe | None = None,
    runs: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    normalization: Normalization = None,
    include_clean: bool = True,
    train_subset: int | None = 512,
    train_eval_set: Dataset | None = None,
    level: float = DEFAULT_LEVEL,
    records_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> EpsStarEstimate:
    """ε* from adversarial training from scratch at each ε (the paper's section 5.2), with a band.

    Each run trains with ``recipe`` (default: the clean benchmark's, :meth:`~advhooks.benchmark.Recipe.from_record`:
    the same epochs, batch size, SGD settings and schedule, lr / 10 at 1/2 and 3/4 of the epochs) under a
    :class:`~advhooks.monitor.PhaseMonitor` that evaluates the adversarial test loss each epoch, keeps θ̂(ε)
    (the epoch of the smallest one) and evaluates R̂(θ̂(ε), ε) at those fixed weights on a fixed training
    subset of ``train_subset`` samples. Each run is a run record (written to ``records_dir`` when given, with
    θ̂'s weights beside it), and :func:`estimate_from_records` combines them: the same path as
    ``estimate-eps-star --method records``.

    Args:
        train_eval_set: the training set without augmentation, for R̂ (default ``train_set``).
        level: the band's coverage.
        Others: as their names say; ``include_clean`` adds the benchmark's own point (0, R̂(θ̂(0), 0)).
    """
    grid = check_eps_grid(eps)
    device = torch.device(device)
    recipe = recipe or Recipe.from_record(benchmark.training)
    start, counter = time.perf_counter(), PassCounter()
    records = []
    for run, e, model, train_loader in _study_runs(grid, runs, seed, model_factory, train_set, recipe.batch_size,
                                                   device, counter):
        atk = make_attack(attack if e > 0 else "pgd", e, norm, steps, normalization)
        eval_attack = make_attack("pgd", e, norm, steps, normalization)
        monitor = PhaseMonitor(benchmark, eps=e, total_epochs=recipe.epochs, attack=eval_attack, logger=_RUN_LOG,
                               recipe={**recipe.to_dict(), "run": run, "seed": seed + 1000 * run})
        monitor.evaluate_with(model, train_eval_set or train_set, test_set, train_subset=train_subset, seed=seed,
                              device=device)
        train_adversarially(model, train_loader, atk, e, recipe.epochs, recipe.lr, decay=True, device=device,
                            counter=counter, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                            monitor=monitor, progress=progress)
        monitor.evaluate_rhat()  # a no-op after the last planned epoch; a run cut short evaluates θ̂'s R̂ here
        records.append(monitor.record())
        if records_dir is not None:  # with θ̂'s weights beside it, for `advhooks connectivity --checkpoint`
            monitor.save_record(Path(records_dir) / f"eps{e * 255:.4g}-run{run}.json", weights=e > 0)
    est = estimate_from_records(records, benchmark, include_clean=include_clean, level=level, seed=seed)
    est.method = "grid"
    est.settings = dict(eps=grid, attack=attack, steps=steps, epochs=recipe.epochs, lr=recipe.lr,
                        batch_size=recipe.batch_size, runs=runs, seed=seed, train_subset=train_subset)
    return _cost(est, counter, start, len(train_set))


def _record_point(record: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """(ε, R̂ of θ̂, its s.e.) from a run record, or ``None`` when the run has no finite R̂."""
    rhat = record.get("rhat")
    if not rhat or rhat.get("mean") is None or not math.isfinite(rhat["mean"]):
        return None
    return float(record["eps"]), float(rhat["mean"]), float(rhat.get("stderr") or 0.0)


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
        norms.add(rec.get("norm"))
        recipe = {k: v for k, v in (rec.get("recipe") or {}).items() if k not in ignore}
        recipes.add(json.dumps(recipe, sort_keys=True, default=str))
    if len(norms) > 1:
        raise ValueError(f"the records mix norms {sorted(map(str, norms))}: combine one norm at a time")
    if len(recipes) > 1:
        raise ValueError("the records come from different recipes: " + " | ".join(sorted(recipes)))


def r_star_draws(benchmark: CleanBenchmark, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Draws of R*(0): the bootstrap of the stored per-sample test losses, else normal with its s.e."""
    if benchmark.test_losses is not None and benchmark.test_losses.numel() > 1:
        return bootstrap_means(benchmark.test_losses.double().numpy(), draws, rng)
    return normal_draws([benchmark.clean_test_loss], [benchmark.test_loss_stderr], draws, rng)[:, 0]


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
    r_star = benchmark.clean_test_loss
    norm = next((r.get("norm") for r in records if r.get("norm")), "linf")
    est = EpsStarEstimate("records", None, r_star, norm, level=level)
    per_eps: dict[float, list[tuple[float, float]]] = {}
    for rec in records:
        point = _record_point(rec)
        run = (rec.get("recipe") or {}).get("run", 0)  # records without a run index are one set of runs
        if point is None:
            est.points.append({"eps": rec.get("eps"), "run": run, "loss": None, "failed": "no finite R-hat"})
            est.warnings.append(f"the run at eps {format_eps(float(rec.get('eps') or 0))} has no finite R-hat")
            continue
        e, loss, se = point
        est.points.append({"eps": e, "run": run, "loss": loss, "stderr": se, "epoch": rec.get("early_stopped_epoch"),
                           "kind": rec["rhat"].get("kind"),
                           "rhat_seconds": (rec.get("evaluation_seconds") or {}).get("rhat")})
        per_eps.setdefault(e, []).append((loss, se))
    xs, ys, ses = [], [], []
    if include_clean and benchmark.clean_train_loss is not None and 0.0 not in per_eps:
        xs, ys, ses = [0.0], [benchmark.clean_train_loss], [0.0]
    for e in sorted(per_eps):
        values = np.array([v for v, _ in per_eps[e]])
        sampling = np.array([se for _, se in per_eps[e]])
        spread = values.var(ddof=1) if values.size > 1 else 0.0
        xs.append(e)
        ys.append(float(values.mean()))
        ses.append(float(math.sqrt((np.mean(sampling ** 2) + spread) / values.size)))
    est.value, est.bracket = interpolate_crossing(xs, ys, r_star)
    if est.value is not None and est.bracket[0] == 0.0 and len([e for e in per_eps if e > 0]) < 2:
        est.warnings.append("eps* is interpolated between the clean point (eps 0) and a single adversarial run: the "
                            "straight line between them is a guess; add runs around eps*")
    rng = np.random.default_rng(seed)
    samples = np.column_stack([r_star_draws(benchmark, draws, rng), normal_draws(ys, ses, draws, rng)])
    est.interval = propagate(lambda row: censored_crossing(xs, list(row[1:]), row[0]), samples, level=level)
    if est.interval is not None and est.value is not None and est.interval[1] >= xs[-1]:
        est.warnings.append(f"the band reaches the largest eps {format_eps(xs[-1])}: eps* may lie beyond it; "
                            "add a larger eps to bound it")
    est.per_run = _per_run_crossings(est.points, xs, ys, r_star)
    if len(est.per_run) > 1:
        est.spread = float(np.std(est.per_run, ddof=1))
    if est.value is None and ys:
        est.bracket, warning = _unbracketed(xs, ys, r_star)
        est.warnings.append(warning)
    if est.value is not None and est.interval is None:
        est.warnings.append("the band is undefined: in most draws the loss curve does not cross R*(0) inside the grid")
    return est


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
    if all(v <= r_star for v in ys):
        return (xs[-1], None), (f"the grid does not bracket the crossing: every loss is at or below R*(0) = "
                                f"{r_star:.4f}, so eps* > {format_eps(xs[-1])}; add larger eps")
    return None, "the losses are not increasing in eps where they cross R*(0); no interpolation"


