"""``PhaseMonitor``: the paper's R̂ of the early-stopped model against the clean benchmark R*(0).

Framework-free: feed it each batch's :class:`~advhooks.StepOutput` (or a loss and a batch size) and
call :meth:`PhaseMonitor.epoch_end`; it returns a :class:`PhaseReport` with ρ = R̂(θ̂, ε) / R*(0), its
band and the regime. The verdict follows the paper's definition (section 5.1): θ̂ is the epoch with the
smallest *adversarial test loss* so far, and R̂ is the adversarial training loss of those fixed weights
(:func:`advhooks.evaluation.evaluate_adversarial_loss` on a fixed training subset, whose sampling error
enters the band with R*(0)'s). The monitor learns the adversarial test loss either by evaluating it
(:meth:`PhaseMonitor.evaluate_with`) or from the loop (``epoch_end(adv_test_loss=...)``). Without it the
verdict is *provisional*: it rests on the best per-epoch running mean of the training loss, which mixes
a whole epoch of weights, and the report says so.

Regimes, decided by ρ's band (default level 0.8):

- ``clean-like``: the whole band is below 1: ε < ε*, adversarial training behaves like clean training;
- ``near eps*``: the band contains 1;
- ``above eps*``: the band is above 1, but not (yet) above ``threshold``;
- ``eps >> eps*``: after the warm-up, the band's lower end is at or above ``threshold`` and the verdict ρ
  has stopped improving (less than ``min_delta`` relative improvement over ``patience`` epochs). The flag
  fires once, on this regime.

Why ``threshold = 1.5``: the paper's Table 1 (PreActResNet18, CIFAR-10, ε* ≈ 0.5/255) measures this very
R̂ (early-stopped, fixed weights): ρ is 0.98 at ε ≈ ε*, 1.17 at 2ε* and 1.86 at 4ε*. A band entirely above
1.5 × R*(0) therefore means ε is between 2 and 4 times ε* or more. The warm-up (default
``total_epochs // 2 + patience``: the paper's first learning-rate decay, then ``patience`` epochs) keeps
the verdict from firing while every ε is still far above R*(0) early in training; a run shorter than its
warm-up can never flag, and the monitor warns about it when it is built.

The optional probe (off by default) evaluates the current model's adversarial loss at a ladder of
ε′ ≤ ε on a fixed subset of the training data every ``every`` epochs; the largest ε′ whose loss is
≤ R*(0) is a lower bound on ε* (if θ̂(ε′) minimised R̂; a heuristic otherwise). Its cost, in
forward+input-gradient passes, is ``len(ladder) × (steps + 1) × probe size`` per probe.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ._outputs import logits_of
from ._validation import check_finite_nonnegative, check_positive, check_positive_int
from .attacks import PGD, Attack, eval_mode
from .attacks.criteria import per_sample
from .benchmark import (
    CleanBenchmark,
    benchmark_reference,
    model_fingerprint,
    recipe_differences,
    write_json_atomic,
)
from .evaluation import FixedSubset, evaluate_adversarial_loss
from .schedules import format_eps
from .uncertainty import DEFAULT_LEVEL, MeanEstimate, ratio_interval

__all__ = ["REGIMES", "PhaseMonitor", "PhaseReport", "decide_regime"]

log = logging.getLogger(__name__)

CLEAN_LIKE, NEAR, ABOVE, FAR_ABOVE = "clean-like", "near eps*", "above eps*", "eps >> eps*"
REGIMES = (CLEAN_LIKE, NEAR, ABOVE, FAR_ABOVE)
# The open epoch's per-rank sums, declared once: reset to 0, summed across ranks, saved and restored.
_SUMS = ("loss_sum", "count", "nonfinite")
RUN_RECORD_SCHEMA = "advhooks.run/1"

ADVICE = (
    "Adversarial training at this strength no longer behaves like clean training: the paper (Xing et al. "
    "2022, sections 5 and 7) links eps >> eps* to leaving the clean basin, robust overfitting and FGSM "
    "catastrophic overfitting. What helps: a smaller eps, a wider model, more training data, or "
    "TRADES/MART (objective='trades' or 'mart')."
)


@dataclass
class PhaseReport:
    """One epoch's verdict.

    Attributes:
        epoch: 1-based epoch number.
        eps: the attack strength of the epoch's last batch.
        adv_train_loss: this epoch's running mean of the adversarial training loss (reported beside R̂).
        clean_test_loss: R*(0) from the benchmark.
        ratio: ρ = R̂ / R*(0), the verdict's ratio (see ``rhat_kind``).
        ratio_interval: ρ's band ``(low, high)`` at ``level``.
        rhat / rhat_stderr: the R̂ the verdict uses and its standard error.
        rhat_kind: ``"fixed weights"`` (the paper's R̂ of θ̂), ``"running mean"`` (θ̂ known from the test
            loss, but no model to evaluate) or ``"provisional"`` (no adversarial test loss: the best running
            mean so far).
        adv_test_loss: this epoch's adversarial test loss, when known.
        early_stopped_epoch: θ̂'s epoch (smallest adversarial test loss so far), when known.
        provisional: the verdict may still change for reasons the report names (warm-up, no test loss).
        best_ratio / best_epoch: the smallest running-mean ratio so far and its epoch.
        regime: one of :data:`REGIMES`.
        flagged: the ε ≫ ε* flag fired at this epoch (it fires once per run).
        flag_epoch: the epoch it fired, if it has.
        eps_star_lower_bound: the probe's lower bound on ε* so far (``None`` without a probe).
        probe: the probe's ``{ε′: loss}`` when it ran this epoch.
        samples: samples whose loss entered the epoch mean (all ranks).
        nonfinite_samples: samples of batches whose loss was NaN or inf (all ranks), left out of the mean.
        explanation: one or two sentences for people.
        level: the band's coverage.
    """

    epoch: int
    eps: float | None
    adv_train_loss: float
    clean_test_loss: float
    ratio: float
    best_ratio: float
    best_epoch: int
    regime: str
    flagged: bool
    flag_epoch: int | None
    eps_star_lower_bound: float | None
    probe: dict[str, float] | None
    samples: int
    explanation: str
    nonfinite_samples: int = 0
    ratio_interval: tuple[float, float] = (math.nan, math.nan)
    rhat: float = math.nan
    rhat_stderr: float = math.nan
    rhat_kind: str = "provisional"
    adv_test_loss: float | None = None
    early_stopped_epoch: int | None = None
    provisional: bool = True
    level: float = DEFAULT_LEVEL

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for loggers and JSON."""
        out = asdict(self)
        out["ratio_interval"] = list(self.ratio_interval)
        return out

    def metrics(self, prefix: str = "advhooks/") -> dict[str, float]:
        """The numeric fields for experiment trackers, under one naming that every adapter uses."""
        out = {
            f"{prefix}adv_train_loss": self.adv_train_loss,
            f"{prefix}rhat": self.rhat,
            f"{prefix}ratio": self.ratio,
            f"{prefix}ratio_low": self.ratio_interval[0],
            f"{prefix}ratio_high": self.ratio_interval[1],
            f"{prefix}best_ratio": self.best_ratio,
            f"{prefix}clean_like": float(self.regime == CLEAN_LIKE),
            f"{prefix}eps_far_above_eps_star": float(self.regime == FAR_ABOVE),
        }
        optional = {"eps": self.eps, "adv_test_loss": self.adv_test_loss,
                    "eps_star_lower_bound": self.eps_star_lower_bound}
        out.update({f"{prefix}{k}": float(v) for k, v in optional.items() if v is not None})
        return out

    @property
    def should_stop(self) -> bool:
        """The one stop rule: the ε ≫ ε* regime (adapters with ``stop_on_flag`` act on it)."""
        return self.regime == FAR_ABOVE


def _comparable(ratios: Sequence[float]) -> list[float]:
    """Ratios for min/plateau comparisons: a NaN or inf epoch (diverged) counts as +inf, i.e. no progress."""
    return [r if math.isfinite(r) else math.inf for r in ratios]


def decide_regime(low: float, high: float, *, threshold: float = 1.5, far_allowed: bool = True) -> tuple[str, str]:
    """The regime for ρ's band ``[low, high]``, and why (a pure function).

    Args:
        low / high: the band of ρ = R̂ / R*(0).
        threshold: ρ above which ε is several times ε*.
        far_allowed: whether ``"eps >> eps*"`` may be decided (after the warm-up, on a plateau).

    Example:
        >>> decide_regime(0.7, 0.9)[0], decide_regime(0.9, 1.2)[0], decide_regime(1.2, 1.4)[0]
        ('clean-like', 'near eps*', 'above eps*')
        >>> decide_regime(1.6, 2.0)[0], decide_regime(1.6, 2.0, far_allowed=False)[0]
        ('eps >> eps*', 'above eps*')
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return NEAR, "no finite adversarial training loss yet (diverged?): no verdict"
    band = f"rho in [{low:.3f}, {high:.3f}]"
    if high < 1.0:
        return CLEAN_LIKE, f"{band} < 1: eps < eps*, adversarial training behaves like clean training"
    if low <= 1.0:
        return NEAR, f"{band} contains 1: eps is near eps* (cannot be told apart at this precision)"
    if low >= threshold and far_allowed:
        return FAR_ABOVE, f"{band} >= {threshold:g} and no longer improving: eps looks several times eps*"
    return ABOVE, f"{band} > 1: eps > eps*"


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _is_main_process() -> bool:
    return not _is_distributed() or dist.get_rank() == 0


@dataclass
class _Probe:
    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    attack: Attack
    ladder: list[float]
    every: int
    batch_size: int


@dataclass
class _Evaluation:
    model: nn.Module
    train_data: Any
    test_data: Any
    attack: Attack | None
    train_subset: FixedSubset | None
    test_subset: FixedSubset | None
    batch_size: int
    device: Any


@dataclass
class PhaseMonitor:
    """Watch the paper's R̂ of the early-stopped model against the clean benchmark R*(0).

    Args:
        benchmark: a :class:`~advhooks.benchmark.CleanBenchmark`, the path of a benchmark file, or R*(0)
            as a number (then R*(0) has no band).
        eps: the training attack strength, for the reports (taken from the step outputs when given).
        threshold: ρ above which ε is several times ε* (default 1.5; see the module docs).
        patience: epochs without progress of the verdict ρ that make a plateau.
        warmup_epochs: no ε ≫ ε* verdict before this many epochs; default ``total_epochs // 2 + patience``
            when ``total_epochs`` is given, else 10.
        total_epochs: the planned number of epochs (the default warm-up, the short-run warning, the recipe).
        min_delta: relative improvement of the verdict ρ that counts as progress.
        on_flag: called once with the :class:`PhaseReport` when the ε ≫ ε* flag fires (main process).
        logger: where reports go (main process only); default ``advhooks.monitor``.
        reducer: sums a tensor across processes (e.g. ``lambda t: accelerator.reduce(t, "sum")``); default
            ``torch.distributed.all_reduce`` when a process group is initialised.
        sync_timeout: seconds ``epoch_end`` waits for the other ranks (gloo) before raising.
        level: coverage of the bands (default 0.8).
        verbose: log one line per epoch (INFO on the ``advhooks`` logger, shown by its default handler).
        recipe: what this run does, to compare with the benchmark's recipe (``batch_size``, ``epochs``,
            ``lr``, ``weight_decay``, ``optimizer``, ``schedule``, ``augmentation``, ``normalization``,
            ``n_train``, and ``model``: the model itself, compared by fingerprint). Each difference is named
            in one warning.
        attack: the attack A_ε of the paper's R̂: what :meth:`evaluate_with` evaluates the adversarial test
            loss and R̂ with (PGD-10 is customary, whatever the training attack), and what the run record
            names. Give it ``normalization=`` when the data is normalised outside the model.

    Example:
        >>> monitor = PhaseMonitor(benchmark=0.2, eps=8 / 255, warmup_epochs=1)
        >>> monitor.update(torch.tensor(0.5), batch_size=32)
        >>> report = monitor.epoch_end()
        >>> round(report.ratio, 2), report.regime, report.provisional
        (2.5, 'above eps*', True)
    """

    benchmark: CleanBenchmark | str | os.PathLike | float
    eps: float | None = None
    threshold: float = 1.5
    patience: int = 5
    warmup_epochs: int | None = None
    total_epochs: int | None = None
    min_delta: float = 0.01
    on_flag: Callable[[PhaseReport], None] | None = None
    logger: logging.Logger = field(default=log, repr=False)
    reducer: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    sync_timeout: float = 600.0
    level: float = DEFAULT_LEVEL
    verbose: bool = False
    recipe: Mapping[str, Any] | None = field(default=None, repr=False)
    attack: Attack | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.benchmark, (str, os.PathLike)):
            self.benchmark = CleanBenchmark.read(self.benchmark)
        if isinstance(self.benchmark, CleanBenchmark):
            r_star, r_star_se = self.benchmark.clean_test_loss, self.benchmark.test_loss_stderr
            n_test = self.benchmark.n_test
        elif isinstance(self.benchmark, (int, float)) and not isinstance(self.benchmark, bool):
            r_star, r_star_se, n_test = float(self.benchmark), 0.0, 1
        else:
            raise TypeError("benchmark must be a CleanBenchmark, a benchmark file path, or R*(0) as a number")
        self.clean_test_loss = check_positive("benchmark clean_test_loss (R*(0))", r_star)
        self._r_star = MeanEstimate(self.clean_test_loss, float(r_star_se) if math.isfinite(r_star_se) else 0.0,
                                    n_test, n_test)
        if self.eps is not None:
            self.eps = check_finite_nonnegative("eps", self.eps)
        self.threshold = check_positive("threshold", self.threshold)
        if self.threshold <= 1.0:
            raise ValueError(f"threshold must be > 1 (a ratio to R*(0)), got {self.threshold}")
        self.patience = check_positive_int("patience", self.patience)
        if self.total_epochs is not None:
            self.total_epochs = check_positive_int("total_epochs", self.total_epochs)
        if self.warmup_epochs is None:
            self.warmup_epochs = self.total_epochs // 2 + self.patience if self.total_epochs else 10
        elif isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}")
        self.min_delta = check_finite_nonnegative("min_delta", self.min_delta)
        self.sync_timeout = check_positive("sync_timeout", self.sync_timeout)
        if not 0.0 < float(self.level) < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level!r}")
        if self.on_flag is not None and not callable(self.on_flag):
            raise TypeError("on_flag must be callable as on_flag(report)")
        if self.recipe is not None and not isinstance(self.recipe, Mapping):
            raise TypeError(f"recipe must be a mapping, got {type(self.recipe).__name__}")
        if self.attack is not None and not isinstance(self.attack, Attack):
            raise TypeError(f"attack must be an advhooks attack (PGD, FGM), got {type(self.attack).__name__}")
        if self.verbose and self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        self._probe: _Probe | None = None
        self._evaluation: _Evaluation | None = None
        self.reset()
        if _is_main_process():
            self._warn_at_start()

    def _warn_at_start(self) -> None:
        if self.total_epochs is not None and self.warmup_epochs > self.total_epochs:
            self.logger.warning(
                "the run (%d epochs) is shorter than the monitor's warm-up (%d epochs): the eps >> eps* flag can "
                "never fire; pass warmup_epochs= (past your first learning-rate decay) or train longer",
                self.total_epochs, self.warmup_epochs)
        if self.recipe is not None:
            if isinstance(self.benchmark, CleanBenchmark):
                recipe = dict(self.recipe)
                recipe.setdefault("epochs", self.total_epochs)
                differences = recipe_differences(self.benchmark, recipe)
                if differences:
                    self.logger.warning("this run differs from the clean benchmark's recipe, so its ratio to "
                                        "R*(0) compares unlike things: %s", "; ".join(differences))

    # -- state -----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all epochs (a new run)."""
        self.epoch = 0
        self.ratios: list[float] = []  # the running-mean ratio of each epoch
        self.losses: list[float] = []  # the running mean of each epoch
        self.test_losses: list[float | None] = []  # the adversarial test loss of each epoch, when known
        self.verdict_ratios: list[float] = []  # the verdict's ρ of each epoch
        self.rhat: dict[str, Any] | None = None  # R̂ of θ̂: {"epoch", "mean", "stderr", "n", "population", "kind"}
        self._theta_hat: dict[str, torch.Tensor] | None = None  # θ̂'s weights while its R̂ is pending
        self.flag_epoch: int | None = None
        self.eps_star_lower_bound: float | None = None
        self.last_eps: float | None = self.eps
        self.evaluation_seconds = {"test": 0.0, "rhat": 0.0}  # wall time of the monitor's own evaluations
        self._reset_accumulators()

    def _reset_accumulators(self) -> None:
        # Sums live on the device of the losses; nothing is read on the host until epoch_end().
        self._sums: dict[str, torch.Tensor | float] = dict.fromkeys(_SUMS, 0.0)

    @property
    def has_updates(self) -> bool:
        """Whether the open epoch has seen a batch (reads the count: one host sync)."""
        return float(self._sums["count"]) + float(self._sums["nonfinite"]) > 0

    # -- per batch -------------------------------------------------------------------------------
    def update(self, output: Any, batch_size: int | None = None) -> None:
        """Add one batch: a :class:`~advhooks.StepOutput`, or a mean loss tensor and its batch size.

        No host-device synchronisation: the sums stay on the device until :meth:`epoch_end`. A batch whose
        loss is NaN or inf is counted apart and left out of the mean.
        """
        if hasattr(output, "adv_loss") and hasattr(output, "batch_size"):
            loss, n = output.adv_loss, output.batch_size
            if getattr(output, "eps", None) is not None:
                self.last_eps = float(output.eps)
        else:
            if batch_size is None:
                raise ValueError("update(loss, batch_size): batch_size is required with a bare loss")
            loss, n = output, batch_size
        if not isinstance(loss, torch.Tensor):
            loss = torch.tensor(float(loss))
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {n!r}")
        loss = loss.detach().to(torch.float64)
        if loss.numel() != 1:
            raise ValueError(f"update() needs the batch's mean loss (one value), got shape {tuple(loss.shape)}")
        finite = torch.isfinite(loss)
        added = {"loss_sum": torch.where(finite, loss * n, 0.0), "count": finite.to(torch.float64) * n,
                 "nonfinite": (~finite).to(torch.float64) * n}
        for name in _SUMS:
            self._sums[name] = self._sums[name] + added[name]

    # -- evaluation of the paper's R̂ -------------------------------------------------------------
    def evaluate_with(self, model: nn.Module, train_data: Any, test_data: Any = None, *,
                      attack: Attack | None = None, train_subset: int | None = 512, test_subset: int | None = None,
                      seed: int = 0, batch_size: int = 256, device: Any = None) -> None:
        """Let the monitor evaluate θ̂ and the paper's R̂ itself.

        Each epoch it evaluates the adversarial test loss on ``test_data`` (unless the loop passes
        ``epoch_end(adv_test_loss=...)``); when it is the smallest so far, the current weights are θ̂ and
        R̂(θ̂, ε) is evaluated at those fixed weights on a fixed random ``train_subset`` of ``train_data``
        (its sampling error enters the band; ``None``: the whole training set).

        Args:
            model: the model being trained.
            train_data / test_data: datasets without augmentation (``test_data`` may be ``None`` when the loop
                passes the adversarial test loss).
            attack: the evaluation attack; default: the monitor's ``attack``, else PGD-10 in L∞ at the
                epoch's ε with bounds (0, 1) and no normalisation (pass one for normalised inputs).
            train_subset / test_subset: subset sizes (``None``: the whole set), drawn once with ``seed``.
            batch_size / device: for the evaluation passes.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        attack = attack or self.attack
        if attack is not None and not isinstance(attack, Attack):
            raise TypeError(f"attack must be an advhooks attack, got {type(attack).__name__}")
        subsets = [None if size is None else FixedSubset(check_positive_int("subset size", size), seed)
                   for size in (train_subset, test_subset)]
        self._evaluation = _Evaluation(model, train_data, test_data, attack, subsets[0], subsets[1],
                                       check_positive_int("batch_size", batch_size), device)

    def _evaluation_attack(self) -> Attack:
        ev = self._evaluation
        return ev.attack if ev.attack is not None else PGD(self.last_eps or 0.0, steps=10)

    def _learn_test_loss(self, adv_test_loss: float | None) -> float | None:
        ev = self._evaluation
        if adv_test_loss is not None:
            return check_finite_nonnegative("adv_test_loss", adv_test_loss)
        if ev is None or ev.test_data is None:
            return None
        started = time.perf_counter()
        estimate, _ = evaluate_adversarial_loss(ev.model, ev.test_data, self._evaluation_attack(), eps=self.last_eps,
                                                subset=ev.test_subset, batch_size=ev.batch_size, device=ev.device)
        self.evaluation_seconds["test"] += time.perf_counter() - started
        return estimate.mean

    def _update_rhat(self, test_loss: float | None, running_mean: float) -> None:
        """θ̂ moves to this epoch when its adversarial test loss is the smallest so far.

        Its weights are kept (a copy on their device, no host sync) and R̂ at those fixed weights is
        evaluated once the warm-up is over (early epochs improve nearly every time and the verdict is
        provisional then anyway), at the last planned epoch, and when a record is written. Until then the
        verdict uses θ̂'s running mean.
        """
        known = [t for t in self.test_losses[:-1] if t is not None]
        if test_loss is None or (known and test_loss >= min(known)):
            self._settle_rhat()
            return
        ev = self._evaluation
        self.rhat = {"epoch": self.epoch, "mean": running_mean, "stderr": 0.0, "n": None, "population": None,
                     "kind": "running mean"}
        if ev is not None and ev.train_data is not None:
            self._theta_hat = {k: v.detach().clone() for k, v in ev.model.state_dict().items()}
        self._settle_rhat()

    def _settle_rhat(self, force: bool = False) -> None:
        """Evaluate the pending R̂ of θ̂'s kept weights when it is due (see :meth:`_update_rhat`)."""
        ev, weights = self._evaluation, self._theta_hat
        due = force or self.epoch >= self.warmup_epochs or (self.total_epochs is not None
                                                             and self.epoch >= self.total_epochs)
        if weights is None or ev is None or not due:
            return
        started = time.perf_counter()
        current = {k: v.detach().clone() for k, v in ev.model.state_dict().items()}
        try:
            ev.model.load_state_dict(weights)
            est, _ = evaluate_adversarial_loss(ev.model, ev.train_data, self._evaluation_attack(), eps=self.last_eps,
                                               subset=ev.train_subset, batch_size=ev.batch_size, device=ev.device)
        finally:
            ev.model.load_state_dict(current)
        self.evaluation_seconds["rhat"] += time.perf_counter() - started
        self.rhat.update(mean=est.mean, stderr=est.stderr, n=est.n, population=est.population, kind="fixed weights")
        self._theta_hat = None

    def _verdict(self) -> tuple[MeanEstimate | None, str]:
        """The R̂ the verdict uses and its kind."""
        if self.rhat is not None:
            r = self.rhat
            return MeanEstimate(r["mean"], r["stderr"], r["n"] or 1, r["population"] or 1), r["kind"]
        finite = [v for v in self.losses if math.isfinite(v)]
        return (MeanEstimate(min(finite), 0.0, 1, 1) if finite else None), "provisional"

    # -- per epoch -------------------------------------------------------------------------------
    def epoch_end(self, adv_test_loss: float | None = None) -> PhaseReport:
        """Close the epoch: reduce across ranks, learn θ̂, decide the regime from ρ's band, log.

        Args:
            adv_test_loss: this epoch's adversarial test loss, when the loop measures it (else the monitor
                evaluates it with :meth:`evaluate_with`, or gives a provisional verdict).
        """
        totals = self._reduced_totals()
        total, count, nonfinite = (totals[name] for name in _SUMS)
        if count == 0 and nonfinite == 0:
            raise ValueError("epoch_end() called before any update() in this epoch")
        self._reset_accumulators()
        self.epoch += 1
        mean = total / count if count > 0 else math.nan
        self.losses.append(mean)
        self.ratios.append(mean / self.clean_test_loss)
        test_loss = self._learn_test_loss(adv_test_loss)
        self.test_losses.append(test_loss)
        self._update_rhat(test_loss, mean)
        probe = self._run_probe_if_due()
        return self._report(mean, int(count), int(nonfinite), probe, test_loss)

    def _report(self, mean: float, count: int, nonfinite: int, probe: dict | None,
                test_loss: float | None) -> PhaseReport:
        rhat, kind = self._verdict()
        if rhat is None or rhat.mean <= 0 or not math.isfinite(rhat.mean):
            ratio, low, high = math.nan, math.nan, math.nan
        else:
            ratio, low, high = ratio_interval(rhat, self._r_star, self.level)
        self.verdict_ratios.append(ratio)
        history = _comparable(self.verdict_ratios)
        plateaued = len(history) > self.patience and min(history) >= min(
            history[: len(history) - self.patience]) * (1.0 - self.min_delta)
        warmed_up = self.epoch >= self.warmup_epochs
        regime, reason = decide_regime(low, high, threshold=self.threshold, far_allowed=warmed_up and plateaued)
        if regime == ABOVE and low >= self.threshold and warmed_up:
            reason += " (still improving: no eps >> eps* verdict yet)"
        flagged = regime == FAR_ABOVE and self.flag_epoch is None
        if flagged:
            self.flag_epoch = self.epoch
        caveats = []
        if kind == "provisional":
            caveats.append("provisional: no adversarial test loss, so the verdict uses the best running mean of "
                           "the training loss (give the monitor evaluate_with(...) or epoch_end(adv_test_loss=...))")
        elif kind == "running mean" and self._evaluation is not None and self._evaluation.train_data is not None:
            caveats.append("R-hat at theta-hat's fixed weights is evaluated once the warm-up is over; until then it "
                           "is theta-hat's running mean")
        elif kind == "running mean":
            caveats.append("R-hat is the running mean of the early-stopped epoch (evaluate_with(model, train_data) "
                           "gives the paper's fixed-weights value)")
        if not warmed_up and regime != CLEAN_LIKE:
            caveats.append(f"warm-up {self.epoch}/{self.warmup_epochs}")
        if nonfinite:
            caveats.append(f"{nonfinite} samples had a NaN/inf loss and were left out of the mean")
        explanation = reason + "".join(f"; {c}" for c in caveats)
        if self.eps_star_lower_bound is not None:
            explanation += f"; probe: eps* >= {format_eps(self.eps_star_lower_bound)}"
        finite = _comparable(self.ratios)
        best = min(finite)
        report = PhaseReport(
            epoch=self.epoch, eps=self.last_eps, adv_train_loss=mean, clean_test_loss=self.clean_test_loss,
            ratio=ratio, best_ratio=best if math.isfinite(best) else math.nan,
            best_epoch=finite.index(best) + 1 if math.isfinite(best) else 0, regime=regime, flagged=flagged,
            flag_epoch=self.flag_epoch, eps_star_lower_bound=self.eps_star_lower_bound, probe=probe,
            samples=count, explanation=explanation, nonfinite_samples=nonfinite, ratio_interval=(low, high),
            rhat=rhat.mean if rhat is not None else math.nan, rhat_stderr=rhat.stderr if rhat is not None else math.nan,
            rhat_kind=kind, adv_test_loss=test_loss,
            early_stopped_epoch=self.rhat["epoch"] if self.rhat is not None else None,
            provisional=kind == "provisional" or not warmed_up, level=self.level,
        )
        if _is_main_process():
            self._log(report, reason)
        return report

    def _log(self, report: PhaseReport, reason: str) -> None:
        eps_txt = "?" if report.eps is None else format_eps(report.eps)
        low, high = report.ratio_interval
        where = "" if report.early_stopped_epoch is None else f", theta-hat = epoch {report.early_stopped_epoch}"
        self.logger.info("epoch %d: R-hat %.4f (%s%s) = %.3f x R*(0) [%.3f, %.3f] (eps %s): %s%s — %s", report.epoch,
                         report.rhat, report.rhat_kind, where, report.ratio, low, high, eps_txt, report.regime,
                         " (provisional)" if report.provisional else "", report.explanation)
        if report.nonfinite_samples:
            self.logger.warning("epoch %d: %d samples had a NaN/inf adversarial loss (left out of the mean)",
                                report.epoch, report.nonfinite_samples)
        if report.flagged:
            self.logger.warning("eps = %s looks >> eps*: %s. %s", eps_txt, reason, ADVICE)
            if self.on_flag is not None:
                self.on_flag(report)

    def _reduced_totals(self) -> dict[str, float]:
        sums = [self._sums[name] for name in _SUMS]
        use_dist = self.reducer is None and _is_distributed()
        if self.reducer is None and not use_dist:
            return {name: float(v) for name, v in zip(_SUMS, sums, strict=True)}
        device = next((v.device for v in sums if isinstance(v, torch.Tensor)), torch.device("cpu"))
        if use_dist and dist.get_backend() == "nccl" and device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in sums])
        self._wait_for_all_ranks()
        if use_dist:
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        else:
            packed = self.reducer(packed)
        return {name: float(v) for name, v in zip(_SUMS, packed.tolist(), strict=True)}

    def _wait_for_all_ranks(self) -> None:
        """Fail with a clear error, not a hang, when another rank never reaches ``epoch_end`` (gloo)."""
        if not _is_distributed() or dist.get_backend() != "gloo":
            return  # NCCL: rely on its own watchdog timeout
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=self.sync_timeout), wait_all_ranks=True)
        except RuntimeError as err:
            raise RuntimeError(
                f"PhaseMonitor.epoch_end on rank {dist.get_rank()}: not every rank reached epoch_end within "
                f"{self.sync_timeout:g} s (a rank crashed, raised, or skipped epoch_end): {err}"
            ) from err

    # -- probe -----------------------------------------------------------------------------------
    def enable_probe(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                     attack: Attack | None = None, ladder: Sequence[float] | None = None, every: int = 10,
                     batch_size: int = 256) -> None:
        """Probe a lower bound on ε* every ``every`` epochs on a fixed subset of the training data.

        Args:
            model: the model being trained.
            inputs / targets: the fixed probe subset (e.g. 256 training samples), on the model's device.
            attack: the attack to evaluate with; default PGD-5 in L∞ with random start. Its ε is replaced
                by each rung of the ladder.
            ladder: strengths ε′ ≤ ε to test; default ``eps × (1/8, 1/4, 1/2, 1)``.
            every: probe every this many epochs (and at the first epoch).
            batch_size: probe batch size.
        """
        if ladder is None:
            if self.eps is None:
                raise ValueError("enable_probe needs ladder= when the monitor has no eps")
            ladder = [self.eps * f for f in (1 / 8, 1 / 4, 1 / 2, 1.0)]
        ladder = sorted(check_finite_nonnegative("ladder value", e) for e in ladder)
        if not ladder:
            raise ValueError("ladder must not be empty")
        if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
            raise ValueError("probe inputs and targets must be non-empty and of the same length")
        self._probe = _Probe(model, inputs, targets, attack or PGD(ladder[-1], steps=5), ladder,
                             check_positive_int("every", every), check_positive_int("batch_size", batch_size))

    def _run_probe_if_due(self) -> dict[str, float] | None:
        p = self._probe
        if p is None or (self.epoch - 1) % p.every != 0:
            return None
        crit = per_sample(None)
        losses: dict[str, float] = {}
        for eps in p.ladder:
            total = torch.zeros((), dtype=torch.float64, device=p.inputs.device)
            for i in range(0, p.inputs.shape[0], p.batch_size):
                x, y = p.inputs[i : i + p.batch_size], p.targets[i : i + p.batch_size]
                adv = p.attack(p.model, x, y, eps=eps)
                with torch.no_grad(), eval_mode(p.model):
                    total += crit(logits_of(p.model(adv)), y).double().sum()
            losses[f"{eps:.6g}"] = float(total) / p.inputs.shape[0]
        passing = [e for e in p.ladder if losses[f"{e:.6g}"] <= self.clean_test_loss]
        if passing:
            bound = max(passing)
            if self.eps_star_lower_bound is None or bound > self.eps_star_lower_bound:
                self.eps_star_lower_bound = bound
        return losses

    # -- run record ----------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """The run as plain JSON values: what ``estimate-eps-star --method runs`` combines into ε*.

        Holds ε, the attack, the norm, per epoch the running mean, the adversarial test loss and ρ, the
        early-stopped epoch and the R̂ of θ̂ with its standard error, the run's recipe and the benchmark's
        fingerprint (records of another benchmark are refused when combined).
        """
        self._settle_rhat(force=True)
        attack = self.attack or (self._evaluation.attack if self._evaluation is not None else None)
        recipe = {k: v for k, v in dict(self.recipe or {}).items() if k != "model"}
        if self.recipe and isinstance(self.recipe.get("model"), nn.Module):
            recipe["model_hash"] = model_fingerprint(self.recipe["model"])["hash"]
        recipe.setdefault("epochs", self.total_epochs)
        return {
            "schema": RUN_RECORD_SCHEMA,
            "eps": self.last_eps if self.last_eps is not None else self.eps,
            "attack": None if attack is None else repr(attack),
            "norm": None if attack is None else attack.norm,
            "epochs": [{"epoch": i + 1, "running_mean": _plain(m), "adv_test_loss": t, "ratio": _plain(r)}
                       for i, (m, t, r) in enumerate(zip(self.losses, self.test_losses, self.verdict_ratios,
                                                         strict=True))],
            "early_stopped_epoch": None if self.rhat is None else self.rhat["epoch"],
            "rhat": None if self.rhat is None else dict(self.rhat),
            "recipe": recipe,
            "benchmark": benchmark_reference(self.benchmark),
            "level": self.level,
            "evaluation_seconds": dict(self.evaluation_seconds),
        }

    def save_record(self, path: str | os.PathLike) -> Path:
        """Write :meth:`record` as JSON, atomically (main process only; returns the path)."""
        path = Path(path)
        if _is_main_process():
            write_json_atomic(path, self.record())
        return path

    def plot(self, path: str | os.PathLike) -> Path:
        """Draw the run: the running mean, the adversarial test loss and R̂ of θ̂ against R*(0) with both bands."""
        from .plotting import plot_run

        return plot_run(self.record(), self.clean_test_loss, self._r_star.interval(self.level), path)

    # -- checkpointing ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain values: the epoch history, θ̂'s R̂, the flag, the lower bound and this rank's open-epoch sums."""
        state = {
            "clean_test_loss": self.clean_test_loss,
            "epoch": self.epoch,
            "ratios": list(self.ratios),
            "losses": list(self.losses),
            "test_losses": list(self.test_losses),
            "verdict_ratios": list(self.verdict_ratios),
            "rhat": None if self.rhat is None else dict(self.rhat),
            "flag_epoch": self.flag_epoch,
            "eps_star_lower_bound": self.eps_star_lower_bound,
            "last_eps": self.last_eps,
            "rank": dist.get_rank() if _is_distributed() else 0,
        }
        state.update({f"open_{name}": float(self._sums[name]) for name in _SUMS})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (validated; the benchmark must match)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        required = {"clean_test_loss", "epoch", "ratios", "losses", "flag_epoch", "eps_star_lower_bound",
                    *(f"open_{name}" for name in _SUMS)}
        missing = required - state.keys()
        if missing:
            raise ValueError(f"monitor state lacks {sorted(missing)}")
        if not math.isclose(float(state["clean_test_loss"]), self.clean_test_loss, rel_tol=1e-9):
            raise ValueError(
                f"monitor state was recorded against R*(0) = {state['clean_test_loss']}, this monitor uses "
                f"{self.clean_test_loss}"
            )
        epoch = int(state["epoch"])
        histories = {k: list(state.get(k) or ([None] * epoch if k == "test_losses" else []))
                     for k in ("ratios", "losses", "test_losses", "verdict_ratios")}
        if any(len(v) != epoch for k, v in histories.items() if k != "verdict_ratios" or v):
            raise ValueError("monitor state is inconsistent: history length differs from the epoch count")
        self.epoch = epoch
        self.ratios = [float(r) for r in histories["ratios"]]
        self.losses = [float(v) for v in histories["losses"]]
        self.test_losses = [None if t is None else float(t) for t in histories["test_losses"]]
        self.verdict_ratios = [float(r) for r in histories["verdict_ratios"]] or list(self.ratios)
        self.rhat = None if state.get("rhat") is None else dict(state["rhat"])
        self.flag_epoch = None if state["flag_epoch"] is None else int(state["flag_epoch"])
        bound = state["eps_star_lower_bound"]
        self.eps_star_lower_bound = None if bound is None else float(bound)
        last = state.get("last_eps")
        self.last_eps = None if last is None else float(last)
        # The open epoch's sums are this rank's own. Frameworks that save one checkpoint from rank 0 hand
        # rank 0's sums to every rank: only rank 0 keeps them, so nothing is counted twice (the epoch mean
        # then covers rank 0's samples from before the save and every rank's after it).
        own = not _is_distributed() or int(state.get("rank", 0)) == dist.get_rank()
        self._reset_accumulators()
        if own:
            self._sums = {name: float(state[f"open_{name}"]) for name in _SUMS}


def _plain(v: float) -> float | None:
    """A float for JSON: NaN and inf become ``None``."""
    return v if math.isfinite(v) else None
