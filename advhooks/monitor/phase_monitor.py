"""``PhaseMonitor``: per batch, the adversarial training loss; per epoch, the verdict against R*(0)."""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._distributed import is_main_process
from ..attacks import Attack
from ..plotting import plot_run
from .budget import DEFAULT_BUDGET, SELECTION_STEPS
from .comparison import BenchmarkComparison
from .health import RunHealth
from .history import EpochHistory
from .probe import EpsStarProbe
from .record import run_record, write_record
from .report import ADVICE, FAR_ABOVE, PhaseReport, caveats, judge, log_report, ratio_band
from .rhat import EarlyStoppedRisk, Evaluation
from .settings import MonitorSettings
from .sums import EpochSums, batch_loss

__all__ = ["PhaseMonitor", "evaluation_options"]

log = logging.getLogger("advhooks.monitor")


@dataclass
class PhaseMonitor(MonitorSettings):
    """Watch the paper's R̂ of the early-stopped model against the clean benchmark R*(0).

    Its settings (``benchmark``, ``eps``, ``threshold``, ``patience``, ``warmup_epochs``, ``total_epochs``,
    ``min_delta``, ``on_flag``, ``logger``, ``reducer``, ``sync_timeout``, ``level``, ``verbose``, ``recipe``,
    ``strict``, ``attack``, ``eps_star``, ``study``, ``setup``) are documented on
    :class:`~advhooks.monitor.settings.MonitorSettings`, where they are declared with their defaults.

    Example:
        >>> monitor = PhaseMonitor(benchmark=0.2, eps=8 / 255, warmup_epochs=1)
        >>> monitor.update(torch.tensor(0.5), batch_size=32)
        >>> report = monitor.epoch_end()
        >>> round(report.ratio, 2), report.regime, report.provisional
        (2.5, 'above eps*', True)
    """

    def __post_init__(self) -> None:
        super().__post_init__()  # the settings, validated
        self._sums, self._risk, self._probe = EpochSums(), EarlyStoppedRisk(), None
        self._comparison = BenchmarkComparison(self.benchmark, self.logger, self.strict)
        self._comparison.check_given(self.recipe, self.setup, self.total_epochs)
        self._health = RunHealth(self.benchmark, self._comparison)
        self.reset()

    def reset(self) -> None:
        """Forget all epochs (a new run)."""
        self.history = EpochHistory()
        self._risk.reset()
        self.flag_epoch, self.eps_star_lower_bound = None, None  # (int | None, float | None)
        self.last_eps: float | None = self.eps
        self._health.warned.clear()
        self._sums.reset()

    epoch = property(lambda self: self.history.epochs, doc="Closed epochs.")
    running_ratios = property(lambda self: self.history.running_ratios, doc="Each epoch's running mean / R*(0).")
    losses = property(lambda self: self.history.losses, doc="Each epoch's running mean of the training loss.")
    test_losses = property(lambda self: self.history.test_losses, doc="Each epoch's adversarial test loss, if known.")
    rhat = property(lambda self: self._risk.rhat, doc="R̂ of θ̂ (``None`` before θ̂ is known).")
    evaluation_seconds = property(lambda self: self._risk.seconds, doc="Wall time of the monitor's evaluations.")

    def any_process_has_updates(self) -> bool:
        """Whether any process's open epoch saw a batch (a collective: each calls it), so that all decide alike to call
        :meth:`epoch_end` (a process without a batch still joins the others' reduction)."""
        return self._sums.any_updates(self.reducer)

    def update(self, output: Any, batch_size: int | None = None) -> None:
        """Add one batch: a :class:`~advhooks.StepOutput`, or a mean loss tensor and its batch size. No host sync: the
        sums stay on the device until :meth:`epoch_end`; a NaN/inf batch is counted apart, out of the mean."""
        loss, n, eps, passes = batch_loss(output, batch_size, self.attack)
        if eps is not None:
            self.last_eps = eps
        self._health.see(output)
        self._sums.add(loss, n, passes)

    def evaluate_with(self, model: nn.Module, train_data: Any, test_data: Any = None, *,
                      attack: Attack | None = None, train_subset: int | None = 512, test_subset: int | None = 1000,
                      seed: int = 0, batch_size: int = 256, device: Any = None, budget: float = DEFAULT_BUDGET,
                      selection_steps: int = SELECTION_STEPS) -> None:
        """Let the monitor evaluate θ̂ and the paper's R̂ itself: the adversarial test loss on a fixed ``test_subset``
        of ``test_data`` (unless the loop passes ``epoch_end(adv_test_loss=...)``); when it is the smallest so far,
        the current weights are θ̂, and R̂(θ̂, ε) is evaluated at those fixed weights on a fixed random
        ``train_subset`` of ``train_data`` (its sampling error enters the band; ``None``: the whole set). Both while
        they cost at most ``budget`` of the training passes (:mod:`~advhooks.monitor.budget`; the last planned epoch
        always), R̂ first; θ̂'s test loss uses ``selection_steps`` attack steps.

        Args:
            model / train_data / test_data: the model being trained; datasets without augmentation (``test_data``
                may be ``None`` when the loop passes the adversarial test loss).
            attack: the evaluation attack; default: the monitor's ``attack``, else PGD-10 in L∞ at the
                epoch's ε with bounds (0, 1) and no normalisation (pass one for normalised inputs).
            train_subset / test_subset / seed: subset sizes (``None`` or a loader: all), drawn once with ``seed``,
                which also keys each sample's random start (the same R̂ on any number of processes).
            batch_size / device / budget / selection_steps: for the evaluation passes (``budget``: a share of the
                training passes, ``math.inf``: every epoch).
        """
        evaluation = Evaluation.build(model, train_data, test_data, attack or self.attack, train_subset, test_subset,
                                      seed, batch_size, device, selection_steps, budget)
        self._comparison.check_evaluated(model, train_data)  # (strict: raises before the evaluation is used)
        self._risk.evaluation = evaluation

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
            every / batch_size: probe every this many epochs (and at the first), in batches of this size.
        """
        self._probe = EpsStarProbe.build(model, inputs, targets, attack, ladder, every, batch_size, eps=self.eps)

    def epoch_end(self, adv_test_loss: float | None = None) -> PhaseReport:
        """Close the epoch: reduce across ranks, learn θ̂, decide the regime from ρ's band, log.

        Args:
            adv_test_loss: this epoch's adversarial test loss, when the loop measures it (else the monitor
                evaluates it with :meth:`evaluate_with`, or gives a provisional verdict).
        """
        totals = self._sums.totals(self.reducer, self.sync_timeout)
        total, count, nonfinite = totals["loss_sum"], int(totals["count"]), int(totals["nonfinite"])
        if count == 0 and nonfinite == 0:
            raise ValueError("epoch_end() called before any update() in this epoch")
        self._sums.reset()
        self._comparison.check_fed_batch(totals["largest_batch"])
        mean = total / count if count > 0 else math.nan
        due = self.epoch + 1 >= min(self.warmup_epochs, self.total_epochs or self.warmup_epochs)  # R̂ of θ̂'s weights
        test_loss = self._risk.evaluate_epoch(self.epoch + 1, self.total_epochs, adv_test_loss,
                                              self.history.test_losses, mean, passes=totals["passes"], due=due,
                                              eps=self.last_eps, reducer=self.reducer)
        self.history.append(mean, self.clean_test_loss, test_loss)
        probe = None
        if self._probe is not None and self._probe.due(self.epoch):
            probe, self.eps_star_lower_bound = self._probe.run(self.clean_test_loss, self.eps_star_lower_bound,
                                                               self.reducer)
        return self._report(mean, count, nonfinite, probe, test_loss)

    def _report(self, mean: float, count: int, nonfinite: int, probe: dict | None,
                test_loss: float | None) -> PhaseReport:
        rhat, kind = self._risk.verdict(self.history.losses)
        ratio, low, high = ratio_band(rhat, self._r_star, self.level)
        self.history.verdict_ratios.append(ratio)
        warmed_up = self.epoch >= self.warmup_epochs
        first_bad, diverged, not_learning = self._health.states(self.history, rhat, self._risk.clean_loss(), self.level)
        regime, reason = judge(low, high, self.threshold, warmed_up,
                               self.history.plateaued(self.patience, self.min_delta), diverged=diverged,
                               not_learning=not_learning)
        flagged = regime == FAR_ABOVE and self.flag_epoch is None
        self.flag_epoch = self.epoch if flagged else self.flag_epoch
        notes = caveats(kind, self._risk.evaluates_rhat, self.epoch, self.warmup_epochs, regime, nonfinite,
                        self.eps_star_lower_bound)
        best, best_epoch = self.history.best_running_ratio()
        report = PhaseReport(
            epoch=self.epoch, eps=self.last_eps, adv_train_loss=mean, clean_test_loss=self.clean_test_loss,
            ratio=ratio, best_running_ratio=best, best_epoch=best_epoch, regime=regime, flagged=flagged,
            flag_epoch=self.flag_epoch, eps_star_lower_bound=self.eps_star_lower_bound, probe=probe,
            samples=count, explanation=reason + "".join(f"; {c}" for c in notes), nonfinite_samples=nonfinite,
            ratio_interval=(low, high), rhat=rhat.mean if rhat is not None else math.nan,
            rhat_stderr=rhat.stderr if rhat is not None else math.nan, rhat_kind=kind, adv_test_loss=test_loss,
            early_stopped_epoch=self.rhat["epoch"] if self.rhat is not None else None,
            provisional=kind == "provisional" or not warmed_up, level=self.level,
            comparable=not self._comparison.unlike, unlike="; ".join(self._comparison.unlike),
            diverged_epoch=first_bad, chance_loss=self._health.chance_loss,
            advice=self.advice.sentence(self.last_eps) + ADVICE if flagged else "",
        )
        if is_main_process():
            log_report(self.logger, report, reason, self.verbose, warned=self._health.warned)
            if report.flagged and self.on_flag is not None:
                self.on_flag(report)
        return report

    def evaluate_rhat(self) -> bool:
        """Evaluate R̂ at θ̂'s kept weights now if pending (every process calls it); returns whether it evaluated."""
        return self._risk.settle(due=True, eps=self.last_eps, reducer=self.reducer)

    def record(self) -> dict[str, Any]:
        """The run as plain JSON values (:func:`~advhooks.monitor.record.run_record`), for ``--method records``; it
        evaluates nothing (call :meth:`evaluate_rhat` first for a run that stopped while θ̂'s R̂ was pending)."""
        ev = self._risk.evaluation
        return run_record(self, self.attack or (ev.attack if ev is not None else None), self._health.chance_loss)

    def save_record(self, path: str | os.PathLike, weights: bool = False) -> Path:
        """Write :meth:`record` as JSON, atomically (main process only; returns the path); ``weights=True`` also
        writes θ̂'s weights beside it (:func:`~advhooks.monitor.record.write_record`; needs :meth:`evaluate_with`)."""
        kept = self._risk.kept_weights() if weights else None
        if is_main_process():
            write_record(path, self.record(), kept)
        return Path(path)

    def plot(self, path: str | os.PathLike) -> Path:
        """Draw the run (:meth:`record`): running mean, adversarial test loss and R̂ of θ̂ against R*(0), with bands."""
        return plot_run(self.record(), self.clean_test_loss, self._r_star.interval(self.level), path)

    def state_dict(self) -> dict[str, Any]:
        """The run's state as plain values (history, θ̂'s R̂, flag, bound, open-epoch sums ...); while θ̂'s R̂ is pending
        also θ̂'s weights (``theta_hat_weights``, CPU tensors), so that a resume evaluates it as the run would have."""
        return {"clean_test_loss": self.clean_test_loss, "epoch": self.epoch, "flag_epoch": self.flag_epoch,
                "eps_star_lower_bound": self.eps_star_lower_bound, "last_eps": self.last_eps,
                **self.history.state_dict(), **self._risk.state_dict(), **self._comparison.state_dict(),
                **self._health.state_dict(), **self._sums.state_dict()}

    def share_open_sums(self) -> None:
        """Gather every process's open-epoch sums into the next :meth:`state_dict`, so that one process's checkpoint
        resumes every process's share (a collective: each process calls it; the adapters' save hooks do)."""
        self._sums.share(self.reducer)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (validated; the benchmark must match)."""
        _check_state(state, self.clean_test_loss)
        self.history.load_state_dict(state, int(state["epoch"]))
        self._risk.load_state_dict(state)
        self._comparison.load_state_dict(state)
        self.flag_epoch = None if state["flag_epoch"] is None else int(state["flag_epoch"])
        self.eps_star_lower_bound = _optional_float(state["eps_star_lower_bound"])
        self.last_eps = _optional_float(state.get("last_eps"))
        self._health.load_state_dict(state)
        self._sums.load_state_dict(state, self.logger)


def evaluation_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """An adapter's ``eval_options``: keyword options of :meth:`PhaseMonitor.evaluate_with` (``None``: none), checked
    against its signature so that a misspelt one fails when the adapter is built, not at the first epoch."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"eval_options must be a mapping of evaluate_with's options, got {type(options).__name__}")
    known = [p.name for p in inspect.signature(PhaseMonitor.evaluate_with).parameters.values()
             if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = set(options) - set(known)
    if unknown:
        raise ValueError(f"eval_options: unknown {sorted(unknown)}; evaluate_with takes {sorted(known)}")
    return dict(options)


def _check_state(state: Any, clean_test_loss: float) -> None:
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping, got {type(state).__name__}")
    missing = {"clean_test_loss", "epoch", "running_ratios", "losses", "flag_epoch", "eps_star_lower_bound",
               "open_loss_sum", "open_count", "open_nonfinite"} - state.keys()
    if missing:
        raise ValueError(f"monitor state lacks {sorted(missing)}")
    if not math.isclose(float(state["clean_test_loss"]), clean_test_loss, rel_tol=1e-9):
        raise ValueError(f"monitor state was recorded against R*(0) = {state['clean_test_loss']}, this monitor "
                         f"uses {clean_test_loss}")


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
