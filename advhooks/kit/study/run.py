"""Running a study: each unit of this shard is read back from its folder or run (a clean benchmark and its ε*
estimate, or the FGSM probe)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ...benchmark import write_json_atomic
from ..data import train_fraction
from ..estimate import EstimationData, settings_for
from ..training import record_clean_benchmark
from .fgsm import fgsm_threshold
from .settings import STUDY_SCHEMA, StudySettings, Unit
from .store import estimate_as_json, read_stored, unit_identity, unit_recipe
from .summary import compare, summarise


def run_unit(unit: Unit, settings: StudySettings, build: Callable[[int | None], nn.Module], data: tuple,
              device: torch.device | str, progress: Callable[[str], None] | None, setting: dict[str, Any],
              grid_records: Path | None = None) -> dict[str, Any]:
    """One unit of work: a clean benchmark and its ε* estimate(s), or the FGSM probe.

    ``data``: (training subset, its view without augmentation, test set). ``grid_records``: where the grid
    check writes its run records with their θ̂ weights, and its clean benchmark (what ``advhooks connectivity``
    pairs them with).
    """
    width, fraction = unit.width, unit.fraction
    subset, subset_eval, test_set = data
    started = time.perf_counter()
    out: dict[str, Any] = {"schema": STUDY_SCHEMA, "unit": unit.as_list(), "width": width, "fraction": fraction,
                           "n_train": len(subset), "settings": unit_recipe(settings, unit)}
    if unit.kind == "fgsm":
        out["fgsm"] = fgsm_threshold(lambda: build(width), subset, test_set, settings.fgsm_eps,
                                     epochs=settings.recipe.epochs, lr=settings.recipe.lr,
                                     batch_size=settings.recipe.batch_size,
                                     seed=settings.seeds[0], device=device, progress=progress)
    else:
        out["seed"] = seed = unit.seed
        torch.manual_seed(seed)
        bench = record_clean_benchmark(build(width), subset, test_set, recipe=settings.recipe,
                                       train_eval_set=subset_eval, device=device,
                                       seed=seed, training={**setting, "width": width, "train_fraction": fraction,
                                                            "split_seed": settings.split_seed})
        out["benchmark"] = {k: getattr(bench, k) for k in ("clean_test_loss", "test_loss_stderr", "clean_train_loss",
                                                            "generalization_gap", "clean_test_accuracy")}
        data = EstimationData(subset, test_set, subset_eval)
        given = dict(norm=settings.norm, seed=seed, level=settings.level)
        # (the estimators train with the benchmark's recipe, which is the study's)
        estimate = settings_for(settings.method, bench, {**given, "epochs": settings.finetune_epochs
                                                          if settings.method == "finetune" else None})
        out["estimate"] = estimate_as_json(settings.method, bench, lambda: build(width), data, estimate,
                                           device=device, progress=progress)
        if settings.grid_checked(unit):
            grid = settings_for("grid", bench, {**given, "records_dir": grid_records})
            out["grid"] = estimate_as_json("grid", bench, lambda: build(width), data, grid, device=device,
                                           progress=progress)
            if grid_records is not None:
                bench.save(grid_records / "clean.safetensors")
    out["seconds"] = time.perf_counter() - started
    return out


def run_study(settings: StudySettings, build: Callable[[int | None], nn.Module], train_set: Dataset,
              test_set: Dataset, *, train_eval_set: Dataset | None = None, units_dir: str | os.PathLike | None = None,
              shard: tuple[int, int] = (0, 1), setting: dict[str, Any] | None = None,
              device: torch.device | str = "cpu", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or read back from ``units_dir``) every unit of this shard and, when all are there, summarise.

    Args:
        settings: the study.
        build: ``build(width)`` → a freshly initialised model (``width`` ``None``: the default size).
        train_set / test_set / train_eval_set: the data (``train_eval_set``: without augmentation).
        units_dir: one JSON file per unit; existing files are read instead of run (when they were run with
            the same recipe, setting, model architecture and data: otherwise a ValueError).
        shard: ``(i, n)``: run only units ``i, i + n, i + 2n, ...``.
        setting: how the setting is named (``{"preset": ...}`` or the factories), stored with every unit and
            in the clean benchmarks.

    Returns:
        ``{"settings", "units", "rows", "comparisons", "seconds", "complete", "reused"}``; ``rows`` and
        ``comparisons`` only when every unit is available (``complete``); ``reused``: units read from the folder.
    """
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    started, setting = time.perf_counter(), setting or {}
    folder = Path(units_dir) if units_dir is not None else None
    units: dict[str, dict] = {}
    reused = 0
    for i, unit in enumerate(settings.units()):
        name = f"{unit.name}.json"
        data = (train_fraction(train_set, unit.fraction, settings.split_seed),
                train_fraction(train_eval_set or train_set, unit.fraction, settings.split_seed), test_set)
        identity = unit_identity(setting, build(unit.width), data[1], test_set)
        stored = read_stored(folder / name, unit, unit_recipe(settings, unit), identity) if folder is not None else None
        if stored is not None:
            units[name] = stored
            reused += 1
        elif i % count == index:
            if progress:
                progress(unit.name)
            grid_records = folder / f"grid-{unit.name.removeprefix('run-')}" if folder is not None else None
            units[name] = {**run_unit(unit, settings, build, data, device, progress, setting, grid_records),
                           "identity": identity}
            if folder is not None:
                write_json_atomic(folder / name, units[name])
    out: dict[str, Any] = {"settings": {**unit_recipe(settings, Unit("run", None, 1.0, settings.seeds[0])),
                                        "widths": list(settings.widths), "fractions": list(settings.fractions),
                                        "seeds": list(settings.seeds), "customary_eps": settings.customary_eps,
                                        "fgsm_eps": list(settings.fgsm_eps), "setting": setting},
                           "units": units, "complete": len(units) == len(settings.units()), "reused": reused}
    if out["complete"]:
        rows = summarise(settings, units)
        out["rows"] = [asdict(r) for r in rows]
        out["comparisons"] = compare(rows)
    out["seconds"] = time.perf_counter() - started
    return out


