"""ε* for free from the clean model: its adversarial training loss on a ladder of ε (a lower bound) and the
first-order estimate Δ / mean‖∇ₓℓ(θ̂(0))‖_* (envelope theorem)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..._outputs import logits_of
from ...attacks import dual_norm, eval_mode
from ...attacks.criteria import cross_entropy
from ...attacks.domain import InputDomain, Normalization
from ...benchmark import CleanBenchmark
from ...monitor import ladder_lower_bound
from ...schedules import format_eps
from ...uncertainty import propagate
from ..training import PassCounter, adversarial_loss
from .crossing import r_star_draws
from .result import EpsStarEstimate, check_eps_grid, with_cost
from .settings import ProbeSettings


def mean_input_grad_dual_norm(model: nn.Module, dataset: Dataset, norm: str = "linf", *, batch_size: int = 256,
                              device: torch.device | str = "cpu", normalization: Normalization = None) -> float:
    """Training-set mean of ‖∇ₓℓ‖_* (‖·‖₁ for L∞, ‖·‖₂ for L2) in eval mode: d/dε R̂ at ε = 0 to first order.

    One forward and input-gradient pass over ``dataset``; the model's mode is restored. With
    ``normalization=(mean, std)`` (normalised data) the gradient is taken in pixel units, where ε lives.
    """
    norms = []
    domain = InputDomain(None, normalization)
    with eval_mode(model):
        for x, y in DataLoader(dataset, batch_size=batch_size):
            x = x.to(device).requires_grad_(True)
            loss = cross_entropy(logits_of(model(x)), y.to(device)).sum()
            (g,) = torch.autograd.grad(loss, x)
            inv_std = domain.place(g).inv_std
            norms.append(dual_norm(g if inv_std is None else g * inv_std, norm).double().cpu())
    return float(torch.cat(norms).mean())


def estimate_clean_probe(model: nn.Module, train_set: Dataset, benchmark: CleanBenchmark, ladder: Sequence[float],
                         settings: ProbeSettings | None = None, *, device: torch.device | str = "cpu",
                         progress: Callable[[str], None] | None = None) -> EpsStarEstimate:
    """Free figures from the clean model θ̂(0): a lower bound on ε* and the first-order estimate.

    The clean model's adversarial training loss at each rung of ``ladder`` (PGD-``settings.steps``); the largest
    rung whose loss is ≤ R*(0) bounds ε* from below (up to the attack's approximation). The first-order estimate
    is Δ / mean‖∇ₓℓ‖_*, from the input gradients over the training set; it tends to overestimate because the
    loss curves upward in ε.

    Args:
        model: the clean model θ̂(0) (the benchmark's weights loaded).
        train_set: the training set without augmentation.
        benchmark: its clean benchmark.
        ladder: the strengths.
        settings: :class:`~advhooks.kit.estimate.settings.ProbeSettings` (default: its defaults).
        device / progress: where to compute; called with a line of text as the work goes on.
    """
    s = settings or ProbeSettings()
    grid = check_eps_grid(ladder, "ladder")
    if benchmark.generalization_gap is None:
        raise ValueError("the benchmark has no clean training loss (measure it with a train loader)")
    device = torch.device(device)
    start, counter = time.perf_counter(), PassCounter()
    r_star = benchmark.clean_test_loss
    est = EpsStarEstimate("clean-probe", None, r_star, s.norm, settings=dict(ladder=grid, attack="pgd", steps=s.steps))
    model = model.to(device)
    handle = model.register_forward_hook(counter.hook)
    loader = DataLoader(train_set, batch_size=s.batch_size)
    try:
        mean_norm = mean_input_grad_dual_norm(model, train_set, s.norm, batch_size=s.batch_size, device=device,
                                              normalization=s.normalization)
        counter.backward += len(train_set)
        est.mean_grad_dual_norm = mean_norm
        first_order = benchmark.generalization_gap / mean_norm if mean_norm > 0 else math.nan
        if math.isfinite(first_order) and first_order > 0:
            est.first_order = first_order
        else:
            est.warnings.append(
                f"first-order estimate unavailable: Delta / mean grad norm = {benchmark.generalization_gap:.4g} / "
                f"{mean_norm:.4g} is not a positive number (a clean model whose test loss is not above its "
                "training loss has no first-order eps*)")
        for e in grid:
            atk = s.evaluation_attack(e) if e > 0 else None
            loss, acc = adversarial_loss(model, loader, atk, e, device)
            if atk is not None:
                counter.backward += len(train_set) * atk.steps
            est.points.append({"eps": e, "loss": loss, "accuracy": acc})
            if progress:
                progress(f"clean probe eps {format_eps(e)}: loss {loss:.4f}")
    finally:
        handle.remove()
    est.lower_bound = ladder_lower_bound(((p["eps"], p["loss"]) for p in est.points), r_star)
    est.value = est.lower_bound
    est.bracket = (est.lower_bound, None)
    losses = [p["loss"] for p in est.points]

    def bound_for(r: float) -> float:
        return ladder_lower_bound(zip(grid, losses, strict=True), r) or 0.0

    rng = np.random.default_rng(0)
    est.interval = propagate(lambda row: bound_for(row[0]), r_star_draws(benchmark, 2000, rng)[:, None])
    if est.lower_bound is None:
        est.warnings.append("even the smallest rung's loss is above R*(0): no lower bound from this ladder")
    elif est.lower_bound == grid[-1]:
        est.warnings.append("the largest rung still passes: extend the ladder for a tighter lower bound")
    return with_cost(est, counter, start, len(train_set))



def finetune_start(probe: EpsStarEstimate) -> list[float]:
    """Where the fine-tune's ladder starts: the clean probe's lower bound (the clean model is at or below R*(0)
    there, and fine-tuning at that ε lowers R̂ further), else half the first-order estimate."""
    if probe.lower_bound:
        return [probe.lower_bound]
    if probe.first_order:
        return [probe.first_order / 2]
    raise ValueError("the clean probe gave neither a lower bound nor a first-order estimate; pass eps explicitly")


def default_grid_eps(probe: EpsStarEstimate) -> list[float]:
    """The grid's strengths from a clean probe: its lower bound × (1/2, 1, 3/2, 2, 3, 4) (dense where ε* usually
    is: between the bound and a few times it), else the first-order estimate × (1/4, 1/2, 3/4, 1, 3/2, 2)."""
    if probe.lower_bound:
        return [probe.lower_bound * f for f in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)]
    if probe.first_order:
        return [probe.first_order * f for f in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)]
    raise ValueError("the clean probe gave neither a lower bound nor a first-order estimate; pass eps explicitly")


# The clean probe's default ladder, when no strengths are given.
DEFAULT_LADDER = tuple(e / 255 for e in (0.5, 1, 2, 4, 8, 16, 32, 64))
