""":func:`estimate_eps_star`: one entry point that picks the estimator (what ``advhooks estimate-eps-star`` runs)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ...attacks.domain import Normalization
from ...benchmark import CleanBenchmark, Recipe
from ...uncertainty import DEFAULT_LEVEL
from .agreement import disagreement
from .clean_probe import (
    DEFAULT_LADDER,
    default_grid_eps,
    estimate_clean_probe,
    finetune_start,
    mean_input_grad_dual_norm,
)
from .finetune import estimate_finetune
from .grid import estimate_from_records, estimate_grid
from .result import EpsStarEstimate, check_eps_grid
from .verify import verify_estimate

METHODS = ("grid", "finetune", "clean-probe", "records")


def estimate_eps_star(
    method: str,
    benchmark: CleanBenchmark,
    *,
    model_factory: Callable[[], nn.Module] | None = None,
    train_set: Dataset | None = None,
    test_set: Dataset | None = None,
    train_eval_set: Dataset | None = None,
    records: Sequence[Mapping[str, Any]] | None = None,
    eps: Sequence[float] | None = None,
    norm: str = "linf",
    attack: str | None = None,
    steps: int = 10,
    runs: int = 1,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    normalization: Normalization = None,
    level: float = DEFAULT_LEVEL,
    records_dir: str | os.PathLike | None = None,
    verify: bool = False,
    progress: Callable[[str], None] | None = None,
) -> EpsStarEstimate:
    """ε* by any method, with its band: what ``advhooks estimate-eps-star`` runs, for Python callers.

    Args:
        method: ``"clean-probe"`` (no training), ``"finetune"`` (section 6), ``"grid"`` (section 5.2, training
            from scratch at each ε) or ``"records"`` (combine existing run ``records``).
        benchmark: the clean benchmark, loaded with its weights (:meth:`CleanBenchmark.load`).
        model_factory / train_set / test_set / train_eval_set: the setting (``train_eval_set``: the training set
            without augmentation; default ``train_set``). Not needed for ``"records"``.
        records: run records (:meth:`PhaseMonitor.record`) for ``"records"``.
        eps: the strengths (grid points, the fine-tune's first points, or the probe's ladder); default: chosen
            from the clean probe (fine-tune: starts at its lower bound and grows until R̂ crosses R*(0); grid:
            the bound × (1/2, 1, 3/2, 2, 3, 4)).
        attack: ``"pgd"`` or ``"fgm"`` for training (default: the grid's PGD, the fine-tune's FGM; the clean probe
            and every R̂ are evaluated with PGD-``steps`` whatever it is).
        epochs: the fine-tune's length (default :data:`~advhooks.kit.estimate.finetune.EPOCHS`), or the grid
            runs' (default: the benchmark's).
        lr / batch_size: default: the benchmark's recipe (:meth:`~advhooks.benchmark.Recipe.from_record`).
        records_dir: the grid's run records, each with its θ̂ weights beside it (only the grid writes any).
        verify: after a fine-tune, one monitored run from scratch at the estimate (one grid run's cost); its
            verdict is in ``verification`` (``near eps*`` confirms the estimate). Needs ``test_set``.
        Others: as in :func:`estimate_grid` and :func:`estimate_finetune`.
    """
    method, attack = _check_request(method, attack, records, model_factory, train_set, test_set, verify)
    if method == "records":
        return estimate_from_records(records, benchmark, level=level, seed=seed)
    grid = check_eps_grid(eps) if eps is not None else None
    train_eval = train_eval_set or train_set
    common = dict(norm=norm, steps=steps, device=device, progress=progress, normalization=normalization)
    # The clean probe is the method itself, or what picks the points when none are given.
    probe = None
    if method == "clean-probe" or grid is None:
        probe = estimate_clean_probe(benchmark.load_weights_into(model_factory()), train_eval, benchmark,
                                     grid or list(DEFAULT_LADDER), **common)
    if method == "clean-probe":
        return probe
    recipe = Recipe.from_record(benchmark.training).with_given(lr=lr, batch_size=batch_size)
    shared = dict(runs=runs, seed=seed, train_eval_set=train_eval, level=level)
    if method == "finetune":
        grad_norm = probe.mean_grad_dual_norm if probe else mean_input_grad_dual_norm(
            benchmark.load_weights_into(model_factory()), train_eval, norm, device=device, normalization=normalization)
        given = {k: v for k, v in (("epochs", epochs), ("attack", attack)) if v}  # else the fine-tune's defaults
        result = estimate_finetune(model_factory, train_set, benchmark, grid or finetune_start(probe), recipe=recipe,
                                   mean_grad_dual_norm=grad_norm, **given, **shared, **common)
        if verify:
            verify_estimate(result, model_factory, train_set, test_set, benchmark, recipe=recipe, seed=seed,
                            train_eval_set=train_eval, **common)
    else:
        points = grid or default_grid_eps(probe)
        result = estimate_grid(model_factory, train_set, test_set, benchmark, points, attack=attack or "pgd",
                               recipe=recipe.with_given(epochs=epochs), records_dir=records_dir, **shared, **common)
    result = _with_probe(result, probe)
    result.disagreement = disagreement(result)
    return result


def _with_probe(result: EpsStarEstimate, probe: EpsStarEstimate | None) -> EpsStarEstimate:
    """``result`` with the clean probe's figures, warnings and cost (the estimate's cost is what the user waited
    for: the probe that chose its points included), when a probe chose its points."""
    if probe is not None:
        result.warnings += [f"clean probe: {w}" for w in probe.warnings]
        result.lower_bound, result.first_order = probe.lower_bound, probe.first_order
        result.mean_grad_dual_norm = result.mean_grad_dual_norm or probe.mean_grad_dual_norm
        result.seconds += probe.seconds
        result.forward_samples += probe.forward_samples
        result.backward_samples += probe.backward_samples
        result.train_set_passes += probe.train_set_passes
    return result


def _check_request(method: str, attack: str | None, records: Any, model_factory: Any, train_set: Any,
                   test_set: Any, verify: bool) -> tuple[str, str | None]:
    """The method and the training attack (``None``: the estimator's default), lower-cased, with what each method
    needs."""
    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if verify and method != "finetune":
        raise ValueError(f"verify checks a fine-tune estimate with one run from scratch; method {method!r} has none "
                         "to check (the grid's runs are from scratch already)")
    if verify and test_set is None:
        raise ValueError("verify needs test_set (the run from scratch keeps its epoch of smallest adversarial test "
                         "loss)")
    if method == "records":
        if not records:
            raise ValueError("method 'records' needs run records")
        return method, attack
    if model_factory is None or train_set is None:
        raise ValueError(f"method {method!r} needs model_factory and train_set")
    if method == "grid" and test_set is None:
        raise ValueError("method 'grid' needs test_set (the adversarial test loss selects each run's epoch)")
    attack = attack.lower() if attack else None
    if attack not in (None, "pgd", "fgm"):
        raise ValueError(f"attack must be 'pgd' or 'fgm', got {attack!r}")
    return method, attack
