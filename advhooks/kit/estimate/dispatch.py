""":func:`estimate_eps_star`: one entry point that picks the estimator (what ``advhooks estimate-eps-star`` runs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ...benchmark import CleanBenchmark
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
from .settings import SETTINGS, EstimationData, FinetuneSettings, GridSettings, Measurement, check_settings
from .verify import verify_estimate

METHODS = tuple(SETTINGS)


def estimate_eps_star(method: str, benchmark: CleanBenchmark, model_factory: Callable[[], nn.Module] | None = None,
                      data: EstimationData | None = None, settings: Measurement | None = None, *,
                      eps: Sequence[float] | None = None, records: Sequence[Mapping[str, Any]] | None = None,
                      verify: bool = False, device: torch.device | str = "cpu",
                      progress: Callable[[str], None] | None = None) -> EpsStarEstimate:
    """ε* by any method, with its band: what ``advhooks estimate-eps-star`` runs, for Python callers.

    Args:
        method: ``"clean-probe"`` (no training), ``"finetune"`` (section 6), ``"grid"`` (section 5.2, training
            from scratch at each ε) or ``"records"`` (combine existing run ``records``).
        benchmark: the clean benchmark, loaded with its weights (:meth:`CleanBenchmark.load`).
        model_factory / data: the setting (:class:`~advhooks.kit.estimate.settings.EstimationData`). Not needed for
            ``"records"``.
        settings: the method's settings (``ProbeSettings``, ``FinetuneSettings``, ``GridSettings``; ``"records"``
            reads ``GridSettings``' ``level``, ``seed``, ``include_clean`` and ``draws``); default: the method's
            defaults. :func:`~advhooks.kit.estimate.settings.settings_for` builds them from the CLI's options.
        eps: the strengths (grid points, the fine-tune's first points, or the probe's ladder); default: chosen
            from the clean probe (fine-tune: starts at its lower bound and grows until R̂ crosses R*(0); grid:
            the bound × (1/2, 1, 3/2, 2, 3, 4)).
        records: run records (:meth:`PhaseMonitor.record`) for ``"records"``.
        verify: after a fine-tune, one monitored run from scratch at the estimate (one grid run's cost); its
            verdict is in ``verification`` (``near eps*`` confirms the estimate). Needs ``data.test_set``.
        device / progress: where to compute; called with a line of text as the work goes on.

    Example:
        >>> from advhooks.kit.estimate.settings import FinetuneSettings
        >>> FinetuneSettings(runs=3).attack.__name__  # the fine-tune trains with FGM unless told otherwise
        'FGM'
    """
    method = _check_request(method, records, model_factory, data, verify)
    s = check_settings(method, settings)
    if method == "records":
        return estimate_from_records(records, benchmark, include_clean=s.include_clean, level=s.level,
                                     draws=s.draws, seed=s.seed)
    grid = check_eps_grid(eps) if eps is not None else None
    # The clean probe is the method itself, or what picks the points when none are given.
    probe = None
    if method == "clean-probe" or grid is None:
        probe = estimate_clean_probe(benchmark.load_weights_into(model_factory()), data.train_eval, benchmark,
                                     grid or list(DEFAULT_LADDER), s.probe(), device=device, progress=progress)
    if method == "clean-probe":
        return probe
    if method == "finetune":
        grad_norm = probe.mean_grad_dual_norm if probe else mean_input_grad_dual_norm(
            benchmark.load_weights_into(model_factory()), data.train_eval, s.norm, device=device,
            normalization=s.normalization)
        result = estimate_finetune(model_factory, data, benchmark, grid or finetune_start(probe), s,
                                   mean_grad_dual_norm=grad_norm, device=device, progress=progress)
        if verify:
            verify_estimate(result, model_factory, data, benchmark, _check_of(s, benchmark), device=device,
                            progress=progress)
    else:
        result = estimate_grid(model_factory, data, benchmark, grid or default_grid_eps(probe), s, device=device,
                               progress=progress)
    result = _with_probe(result, probe)
    result.disagreement = disagreement(result)
    return result


def _check_of(settings: FinetuneSettings, benchmark: CleanBenchmark) -> GridSettings:
    """The check of a fine-tune estimate: a grid run (PGD training, the benchmark's epochs) with the fine-tune's
    measurement, recipe and seed."""
    return GridSettings(**settings.measurement(), recipe=settings.recipe_of(benchmark), seed=settings.seed)


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


def _check_request(method: str, records: Any, model_factory: Any, data: EstimationData | None, verify: bool) -> str:
    """The method, lower-cased, checked to have what it needs."""
    method = method.lower() if isinstance(method, str) else method
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if verify and method != "finetune":
        raise ValueError(f"verify checks a fine-tune estimate with one run from scratch; method {method!r} has none "
                         "to check (the grid's runs are from scratch already)")
    if method == "records":
        if not records:
            raise ValueError("method 'records' needs run records")
        return method
    if model_factory is None or data is None:
        raise ValueError(f"method {method!r} needs model_factory and data")
    if not isinstance(data, EstimationData):
        raise TypeError(f"data must be an EstimationData(train_set, test_set, train_eval_set), got "
                        f"{type(data).__name__}")
    if method == "grid" or verify:
        data.needing_test_set("the grid" if method == "grid" else "verify")
    return method
