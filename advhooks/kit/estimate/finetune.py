"""ε* by fine-tuning (the paper's section 6): short adversarial fine-tunes of the clean weights θ̂(0) at strengths
that grow from the clean probe's bound until R̂ of the fine-tuned weights crosses R*(0), then the crossing."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ...benchmark import CleanBenchmark
from ...evaluation import FixedSubset, evaluate_adversarial_loss
from ...schedules import format_eps
from ..training import PassCounter, train_adversarially
from .crossing import bracket_crossing, fill_crossing
from .grid import seeded_run
from .result import EpsStarEstimate, check_eps_grid, with_cost
from .settings import EstimationData, FinetuneSettings, attack_name


def estimate_finetune(model_factory: Callable[[], nn.Module], data: EstimationData, benchmark: CleanBenchmark,
                      eps: Sequence[float], settings: FinetuneSettings | None = None, *,
                      mean_grad_dual_norm: float | None = None, device: torch.device | str = "cpu",
                      progress: Callable[[str], None] | None = None) -> EpsStarEstimate:
    """ε* by adversarial fine-tuning from the clean weights (the paper's section 6), with a band.

    At each strength the clean model is fine-tuned with ``settings.attack`` (default FGM, FGSM with a random start
    in L∞) for ``settings.epochs`` at the learning rate and batch size of ``settings.recipe`` (default: the clean
    benchmark's, :meth:`~advhooks.benchmark.Recipe.from_record`), then ``settings.cooldown`` epochs at a tenth of
    that rate, and R̂(θ, ε) of the fine-tuned weights is evaluated like every R̂ in advhooks
    (:func:`~advhooks.evaluation.evaluate_adversarial_loss`, PGD-``steps``, on a fixed training subset).
    The strengths start at ``eps`` (:func:`~advhooks.kit.estimate.estimate_eps_star` starts at the clean probe's
    bound) and grow by ``growth`` beyond the largest until one R̂ is above R*(0) (or shrink below the smallest
    until one is at or below it), at most ``max_points`` in all. ε* is where the piecewise-linear curve through
    the clean point (0, R̂(θ̂(0), 0)) and the points crosses R*(0), as for the grid; only when the ladder reaches
    ``max_points`` still below R*(0) is it extrapolated from the last two points, with a warning
    (``extrapolated``). Each of ``runs`` repeats uses another seed; runs at one ε are averaged. The band draws
    R*(0) from its bootstrap and every point from its error (sampling and the spread over runs).

    Why these defaults (measured against the grid on the digits, 3 widths × 2 data sizes × 3 seeds): at the
    clean run's rate R̂ of the last step jitters by ±20 % from epoch to epoch, and the one epoch at a tenth of
    it settles the weights (the grid's θ̂ sits just after its own first decay on the full data). So trained, the
    fine-tune read 0.78–1.17 × the grid on every configuration; PGD-10 at the full rate without the settling
    epoch read 0.69–1.09 after 10 epochs and 0.95–1.39 after 20 (longer fine-tunes fit the training set past
    the grid's early-stopped epoch, most on less data); at a tenth of the rate throughout the model hardly
    leaves the clean weights (0.68–0.92 after 10 epochs on widths 16 and 64). FGM and PGD-10 training gave
    the same R̂ at these small ε (within 1 % at a tenth of the rate), FGM at a fraction of the cost.

    Args:
        model_factory: makes the network the benchmark's weights are loaded into.
        data: the training set (and the set R̂ is evaluated on); no test set is needed.
        benchmark: the clean benchmark, loaded with its weights.
        eps: the ladder's first strengths.
        settings: :class:`~advhooks.kit.estimate.settings.FinetuneSettings` (default: its defaults).
        mean_grad_dual_norm: mean‖∇ₓℓ(θ̂(0))‖_*, when known: the fine-tune's slope is compared with it.
        device / progress: where to train; called with a line of text as the work goes on.
    """
    s = settings or FinetuneSettings()
    ladder = check_eps_grid(eps)
    if s.max_points < len(ladder):
        raise ValueError(f"max_points ({s.max_points}) must be at least the number of eps given ({len(ladder)})")
    if benchmark.state_dict is None:
        raise ValueError("the benchmark has no weights: load it with CleanBenchmark.load(path)")
    device = torch.device(device)
    recipe = s.recipe_of(benchmark)
    start, counter = time.perf_counter(), PassCounter()
    est = EpsStarEstimate("finetune", None, benchmark.clean_test_loss, s.norm, level=s.level, settings=dict(
        eps=ladder, growth=s.growth, max_points=s.max_points, attack=attack_name(s.attack), steps=s.steps,
        epochs=s.epochs, cooldown=s.cooldown, lr=recipe.lr, batch_size=recipe.batch_size, runs=s.runs, seed=s.seed,
        train_subset=s.train_subset))
    subset = None if s.train_subset is None else FixedSubset(s.train_subset, s.seed)
    # The fine-tune, then its cooldown at a tenth of the rate; no decay within either.
    phases = [recipe.with_given(epochs=length, lr=lr, schedule="constant")
              for length, lr in ((s.epochs, recipe.lr), (s.cooldown, recipe.lr / 10)) if length]
    clean_model = lambda: benchmark.load_weights_into(model_factory())  # noqa: E731 - each run starts clean

    def measure(e: float) -> float | None:
        """Fine-tune every run at ``e``; their mean R̂ (``None`` when every run failed)."""
        losses = []
        for run in range(s.runs):
            with seeded_run(run, s.seed, clean_model, data.train_set, recipe.batch_size, device, counter) as (
                    model, loader):
                atk = s.training_attack(e)
                for phase in phases:
                    train_adversarially(model, loader, atk, e, phase, device=device, counter=counter,
                                        progress=progress)
                rhat, _ = evaluate_adversarial_loss(model, data.train_eval, s.evaluation_attack(e), subset=subset,
                                                    device=device)
            if math.isfinite(rhat.mean):
                est.points.append({"eps": e, "run": run, "loss": rhat.mean, "stderr": rhat.stderr})
                losses.append(rhat.mean)
            else:
                est.points.append({"eps": e, "run": run, "loss": None, "failed": "non-finite losses"})
                est.warnings.append(f"run {run} at eps {format_eps(e)} failed: non-finite losses")
        return sum(losses) / len(losses) if losses else None

    bracket_crossing(ladder, measure, benchmark.clean_test_loss, growth=s.growth, max_points=s.max_points)
    fill_crossing(est, benchmark, extrapolate=True, draws=s.draws, seed=s.seed)
    if mean_grad_dual_norm:
        est.mean_grad_dual_norm = mean_grad_dual_norm
        slope = _initial_slope(est)
        est.consistency = slope / mean_grad_dual_norm if math.isfinite(slope) else None
    return with_cost(est, counter, start, len(data.train_set))


def _initial_slope(est: EpsStarEstimate) -> float:
    """d R̂ / dε at small ε: the secant between the fine-tune's two smallest strengths (mean over runs). Not from
    the clean point: fine-tuning also lowers the clean part of the loss (θ̂(0) is early-stopped on the test
    loss, not fitted to the training set), so R̂ at the first strength sits barely above R̂(θ̂(0), 0)."""
    means: dict[float, list[float]] = {}
    for p in est.points:
        if p.get("loss") is not None:
            means.setdefault(p["eps"], []).append(p["loss"])
    if len(means) < 2:
        return math.nan
    (e0, l0), (e1, l1) = sorted((e, sum(v) / len(v)) for e, v in means.items())[:2]
    return (l1 - l0) / (e1 - e0)
