"""Estimating ε*, with a band: from run records, by fine-tuning, and for free from the clean model.

ε* = sup{ε : R̂(θ̂(ε), ε) ≤ R*(0)} (the paper, section 3), with R̂ always the adversarial training loss of
fixed weights (:func:`advhooks.evaluation.evaluate_adversarial_loss`). Estimators, cheapest last:

- :func:`estimate_grid` — the paper's section 5.2 ground truth: monitored adversarial training from scratch
  at each ε of a grid, θ̂(ε) early-stopped at the smallest adversarial test loss; the runs' records are
  combined by :func:`estimate_from_records` (also ``estimate-eps-star --method runs``), which interpolates
  where R̂(θ̂(ε), ε) crosses R*(0).
- :func:`estimate_finetune` — the paper's section 6: from the clean weights θ̂(0), short adversarial
  fine-tuning at a few ε around the clean probe's bound; a least-squares line L(ε) ≈ a + bε through R̂ of
  the fine-tuned weights, solved for R*(0). ``runs`` repeats with other seeds.
- :func:`estimate_clean_probe` — no training: the clean model's adversarial training loss at a ladder of ε
  is a lower bound on ε* (θ̂(ε) can only do better than θ̂(0)), and Δ / mean‖∇ₓℓ(θ̂(0))‖_* is the
  first-order estimate (envelope theorem; the dual norm is ‖·‖₁ for L∞, ‖·‖₂ for L2).

Each returns an :class:`EpsStarEstimate` with ``interval`` and ``level`` (R*(0)'s bootstrap, R̂'s sampling
error and the spread over runs carried through by Monte Carlo) that serialises to JSON with its points,
cost and warnings. :func:`estimate_eps_star` picks the method (what the CLI runs). The fine-tune slope b is
compared with mean‖∇ₓℓ‖_* (they agree to first order) as a consistency figure.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._outputs import logits_of
from ..attacks import FGM, PGD, Attack, dual_norm, eval_mode
from ..attacks.criteria import cross_entropy
from ..attacks.domain import InputDomain, Normalization
from ..benchmark import CleanBenchmark, benchmark_reference
from ..evaluation import FixedSubset, evaluate_adversarial_loss
from ..monitor import RUN_RECORD_SCHEMA, PhaseMonitor, ladder_lower_bound
from ..schedules import format_eps
from ..uncertainty import DEFAULT_LEVEL, bootstrap_means, normal_draws, propagate, z_value
from .training import PassCounter, adversarial_loss, train_adversarially

__all__ = [
    "DEFAULT_LADDER",
    "METHODS",
    "EpsStarEstimate",
    "default_finetune_eps",
    "adversarial_loss",
    "check_eps_grid",
    "estimate_clean_probe",
    "estimate_eps_star",
    "estimate_finetune",
    "estimate_from_records",
    "estimate_grid",
    "make_attack",
    "mean_input_grad_dual_norm",
    "r_star_draws",
]

log = logging.getLogger(__name__)
# The grid's own monitored runs report through their records, not as warnings to the person who asked for ε*:
# a logger of their own (not registered with logging, so importing this module configures nothing) that passes
# only errors on to this module's logger.
_RUN_LOG = logging.Logger(__name__ + ".runs", logging.ERROR)
_RUN_LOG.parent = log


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
        interval / level: the band ``[low, high]`` around ``value`` and its coverage (default 0.8): R*(0)'s
            bootstrap, R̂'s sampling error and the spread over runs, carried through the estimator.
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
    interval: tuple[float, float] | None = None
    level: float = DEFAULT_LEVEL

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON-ready)."""
        out = asdict(self)
        out["interval"] = None if self.interval is None else list(self.interval)
        return out

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


def _censored_crossing(eps: list[float], losses: list[float], target: float) -> float | None:
    """The crossing of one Monte-Carlo draw; a draw whose curve stays below ``target`` counts as the grid's end.

    Dropping such draws would bias the band low (they are the draws where ε* is largest), so they are kept
    at the largest ε, and the band then says it reaches the grid's edge. Draws above ``target`` from the
    first point on count as the first ε.
    """
    value, _ = _interpolate_crossing(eps, losses, target)
    if value is not None:
        return value
    if all(v <= target for v in losses):
        return eps[-1]
    if all(v > target for v in losses):
        return eps[0]
    return None


def _interpolate_crossing(eps: list[float], losses: list[float], target: float):
    """ε where the piecewise-linear L(ε) first crosses ``target`` from below, and the bracketing pair."""
    points = list(zip(eps, losses, strict=True))
    for (e0, l0), (e1, l1) in zip(points, points[1:], strict=False):
        if l0 <= target < l1:
            return e0 + (target - l0) * (e1 - e0) / (l1 - l0), (e0, e1)
    return None, None


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
    epochs: int = 60,
    lr: float = 0.05,
    batch_size: int = 64,
    weight_decay: float = 0.0,
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

    Each run trains with the clean benchmark's schedule (lr / 10 at 1/2 and 3/4 of ``epochs``) under a
    :class:`~advhooks.monitor.PhaseMonitor` that evaluates the adversarial test loss each epoch, keeps θ̂(ε)
    (the epoch of the smallest one) and evaluates R̂(θ̂(ε), ε) at those fixed weights on a fixed training
    subset of ``train_subset`` samples. Each run is a run record (written to ``records_dir`` when given, with
    θ̂'s weights beside it), and :func:`estimate_from_records` combines them: the same path as
    ``estimate-eps-star --method runs``.

    Args:
        train_eval_set: the training set without augmentation, for R̂ (default ``train_set``).
        level: the band's coverage.
        Others: as their names say; ``include_clean`` adds the benchmark's own point (0, R̂(θ̂(0), 0)).
    """
    grid = check_eps_grid(eps)
    device = torch.device(device)
    start, counter = time.perf_counter(), PassCounter()
    records = []
    for run, e, model, train_loader in _study_runs(grid, runs, seed, model_factory, train_set, batch_size, device,
                                                   counter):
        atk = make_attack(attack if e > 0 else "pgd", e, norm, steps, normalization)
        eval_attack = make_attack("pgd", e, norm, steps, normalization)
        monitor = PhaseMonitor(benchmark, eps=e, total_epochs=epochs, attack=eval_attack, logger=_RUN_LOG,
                               recipe=dict(batch_size=batch_size, lr=lr, weight_decay=weight_decay, run=run,
                                           seed=seed + 1000 * run, schedule="step_decay", optimizer="sgd"))
        monitor.evaluate_with(model, train_eval_set or train_set, test_set, train_subset=train_subset, seed=seed,
                              device=device)
        train_adversarially(model, train_loader, atk, e, epochs, lr, decay=True, device=device, counter=counter,
                            weight_decay=weight_decay, monitor=monitor, progress=progress)
        monitor.evaluate_rhat()  # a no-op after the last planned epoch; a run cut short evaluates θ̂'s R̂ here
        records.append(monitor.record())
        if records_dir is not None:  # with θ̂'s weights beside it, for `advhooks connectivity --checkpoint`
            monitor.save_record(Path(records_dir) / f"eps{e * 255:.4g}-run{run}.json", weights=e > 0)
    est = estimate_from_records(records, benchmark, include_clean=include_clean, level=level, seed=seed)
    est.method = "grid"
    est.settings = dict(eps=grid, attack=attack, steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, runs=runs,
                        seed=seed, train_subset=train_subset)
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
    est = EpsStarEstimate("runs", None, r_star, norm, level=level)
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
    est.value, est.bracket = _interpolate_crossing(xs, ys, r_star)
    rng = np.random.default_rng(seed)
    samples = np.column_stack([r_star_draws(benchmark, draws, rng), normal_draws(ys, ses, draws, rng)])
    est.interval = propagate(lambda row: _censored_crossing(xs, list(row[1:]), row[0]), samples, level=level)
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
        value, _ = _interpolate_crossing(*map(list, zip(*(clean + pts), strict=True)), r_star) if pts else (None, None)
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
    lr: float | None = None,
    batch_size: int = 64,
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
    the clean model is fine-tuned for ``epochs`` at the clean run's learning rate (``lr`` overrides it),
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
    lr = float(lr if lr is not None else benchmark.training.get("lr", 0.05))
    start, counter = time.perf_counter(), PassCounter()
    r_star = benchmark.clean_test_loss
    est = EpsStarEstimate("finetune", None, r_star, norm, level=level, settings=dict(
        eps=grid, attack=attack, steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, runs=runs, seed=seed,
        train_subset=train_subset))
    subset = None if train_subset is None else FixedSubset(train_subset, seed)
    clean_model = lambda: benchmark.load_weights_into(model_factory())  # noqa: E731 - each run starts clean
    for run, e, model, loader in _study_runs(grid, runs, seed, clean_model, train_set, batch_size, device, counter):
        train_adversarially(model, loader, make_attack(attack, e, norm, steps, normalization), e, epochs, lr,
                            decay=False, device=device, counter=counter, progress=progress)
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
        first_order = benchmark.generalization_gap / mean_norm if mean_norm > 0 else math.nan
        if math.isfinite(first_order) and first_order > 0:
            est.first_order = first_order
        else:
            est.warnings.append(
                f"first-order estimate unavailable: Delta / mean grad norm = {benchmark.generalization_gap:.4g} / "
                f"{mean_norm:.4g} is not a positive number (a clean model whose test loss is not above its "
                "training loss has no first-order eps*)")
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


# The clean probe's default ladder, when no strengths are given.
DEFAULT_LADDER = tuple(e / 255 for e in (0.5, 1, 2, 4, 8, 16, 32, 64))
METHODS = ("grid", "finetune", "clean-probe", "runs")


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
    progress: Callable[[str], None] | None = None,
) -> EpsStarEstimate:
    """ε* by any method, with its band: what ``advhooks estimate-eps-star`` runs, for Python callers.

    Args:
        method: ``"clean-probe"`` (no training), ``"finetune"`` (section 6), ``"grid"`` (section 5.2, training
            from scratch at each ε) or ``"runs"`` (combine existing run ``records``).
        benchmark: the clean benchmark, loaded with its weights (:meth:`CleanBenchmark.load`).
        model_factory / train_set / test_set / train_eval_set: the setting (``train_eval_set``: the training set
            without augmentation; default ``train_set``). Not needed for ``"runs"``.
        records: run records (:meth:`PhaseMonitor.record`) for ``"runs"``.
        eps: the strengths (grid points, fine-tune points, or the probe's ladder); default: chosen from the
            clean probe (fine-tune: its lower bound × (1/2, 1, 3/2, 2); grid: those and 4×).
        attack: ``"pgd"`` or ``"fgm"`` for training (default PGD).
        epochs: per run (default: 10 for the fine-tune, 60 for the grid).
        lr / batch_size: default: the benchmark's recipe.
        records_dir: the grid's run records, each with its θ̂ weights beside it (only the grid writes any).
        Others: as in :func:`estimate_grid` and :func:`estimate_finetune`.
    """
    method, attack = _check_request(method, attack, records, model_factory, train_set, test_set)
    if method == "runs":
        return estimate_from_records(records, benchmark, level=level, seed=seed)
    grid = check_eps_grid(eps) if eps is not None else None
    train_eval = train_eval_set or train_set
    common = dict(norm=norm, attack=attack, steps=steps, device=device, progress=progress,
                  normalization=normalization)
    # The clean probe is the method itself, or what picks the points when none are given.
    probe = None
    if method == "clean-probe" or grid is None:
        probe = estimate_clean_probe(benchmark.load_weights_into(model_factory()), train_eval, benchmark,
                                     grid or list(DEFAULT_LADDER), **common)
    if method == "clean-probe":
        return probe
    recipe = dict(_benchmark_recipe(benchmark, lr, batch_size), runs=runs, seed=seed, train_eval_set=train_eval,
                  level=level)
    points = grid or _points_from_probe(method, probe)
    if method == "finetune":
        grad_norm = probe.mean_grad_dual_norm if probe else mean_input_grad_dual_norm(
            benchmark.load_weights_into(model_factory()), train_eval, norm, device=device, normalization=normalization)
        result = estimate_finetune(model_factory, train_set, benchmark, points, epochs=epochs or 10,
                                   mean_grad_dual_norm=grad_norm, **recipe, **common)
    else:
        result = estimate_grid(model_factory, train_set, test_set, benchmark, points, epochs=epochs or 60,
                               weight_decay=float(benchmark.training.get("weight_decay", 0.0)),
                               records_dir=records_dir, **recipe, **common)
    return _with_probe(result, probe)


def _benchmark_recipe(benchmark: CleanBenchmark, lr: float | None, batch_size: int | None) -> dict[str, Any]:
    """The learning rate and batch size given, else the clean benchmark's."""
    return {"lr": float(lr or benchmark.training.get("lr", 0.1)),
            "batch_size": int(batch_size or benchmark.training.get("batch_size", 128))}


def _points_from_probe(method: str, probe: EpsStarEstimate) -> list[float]:
    """The fine-tune's strengths from the clean probe (its lower bound × (1/2, 1, 3/2, 2)); the grid adds 4×."""
    points = default_finetune_eps(probe)
    return points + [4 * probe.lower_bound] if method == "grid" and probe.lower_bound else points


def _with_probe(result: EpsStarEstimate, probe: EpsStarEstimate | None) -> EpsStarEstimate:
    """``result`` with the clean probe's figures and warnings, when a probe chose its points."""
    if probe is not None:
        result.warnings += [f"clean probe: {w}" for w in probe.warnings]
        result.lower_bound, result.first_order = probe.lower_bound, probe.first_order
        result.mean_grad_dual_norm = result.mean_grad_dual_norm or probe.mean_grad_dual_norm
    return result


def _check_request(method: str, attack: str | None, records: Any, model_factory: Any, train_set: Any,
                   test_set: Any) -> tuple[str, str]:
    """The method and the training attack, lower-cased, with what each method needs."""
    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "runs":
        if not records:
            raise ValueError("method 'runs' needs run records")
        return method, attack or "pgd"
    if model_factory is None or train_set is None:
        raise ValueError(f"method {method!r} needs model_factory and train_set")
    if method == "grid" and test_set is None:
        raise ValueError("method 'grid' needs test_set (the adversarial test loss selects each run's epoch)")
    attack = (attack or "pgd").lower()
    if attack not in ("pgd", "fgm"):
        raise ValueError(f"attack must be 'pgd' or 'fgm', got {attack!r}")
    return method, attack
