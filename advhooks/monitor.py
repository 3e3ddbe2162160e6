"""``PhaseMonitor``: the adversarial training loss against the clean benchmark R*(0), epoch by epoch.

Framework-free: feed it each batch's :class:`~advhooks.StepOutput` (or a loss and a batch size) and
call :meth:`PhaseMonitor.epoch_end`; it returns a :class:`PhaseReport` with the ratio
ρ = R̂(θ_t, ε) / R*(0) and the regime:

- ``clean-like``: the best epoch so far has R̂(θ_t, ε) ≤ R*(0). Because θ̂(ε) minimises R̂(·, ε), this
  proves ε ≤ ε* (up to the attack's approximation): adversarial training behaves like clean training.
- ``transition``: above the benchmark, but not (yet) far above it, or still improving.
- ``eps >> eps*``: after ``warmup_epochs``, the best ρ has stopped improving (less than ``min_delta``
  relative improvement over ``patience`` epochs) at or above ``threshold``.

Why ``threshold = 1.5``: in the paper's Table 1 (PreActResNet18, CIFAR-10, ε* ≈ 0.5/255) ρ is 0.98 at
ε ≈ ε*, 1.17 at 2ε* and 1.86 at 4ε*. A plateau at 1.5 × R*(0) therefore sits between 2ε* and 4ε*: the
flag means ε is several times ε*. Why a warm-up and a plateau: early in training every ε has a loss far
above R*(0) (the loss starts at ln(classes)), and with a step learning-rate schedule the loss drops at
each decay; the paper's selected epochs are 101–104 of 200, right after the first decay at epoch 100.
Set ``warmup_epochs`` past your first decay; when only ``total_epochs`` is given the default is
``total_epochs // 2 + patience`` (the paper's first decay, then ``patience`` epochs at the lower rate),
else 10, which suits short constant-rate runs.

The optional probe (off by default) evaluates the current model's adversarial loss at a ladder of
ε′ ≤ ε on a fixed subset of the training data every ``every`` epochs; the largest ε′ whose loss is
≤ R*(0) is a lower bound on ε* (see DESIGN.md §1). Its cost, in forward+input-gradient passes, is
``len(ladder) × (steps + 1) × probe size`` per probe; the defaults (4 rungs, PGD-5, 256 samples,
every 10 epochs) stay under 5 % of PGD-10 training for training sets of 1,000 samples and more.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ._outputs import logits_of
from ._validation import check_finite_nonnegative, check_positive, check_positive_int
from .attacks import PGD, Attack, eval_mode
from .attacks.objectives import per_sample
from .benchmark import CleanBenchmark
from .schedules import format_eps

__all__ = ["REGIMES", "PhaseMonitor", "PhaseReport", "decide_regime"]

log = logging.getLogger(__name__)

CLEAN_LIKE, TRANSITION, FAR_ABOVE = "clean-like", "transition", "eps >> eps*"
REGIMES = (CLEAN_LIKE, TRANSITION, FAR_ABOVE)

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
        adv_train_loss: R̂(θ_t, ε), the epoch mean of the adversarial training loss.
        clean_test_loss: R*(0) from the benchmark.
        ratio: ρ = adv_train_loss / clean_test_loss.
        best_ratio / best_epoch: the smallest ρ so far and its epoch.
        regime: ``"clean-like"``, ``"transition"`` or ``"eps >> eps*"``.
        flagged: the ε ≫ ε* flag fired at this epoch (it fires once per run).
        flag_epoch: the epoch it fired, if it has.
        eps_star_lower_bound: the probe's lower bound on ε* so far (``None`` without a probe).
        probe: the probe's ``{ε′: loss}`` when it ran this epoch.
        samples: samples whose loss entered the epoch mean (all ranks).
        nonfinite_samples: samples of batches whose loss was NaN or inf (all ranks). They are left out of
            the mean and logged as a warning; an epoch with no finite batch has a NaN loss and ratio.
        explanation: one or two sentences for people.
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

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for loggers and JSON."""
        return asdict(self)


def _comparable(ratios: Sequence[float]) -> list[float]:
    """Ratios for min/plateau comparisons: a NaN or inf epoch (diverged) counts as +inf, i.e. no progress."""
    return [r if math.isfinite(r) else math.inf for r in ratios]


def decide_regime(ratios: Sequence[float], *, threshold: float = 1.5, patience: int = 5, warmup_epochs: int = 10,
                  min_delta: float = 0.01) -> tuple[str, str]:
    """The regime after the epochs whose ratios ρ = R̂/R*(0) are given, and why (a pure function).

    Args:
        ratios: ρ of each epoch so far, oldest first; NaN or inf (a diverged epoch) counts as no progress.
        threshold: ρ above which a plateau means ε ≫ ε*.
        patience: epochs without ``min_delta`` relative improvement of the best ρ that make a plateau.
        warmup_epochs: no ε ≫ ε* verdict before this many epochs.
        min_delta: relative improvement of the best ρ that counts as progress.

    Example:
        >>> decide_regime([3.0, 2.0, 0.9])[0]
        'clean-like'
        >>> decide_regime([3.0] + [2.5] * 12, warmup_epochs=5, patience=3)[0]
        'eps >> eps*'
    """
    if not ratios:
        raise ValueError("ratios must not be empty")
    ratios = _comparable(ratios)
    best = min(ratios)
    epoch = len(ratios)
    if math.isinf(best):
        return TRANSITION, "no epoch has had a finite adversarial training loss yet (diverged?)"
    if best <= 1.0:
        return CLEAN_LIKE, (f"the adversarial training loss reached {best:.3f} × R*(0) <= R*(0), so eps <= eps* "
                            "for this configuration: adversarial training behaves like clean training")
    plateaued = False
    if epoch > patience:
        before = min(ratios[: epoch - patience])
        plateaued = best >= before * (1.0 - min_delta)
    if epoch >= warmup_epochs and plateaued and best >= threshold:
        return FAR_ABOVE, (f"the adversarial training loss has stopped improving at {best:.3f} × R*(0) "
                           f"(>= {threshold:g}): eps looks several times eps*")
    if epoch < warmup_epochs:
        why = f"warm-up ({epoch}/{warmup_epochs} epochs)"
    elif not plateaued:
        why = "still improving"
    else:
        why = f"plateau below {threshold:g} × R*(0): eps is near eps* (between eps* and a few times it)"
    return TRANSITION, f"best ratio {best:.3f} > 1, {why}"


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
class PhaseMonitor:
    """Watch the adversarial training loss against the clean benchmark R*(0).

    Args:
        benchmark: a :class:`~advhooks.benchmark.CleanBenchmark`, the path of a benchmark file, or R*(0)
            as a number.
        eps: the training attack strength, for the reports (taken from the step outputs when given).
        threshold: ρ above which a plateau means ε ≫ ε* (default 1.5; see the module docs).
        patience: epochs without progress that make a plateau.
        warmup_epochs: no ε ≫ ε* verdict before this many epochs; default ``total_epochs // 2 + patience``
            when ``total_epochs`` is given, else 10.
        total_epochs: the planned number of epochs (only used for the default warm-up).
        min_delta: relative improvement of the best ρ that counts as progress.
        on_flag: called once with the :class:`PhaseReport` when the ε ≫ ε* flag fires (main process).
        logger: where reports go (main process only); default ``advhooks.monitor``.
        reducer: sums a tensor across processes (e.g. ``lambda t: accelerator.reduce(t, "sum")``); default
            ``torch.distributed.all_reduce`` when a process group is initialised.
        sync_timeout: seconds ``epoch_end`` waits for the other ranks (gloo process groups, through
            ``torch.distributed.monitored_barrier``) before raising an error that says so, instead of
            hanging when a rank has died or skipped the epoch's end.

    Example:
        >>> monitor = PhaseMonitor(benchmark=0.2, eps=8 / 255, warmup_epochs=1)
        >>> monitor.update(torch.tensor(0.5), batch_size=32)
        >>> report = monitor.epoch_end()
        >>> round(report.ratio, 2), report.regime
        (2.5, 'transition')
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

    def __post_init__(self) -> None:
        if isinstance(self.benchmark, (str, os.PathLike)):
            self.benchmark = CleanBenchmark.read(self.benchmark)
        if isinstance(self.benchmark, CleanBenchmark):
            r_star = self.benchmark.clean_test_loss
        elif isinstance(self.benchmark, (int, float)) and not isinstance(self.benchmark, bool):
            r_star = float(self.benchmark)
        else:
            raise TypeError("benchmark must be a CleanBenchmark, a benchmark file path, or R*(0) as a number")
        self.clean_test_loss = check_positive("benchmark clean_test_loss (R*(0))", r_star)
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
        if self.on_flag is not None and not callable(self.on_flag):
            raise TypeError("on_flag must be callable as on_flag(report)")
        self._probe: _Probe | None = None
        self.reset()

    # -- state -----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all epochs (a new run)."""
        self.epoch = 0
        self.ratios: list[float] = []
        self.losses: list[float] = []
        self.flag_epoch: int | None = None
        self.eps_star_lower_bound: float | None = None
        self.last_eps: float | None = self.eps
        self._reset_accumulators()

    def _reset_accumulators(self) -> None:
        # Sums live on the device of the losses; nothing is read on the host until epoch_end().
        self._loss_sum: torch.Tensor | float = 0.0
        self._count: torch.Tensor | float = 0.0
        self._nonfinite: torch.Tensor | float = 0.0

    @property
    def has_updates(self) -> bool:
        """Whether the open epoch has seen a batch (reads the count: one host sync)."""
        return float(self._count) + float(self._nonfinite) > 0

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
        self._loss_sum = self._loss_sum + torch.where(finite, loss * n, 0.0)
        self._count = self._count + finite.to(torch.float64) * n
        self._nonfinite = self._nonfinite + (~finite).to(torch.float64) * n

    # -- per epoch -------------------------------------------------------------------------------
    def epoch_end(self) -> PhaseReport:
        """Close the epoch: reduce across ranks, decide the regime, log, run the probe if due."""
        total, count, nonfinite = self._reduced_totals()
        if count == 0 and nonfinite == 0:
            raise ValueError("epoch_end() called before any update() in this epoch")
        self._reset_accumulators()
        self.epoch += 1
        mean = total / count if count > 0 else math.nan
        ratio = mean / self.clean_test_loss
        self.losses.append(mean)
        self.ratios.append(ratio)
        probe = self._run_probe_if_due()
        regime, reason = decide_regime(self.ratios, threshold=self.threshold, patience=self.patience,
                                       warmup_epochs=self.warmup_epochs, min_delta=self.min_delta)
        flagged = regime == FAR_ABOVE and self.flag_epoch is None
        if flagged:
            self.flag_epoch = self.epoch
        finite = _comparable(self.ratios)
        best = min(finite)
        explanation = reason
        if nonfinite:
            explanation = (f"{int(nonfinite)} samples had a NaN/inf loss and were left out of the mean; "
                           + explanation)
        if self.eps_star_lower_bound is not None:
            explanation += f"; probe: eps* >= {format_eps(self.eps_star_lower_bound)}"
        report = PhaseReport(
            epoch=self.epoch, eps=self.last_eps, adv_train_loss=mean, clean_test_loss=self.clean_test_loss,
            ratio=ratio, best_ratio=best if math.isfinite(best) else math.nan,
            best_epoch=finite.index(best) + 1 if math.isfinite(best) else 0, regime=regime, flagged=flagged,
            flag_epoch=self.flag_epoch, eps_star_lower_bound=self.eps_star_lower_bound, probe=probe,
            samples=int(count), explanation=explanation, nonfinite_samples=int(nonfinite),
        )
        if _is_main_process():
            eps_txt = "?" if report.eps is None else format_eps(report.eps)
            self.logger.info("epoch %d: adv train loss %.4f = %.3f x R*(0) (eps %s): %s — %s", report.epoch,
                             mean, ratio, eps_txt, regime, explanation)
            if nonfinite:
                self.logger.warning("epoch %d: %d samples had a NaN/inf adversarial loss (left out of the mean)",
                                    report.epoch, int(nonfinite))
            if flagged:
                self.logger.warning("eps = %s looks >> eps*: %s. %s", eps_txt, reason, ADVICE)
                if self.on_flag is not None:
                    self.on_flag(report)
        return report

    def _reduced_totals(self) -> tuple[float, float, float]:
        sums = (self._loss_sum, self._count, self._nonfinite)
        use_dist = self.reducer is None and _is_distributed()
        if self.reducer is None and not use_dist:
            return tuple(float(v) for v in sums)
        device = next((v.device for v in sums if isinstance(v, torch.Tensor)), torch.device("cpu"))
        if use_dist and dist.get_backend() == "nccl" and device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in sums])
        self._wait_for_all_ranks()
        if use_dist:
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        else:
            packed = self.reducer(packed)
        return float(packed[0]), float(packed[1]), float(packed[2])

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

    # -- checkpointing ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain values: the epoch history, the flag, the lower bound and this rank's open-epoch sums."""
        return {
            "clean_test_loss": self.clean_test_loss,
            "epoch": self.epoch,
            "ratios": list(self.ratios),
            "losses": list(self.losses),
            "flag_epoch": self.flag_epoch,
            "eps_star_lower_bound": self.eps_star_lower_bound,
            "last_eps": self.last_eps,
            "open_loss_sum": float(self._loss_sum),
            "open_count": float(self._count),
            "open_nonfinite": float(self._nonfinite),
            "rank": dist.get_rank() if _is_distributed() else 0,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (validated; the benchmark must match)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        required = {"clean_test_loss", "epoch", "ratios", "losses", "flag_epoch", "eps_star_lower_bound",
                    "open_loss_sum", "open_count"}
        missing = required - state.keys()
        if missing:
            raise ValueError(f"monitor state lacks {sorted(missing)}")
        if not math.isclose(float(state["clean_test_loss"]), self.clean_test_loss, rel_tol=1e-9):
            raise ValueError(
                f"monitor state was recorded against R*(0) = {state['clean_test_loss']}, this monitor uses "
                f"{self.clean_test_loss}"
            )
        ratios = [float(r) for r in state["ratios"]]
        losses = [float(v) for v in state["losses"]]
        epoch = int(state["epoch"])
        if len(ratios) != epoch or len(losses) != epoch:
            raise ValueError("monitor state is inconsistent: history length differs from the epoch count")
        self.epoch, self.ratios, self.losses = epoch, ratios, losses
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
            self._loss_sum = float(state["open_loss_sum"])
            self._count = float(state["open_count"])
            self._nonfinite = float(state.get("open_nonfinite", 0.0))

