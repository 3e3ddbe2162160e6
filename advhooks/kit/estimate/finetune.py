"""ε* by fine-tuning (the paper's section 6): short adversarial fine-tunes of θ̂(0) at a few ε, a least-squares
line through R̂ of the fine-tuned weights, solved for R*(0)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ...attacks.domain import Normalization
from ...benchmark import CleanBenchmark, Recipe
from ...evaluation import FixedSubset, evaluate_adversarial_loss
from ...schedules import format_eps
from ...uncertainty import DEFAULT_LEVEL, normal_draws, propagate, z_value
from ..training import PassCounter, train_adversarially
from .grid import _study_runs, r_star_draws
from .result import EpsStarEstimate, _cost, check_eps_grid, make_attack


def estimate_finetune(
    model_factory: Callable[[], nn.Module],
    train_set: Dataset,
    benchmark: CleanBenchmark,
    eps: Sequence[float],
    *,
    norm: str = "linf",
    attack: str = "pgd",
    steps: int = 10,
    epochs: int = 10,
    recipe: Recipe | None = None,
    runs: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    normalization: Normalization = None,
    mean_grad_dual_norm: float | None = None,
    train_subset: int | None = 512,
    train_eval_set: Dataset | None = None,
    level: float = DEFAULT_LEVEL,
    draws: int = 2000,
    progress: Callable[[str], None] | None = None,
) -> EpsStarEstimate:
    """ε* by adversarial fine-tuning from the clean weights and a fitted line (the paper's section 6), with a band.

    At each ε (small, around and below ε*: :func:`default_finetune_eps` picks them from the clean probe)
    the clean model is fine-tuned for ``epochs`` at the learning rate and batch size of ``recipe`` (default: the
    clean benchmark's, :meth:`~advhooks.benchmark.Recipe.from_record`), at a constant rate,
    then R̂(θ, ε) of the fine-tuned weights is evaluated like every R̂ in advhooks
    (:func:`~advhooks.evaluation.evaluate_adversarial_loss`, PGD-``steps``, on a fixed training subset).
    A least-squares line L(ε) = a + bε through those points is solved for R*(0). The points usually lie
    around ε*, so this mostly *interpolates*; when the crossing falls beyond the largest ε it extrapolates
    (the paper's section 6 extrapolates from small ε) and a warning says how far. Each of ``runs`` repeats
    uses another seed; the estimate is their mean. The band draws R*(0) from its bootstrap and every point
    from its sampling error, refits, and takes the quantiles.

    The training attack defaults to PGD (FGM, ``attack="fgm"``, is cheaper but read 12–16 % higher on the
    digits preset). Fewer epochs underestimate ε* (the model has not adapted and the loss still curves
    upward in ε); many more overestimate it (a long constant-rate fine-tune overfits past the early-stopped
    epoch of the grid's definition).
    """
    grid = check_eps_grid(eps)
    if len(grid) < 2:
        raise ValueError("the fine-tune estimate needs at least two eps to fit a line")
    if benchmark.state_dict is None:
        raise ValueError("the benchmark has no weights: load it with CleanBenchmark.load(path)")
    device = torch.device(device)
    recipe = recipe or Recipe.from_record(benchmark.training)
    lr, batch_size = recipe.lr, recipe.batch_size
    start, counter = time.perf_counter(), PassCounter()
    r_star = benchmark.clean_test_loss
    est = EpsStarEstimate("finetune", None, r_star, norm, level=level, settings=dict(
        eps=grid, attack=attack, steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, runs=runs, seed=seed,
        train_subset=train_subset))
    subset = None if train_subset is None else FixedSubset(train_subset, seed)
    clean_model = lambda: benchmark.load_weights_into(model_factory())  # noqa: E731 - each run starts clean
    for run, e, model, loader in _study_runs(grid, runs, seed, clean_model, train_set, batch_size, device, counter):
        train_adversarially(model, loader, make_attack(attack, e, norm, steps, normalization), e, epochs, lr,
                            decay=False, device=device, counter=counter, momentum=recipe.momentum, progress=progress)
        rhat, _ = evaluate_adversarial_loss(model, train_eval_set or train_set,
                                            make_attack("pgd", e, norm, steps, normalization), subset=subset,
                                            device=device)
        if not math.isfinite(rhat.mean):
            est.points.append({"eps": e, "run": run, "loss": None, "failed": "non-finite losses"})
            est.warnings.append(f"run {run} at eps {format_eps(e)} failed: non-finite losses")
            continue
        est.points.append({"eps": e, "run": run, "loss": rhat.mean, "stderr": rhat.stderr})
    points = [p for p in est.points if p.get("loss") is not None]
    fits = _fit_lines(points, [p["loss"] for p in points], runs, est.warnings)
    if fits:
        est.per_run = [(r_star - intercept) / slope for slope, intercept, _ in fits]
        slope, intercept, residual = (float(np.mean(v)) for v in zip(*fits, strict=True))
        est.fit = {"slope": slope, "intercept": intercept, "residual": residual}
        est.value = float(np.mean(est.per_run))
        if len(est.per_run) > 1:
            est.spread = float(np.std(est.per_run, ddof=1))
        est.interval = _finetune_band(est, points, runs, benchmark, draws, seed, level)
        est.warnings += _extrapolation_warnings(est.value, grid)
    if mean_grad_dual_norm:
        est.mean_grad_dual_norm = mean_grad_dual_norm
        if est.fit:
            est.consistency = est.fit["slope"] / mean_grad_dual_norm
    return _cost(est, counter, start, len(train_set))


def _fit_lines(points: list[dict[str, Any]], losses: Sequence[float], runs: int,
               warnings: list[str] | None = None) -> list[tuple[float, float, float]]:
    """Per run, the least-squares line (slope, intercept, RMS residual) through its (ε, loss) points.

    Runs with fewer than two points or a slope <= 0 have no line (said in ``warnings`` when given).
    """
    fits = []
    for run in range(runs):
        pts = [(p["eps"], v) for p, v in zip(points, losses, strict=True) if p["run"] == run]
        if len(pts) < 2:
            if warnings is not None:
                warnings.append(f"run {run}: fewer than two usable points, no line")
            continue
        xs, ys = np.array(pts).T
        slope, intercept = np.polyfit(xs, ys, 1)
        if slope <= 0:
            if warnings is not None:
                warnings.append(f"run {run}: the loss does not increase with eps (slope {slope:.4g}); no estimate")
            continue
        residual = float(np.sqrt(np.mean((np.polyval([slope, intercept], xs) - ys) ** 2)))
        fits.append((float(slope), float(intercept), residual))
    return fits


def _finetune_band(est: EpsStarEstimate, points: list[dict[str, Any]], runs: int, benchmark: CleanBenchmark,
                   draws: int, seed: int, level: float) -> tuple[float, float] | None:
    """R*(0) from its bootstrap and every point from its sampling error, refitted; the seeds' spread on top."""
    rng = np.random.default_rng(seed)
    samples = np.column_stack([r_star_draws(benchmark, draws, rng),
                               normal_draws([p["loss"] for p in points], [p["stderr"] for p in points], draws, rng)])

    def draw_estimate(row: np.ndarray) -> float | None:
        fits = _fit_lines(points, list(row[1:]), runs)
        return float(np.mean([(row[0] - b) / a for a, b, _ in fits])) if fits else None

    band = propagate(draw_estimate, samples, level=level)
    if band is not None and len(est.per_run) > 1:  # the spread over seeds enters the band too
        half = z_value(level) * est.spread / math.sqrt(len(est.per_run))
        band = (min(band[0], est.value - half), max(band[1], est.value + half))
    return band


def _extrapolation_warnings(value: float, grid: Sequence[float]) -> list[str]:
    if value > 2 * grid[-1]:
        return [f"the estimate {format_eps(value)} lies far beyond the largest eps {format_eps(grid[-1])}: a long "
                "extrapolation; fine-tune at larger eps to confirm"]
    if value > grid[-1]:
        return [f"extrapolated beyond the largest eps {format_eps(grid[-1])}"]
    if value < 0:
        return ["the fitted line is above R*(0) already at eps = 0: eps* is below the grid"]
    return []


