"""Estimating ε*: from a grid of runs, by fine-tuning + extrapolation, and for free from the clean model.

ε* = sup{ε : R̂(θ̂(ε), ε) ≤ R*(0)} (the paper, section 3). Three estimators, cheapest last:

- :func:`estimate_grid` — the paper's section 5.2 ground truth: adversarial training from scratch at each
  ε of a grid, early-stopped at the epoch of smallest adversarial test loss; ε* by linear interpolation
  where the adversarial training loss at the selected epoch crosses R*(0).
- :func:`estimate_finetune` — the paper's section 6: from the clean weights θ̂(0), short adversarial
  fine-tuning at a few small ε; least-squares line L(ε) ≈ a + bε through the adversarial training losses;
  ε* solves a + bε = R*(0). ``runs`` repeats with other seeds; their spread is reported.
- :func:`estimate_clean_probe` — no training: the clean model's adversarial training loss at a ladder of ε
  is a lower bound on ε* (θ̂(ε) can only do better than θ̂(0)), and Δ / mean‖∇ₓℓ(θ̂(0))‖_* is the
  first-order estimate (envelope theorem; the dual norm is ‖·‖₁ for L∞, ‖·‖₂ for L2).

Each returns an :class:`EpsStarEstimate` that serialises to JSON with its points, cost and warnings.
The fine-tune slope b is compared with mean‖∇ₓℓ‖_* (they agree to first order) as a consistency figure.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._outputs import logits_of
from .attacks import FGM, PGD, Attack, dual_norm, eval_mode
from .attacks.domain import InputDomain, Normalization
from .attacks.objectives import cross_entropy
from .benchmark import CleanBenchmark
from .schedules import format_eps
from .training import PassCounter, adversarial_loss, train_adversarially

__all__ = [
    "EpsStarEstimate",
    "default_finetune_eps",
    "adversarial_loss",
    "check_eps_grid",
    "estimate_clean_probe",
    "estimate_finetune",
    "estimate_grid",
    "make_attack",
    "mean_input_grad_dual_norm",
]

log = logging.getLogger(__name__)


@dataclass
class EpsStarEstimate:
    """An ε* estimate with what it rests on.

    Attributes:
        method: ``"grid"``, ``"finetune"`` or ``"clean-probe"``.
        value: the estimate (``None`` when it cannot be given; ``warnings`` says why).
        clean_test_loss: R*(0) used.
        points: the measured ``{"eps", "loss", "run", ...}`` points (failed runs carry ``"failed"``).
        per_run: the estimate of each run (fine-tune, grid with runs > 1).
        spread: standard deviation of ``per_run`` (``None`` with one run).
        bracket: for the grid, the two ε around the crossing; for the clean probe, ``(lower bound, None)``.
        fit: for the fine-tune, the mean ``intercept``, ``slope`` and RMS ``residual`` of the line.
        lower_bound / first_order: the clean probe's two figures.
        consistency: fine-tune slope / mean‖∇ₓℓ(θ̂(0))‖_* when both are known (≈ 1 expected).
        seconds: wall time; forward_samples / backward_samples: per-sample passes through the model;
        train_set_passes: (forward + backward samples) / (2 · n_train), in epochs of clean training.
        warnings: what the reader should know.
    """

    method: str
    value: float | None
    clean_test_loss: float
    norm: str
    points: list[dict[str, Any]] = field(default_factory=list)
    per_run: list[float] = field(default_factory=list)
    spread: float | None = None
    bracket: tuple[float | None, float | None] | None = None
    fit: dict[str, float] | None = None
    lower_bound: float | None = None
    first_order: float | None = None
    mean_grad_dual_norm: float | None = None
    consistency: float | None = None
    seconds: float = 0.0
    forward_samples: int = 0
    backward_samples: int = 0
    train_set_passes: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON-ready)."""
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        """The estimate as JSON."""
        return json.dumps(self.to_dict(), **kwargs)


def check_eps_grid(eps: Sequence[float], name: str = "eps") -> list[float]:
    """A sorted, non-empty, non-negative list of distinct finite strengths, or a clear ValueError."""
    values = [float(e) for e in eps]
    if not values:
        raise ValueError(f"{name} must not be empty")
    if any(not math.isfinite(e) or e < 0 for e in values):
        raise ValueError(f"{name} must contain finite values >= 0, got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not contain duplicates, got {values}")
    if values != sorted(values):
        raise ValueError(f"{name} must be sorted in increasing order, got {values}")
    return values


def make_attack(name: str, eps: float, norm: str, steps: int = 10, normalization: Normalization = None) -> Attack:
    """``"pgd"`` (PGD-``steps`` with random start) or ``"fgm"`` (FGM; FGSM-RS in L∞) of strength ``eps``.

    ``normalization=(mean, std)`` when the data is normalised before the model (ε stays in pixel units).
    """
    name = name.lower()
    if name == "pgd":
        return PGD(eps, norm=norm, steps=steps, normalization=normalization)
    if name == "fgm":
        return FGM(eps, norm=norm, random_start=True, normalization=normalization)
    raise ValueError(f"attack must be 'pgd' or 'fgm', got {name!r}")


def _finite(v: float) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def _cost(est: EpsStarEstimate, counter: PassCounter, start: float, n_train: int) -> EpsStarEstimate:
    est.seconds = time.perf_counter() - start
    est.forward_samples, est.backward_samples = counter.forward, counter.backward
    est.train_set_passes = (counter.forward + counter.backward) / (2 * max(n_train, 1))
    return est


def _interpolate_crossing(eps: list[float], losses: list[float], target: float):
    """ε where the piecewise-linear L(ε) first crosses ``target`` from below, and the bracketing pair."""
    points = list(zip(eps, losses, strict=True))
    for (e0, l0), (e1, l1) in zip(points, points[1:], strict=False):
        if l0 <= target < l1:
            return e0 + (target - l0) * (e1 - e0) / (l1 - l0), (e0, e1)
    return None, None


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
    epochs: int = 60,
    lr: float = 0.05,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    runs: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    normalization: Normalization = None,
    include_clean: bool = True,
    progress: Callable[[str], None] | None = None,
) -> EpsStarEstimate:
    """ε* from adversarial training from scratch at each ε (the paper's section 5.2).

    Each run trains with the clean benchmark's schedule (lr / 10 at 1/2 and 3/4 of ``epochs``), selects the
    epoch of smallest adversarial test loss, and takes the adversarial training loss of that epoch. The
    crossing with R*(0) is interpolated linearly; ``include_clean`` adds the benchmark's own point
    (0, R̂(θ̂(0), 0)). When the grid does not bracket the crossing the value is ``None`` and a warning
    says on which side ε* lies.
    """
    grid = check_eps_grid(eps)
    device = torch.device(device)
    start, counter = time.perf_counter(), PassCounter()
    r_star = benchmark.clean_test_loss
    est = EpsStarEstimate("grid", None, r_star, norm, settings=dict(eps=grid, attack=attack, steps=steps,
                          epochs=epochs, lr=lr, batch_size=batch_size, runs=runs, seed=seed))
    per_eps: dict[float, list[float]] = {e: [] for e in grid}
    for run in range(runs):
        for e in grid:
            torch.manual_seed(seed + 1000 * run)
            model = model_factory().to(device)
            handle = model.register_forward_hook(counter.hook)
            gen = torch.Generator().manual_seed(seed + 1000 * run)
            train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=gen)
            test_loader = DataLoader(test_set, batch_size=max(batch_size, 256))
            atk = make_attack(attack if e > 0 else "pgd", e, norm, steps, normalization)
            eval_attack = make_attack("pgd", e, norm, steps, normalization) if e > 0 else None
            history = train_adversarially(model, train_loader, atk, e, epochs, lr, decay=True,
                                           test_loader=test_loader, eval_attack=eval_attack, device=device,
                                           counter=counter, weight_decay=weight_decay, progress=progress)
            handle.remove()
            finite = [h for h in history if _finite(h["train_loss"]) and _finite(h["test_loss"])]
            if not finite:
                est.points.append({"eps": e, "run": run, "loss": None, "failed": "non-finite losses"})
                est.warnings.append(f"run {run} at eps {format_eps(e)} failed: non-finite losses")
                continue
            best = min(finite, key=lambda h: h["test_loss"])
            est.points.append({"eps": e, "run": run, "loss": best["train_loss"], "epoch": best["epoch"],
                               "test_loss": best["test_loss"]})
            per_eps[e].append(best["train_loss"])
    xs, ys = [], []
    if include_clean and benchmark.clean_train_loss is not None and 0.0 not in per_eps:
        xs.append(0.0)
        ys.append(benchmark.clean_train_loss)
    for e in grid:
        if per_eps[e]:
            xs.append(e)
            ys.append(float(np.mean(per_eps[e])))
    est.value, est.bracket = _interpolate_crossing(xs, ys, r_star)
    if runs > 1:
        for run in range(runs):
            pts = {p["eps"]: p["loss"] for p in est.points if p["run"] == run and p.get("loss") is not None}
            rx = ([0.0] if xs and xs[0] == 0.0 and 0.0 not in pts else []) + sorted(pts)
            ry = ([ys[0]] if rx and rx[0] == 0.0 and 0.0 not in pts else []) + [pts[k] for k in sorted(pts)]
            value, _ = _interpolate_crossing(rx, ry, r_star)
            if value is not None:
                est.per_run.append(value)
        if len(est.per_run) > 1:
            est.spread = float(np.std(est.per_run, ddof=1))
    if est.value is None and ys:
        if all(v > r_star for v in ys):
            est.warnings.append(f"the grid does not bracket the crossing: every loss is above R*(0) = {r_star:.4f}, "
                                f"so eps* < {format_eps(xs[0])}; add smaller eps")
            est.bracket = (None, xs[0])
        elif all(v <= r_star for v in ys):
            est.warnings.append(f"the grid does not bracket the crossing: every loss is at or below R*(0) = "
                                f"{r_star:.4f}, so eps* > {format_eps(xs[-1])}; add larger eps")
            est.bracket = (xs[-1], None)
        else:
            est.warnings.append("the losses are not increasing in eps where they cross R*(0); no interpolation")
    return _cost(est, counter, start, len(train_set))


def estimate_finetune(
    model_factory: Callable[[], nn.Module],
    train_set: Dataset,
    benchmark: CleanBenchmark,
    eps: Sequence[float],
    *,
    norm: str = "linf",
    attack: str = "fgm",
    steps: int = 10,
    epochs: int = 10,
    lr: float | None = None,
    batch_size: int = 64,
    runs: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    normalization: Normalization = None,
    mean_grad_dual_norm: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> EpsStarEstimate:
    """ε* by adversarial fine-tuning from the clean weights and linear extrapolation (the paper's section 6).

    At each ε (small, ideally around and below ε*: :func:`default_finetune_eps` picks them from the clean
    probe) the clean model is fine-tuned for ``epochs`` at the clean run's learning rate (``lr`` overrides
    it) and the last epoch's adversarial training loss is recorded; a least-squares line through
    (ε, loss) is solved for R*(0). Each of ``runs`` repeats uses another seed; the estimate is their mean
    and ``spread`` their standard deviation.

    Defaults (FGM with random start, 10 epochs) were chosen on the digits preset, where they came within
    a few percent of the grid at under a tenth of its time (``benchmarks/eps_star_digits.py``). Fewer
    epochs underestimate ε* (the model has not adapted and the loss still curves upward in ε); many more
    overestimate it, because a long constant-rate fine-tune overfits past the early-stopped epoch the
    grid's definition uses.
    """
    grid = check_eps_grid(eps)
    if len(grid) < 2:
        raise ValueError("the fine-tune estimate needs at least two eps to fit a line")
    if benchmark.state_dict is None:
        raise ValueError("the benchmark has no weights: load it with CleanBenchmark.load(path)")
    device = torch.device(device)
    lr = float(lr if lr is not None else benchmark.training.get("lr", 0.05))
    start, counter = time.perf_counter(), PassCounter()
    r_star = benchmark.clean_test_loss
    est = EpsStarEstimate("finetune", None, r_star, norm, settings=dict(eps=grid, attack=attack, steps=steps,
                          epochs=epochs, lr=lr, batch_size=batch_size, runs=runs, seed=seed))
    fits = []
    for run in range(runs):
        xs, ys = [], []
        for e in grid:
            torch.manual_seed(seed + 1000 * run)
            model = benchmark.load_weights_into(model_factory()).to(device)
            handle = model.register_forward_hook(counter.hook)
            gen = torch.Generator().manual_seed(seed + 1000 * run)
            loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=gen)
            history = train_adversarially(model, loader, make_attack(attack, e, norm, steps, normalization), e, epochs,
                                           lr,
                                           decay=False, test_loader=None, eval_attack=None, device=device,
                                           counter=counter, progress=progress)
            handle.remove()
            loss = history[-1]["train_loss"]
            if not _finite(loss):
                est.points.append({"eps": e, "run": run, "loss": None, "failed": "non-finite losses"})
                est.warnings.append(f"run {run} at eps {format_eps(e)} failed: non-finite losses")
                continue
            est.points.append({"eps": e, "run": run, "loss": loss})
            xs.append(e)
            ys.append(loss)
        if len(xs) < 2:
            est.warnings.append(f"run {run}: fewer than two usable points, no line")
            continue
        slope, intercept = np.polyfit(xs, ys, 1)
        residual = float(np.sqrt(np.mean((np.polyval([slope, intercept], xs) - np.asarray(ys)) ** 2)))
        if slope <= 0:
            est.warnings.append(f"run {run}: the loss does not increase with eps (slope {slope:.4g}); no estimate")
            continue
        fits.append((float(slope), float(intercept), residual))
        est.per_run.append((r_star - intercept) / slope)
    if fits:
        slope, intercept, residual = (float(np.mean(v)) for v in zip(*fits, strict=True))
        est.fit = {"slope": slope, "intercept": intercept, "residual": residual}
        est.value = float(np.mean(est.per_run))
        if len(est.per_run) > 1:
            est.spread = float(np.std(est.per_run, ddof=1))
        if est.value > 2 * grid[-1]:
            est.warnings.append(f"the estimate {format_eps(est.value)} lies far beyond the largest eps "
                                f"{format_eps(grid[-1])}: a long extrapolation; fine-tune at larger eps to confirm")
        if est.value < 0:
            est.warnings.append("the fitted line is above R*(0) already at eps = 0: eps* is below the grid")
    if mean_grad_dual_norm:
        est.mean_grad_dual_norm = mean_grad_dual_norm
        if est.fit:
            est.consistency = est.fit["slope"] / mean_grad_dual_norm
    return _cost(est, counter, start, len(train_set))


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


def estimate_clean_probe(
    model: nn.Module,
    train_set: Dataset,
    benchmark: CleanBenchmark,
    ladder: Sequence[float],
    *,
    norm: str = "linf",
    attack: str = "pgd",
    steps: int = 10,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    normalization: Normalization = None,
    progress: Callable[[str], None] | None = None,
) -> EpsStarEstimate:
    """Free figures from the clean model θ̂(0): a lower bound on ε* and the first-order estimate.

    The clean model's adversarial training loss at each rung of ``ladder``; the largest rung whose loss is
    ≤ R*(0) bounds ε* from below (up to the attack's approximation). The first-order estimate is
    Δ / mean‖∇ₓℓ‖_*, from the input gradients over the training set; it tends to overestimate because
    the loss curves upward in ε.
    """
    grid = check_eps_grid(ladder, "ladder")
    if benchmark.generalization_gap is None:
        raise ValueError("the benchmark has no clean training loss (measure it with a train loader)")
    device = torch.device(device)
    start, counter = time.perf_counter(), PassCounter()
    r_star = benchmark.clean_test_loss
    est = EpsStarEstimate("clean-probe", None, r_star, norm, settings=dict(ladder=grid, attack=attack, steps=steps))
    model = model.to(device)
    handle = model.register_forward_hook(counter.hook)
    loader = DataLoader(train_set, batch_size=batch_size)
    try:
        mean_norm = mean_input_grad_dual_norm(model, train_set, norm, batch_size=batch_size, device=device,
                                              normalization=normalization)
        counter.backward += len(train_set)
        est.mean_grad_dual_norm = mean_norm
        if mean_norm > 0:
            est.first_order = benchmark.generalization_gap / mean_norm
        for e in grid:
            atk = make_attack(attack, e, norm, steps, normalization) if e > 0 else None
            loss, acc = adversarial_loss(model, loader, atk, e, device)
            if atk is not None:
                counter.backward += len(train_set) * atk.steps
            est.points.append({"eps": e, "loss": loss, "accuracy": acc})
            if progress:
                progress(f"clean probe eps {format_eps(e)}: loss {loss:.4f}")
    finally:
        handle.remove()
    passing = [p["eps"] for p in est.points if p["loss"] <= r_star]
    est.lower_bound = max(passing) if passing else None
    est.value = est.lower_bound
    est.bracket = (est.lower_bound, None)
    if est.lower_bound is None:
        est.warnings.append("even the smallest rung's loss is above R*(0): no lower bound from this ladder")
    elif est.lower_bound == grid[-1]:
        est.warnings.append("the largest rung still passes: extend the ladder for a tighter lower bound")
    return _cost(est, counter, start, len(train_set))



def default_finetune_eps(probe: EpsStarEstimate) -> list[float]:
    """Fine-tuning strengths from a clean probe: its lower bound × (1/2, 1, 3/2, 2).

    Falls back to the first-order estimate × (1/4, 1/2, 3/4, 1) when the ladder gave no lower bound.
    """
    if probe.lower_bound:
        return [probe.lower_bound * f for f in (0.5, 1.0, 1.5, 2.0)]
    if probe.first_order:
        return [probe.first_order * f for f in (0.25, 0.5, 0.75, 1.0)]
    raise ValueError("the clean probe gave neither a lower bound nor a first-order estimate; pass eps explicitly")
