"""The monitor's verdict: :class:`PhaseReport`, the regimes and :func:`decide_regime` (pure, no state)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..schedules import format_eps
from ..uncertainty import DEFAULT_LEVEL, MeanEstimate, ratio_interval

__all__ = ["ABOVE", "ADVICE", "CLEAN_LIKE", "DIVERGED", "EPS_REGIMES", "FAR_ABOVE", "NEAR", "NOT_LEARNING",
           "NO_VERDICT", "REGIMES", "PhaseReport", "caveats", "chance_level", "comparable", "decide_regime", "judge",
           "log_report", "ratio_band"]

CLEAN_LIKE, NEAR, ABOVE, FAR_ABOVE = "clean-like", "near eps*", "above eps*", "eps >> eps*"
# The verdicts about ε, read from ρ's band.
EPS_REGIMES = (CLEAN_LIKE, NEAR, ABOVE, FAR_ABOVE)
# The states in which the run says nothing about ε: no finite R̂ to compare, a non-finite loss in the latest epoch
# (the run diverged), R̂ at the loss of a uniform guess (the run does not learn).
NO_VERDICT, DIVERGED, NOT_LEARNING = "no verdict", "diverged", "not learning"
REGIMES = (*EPS_REGIMES, NO_VERDICT, DIVERGED, NOT_LEARNING)

ADVICE = (
    "Adversarial training at this strength no longer behaves like clean training: the paper (Xing et al. "
    "2022, sections 5 and 7) links eps >> eps* to leaving the clean basin, robust overfitting and FGSM "
    "catastrophic overfitting. What helps, measured (benchmarks/remedies.py; docs/paper.md, 'What helps when eps >> "
    "eps*'): a smaller eps. At 4 eps* on the digits and MNIST-1D no other lever brought rho back toward 1: a "
    "4x wider model lowered rho near eps* (1.13 -> 0.92 on MNIST-1D) and 2x more data gave the best robust "
    "accuracy (+1.4 to +4.8 points), while TRADES, MART and an eps curriculum raised rho and AWP changed "
    "nothing measurable in these short runs."
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
        best_running_ratio / best_epoch: the smallest running-mean ratio so far and its epoch.
        regime: one of :data:`REGIMES`.
        flagged: the ε ≫ ε* flag fired at this epoch (it fires once per run).
        flag_epoch: the epoch it fired, if it has.
        eps_star_lower_bound: the probe's lower bound on ε* so far (``None`` without a probe).
        probe: the probe's ``{ε′: loss}`` when it ran this epoch.
        diverged_epoch: the first epoch whose running mean or adversarial test loss was NaN or inf, if any (the
            regime is ``"diverged"`` while the latest epoch is).
        chance_loss: ln K, the cross-entropy of a uniform guess over K classes, when known (R̂ reaching it within
            its band is ``"not learning"``).
        samples: samples whose loss entered the epoch mean (all ranks).
        nonfinite_samples: samples of batches whose loss was NaN or inf (all ranks), left out of the mean.
        explanation: one or two sentences for people.
        advice: on the report where the ε ≫ ε* flag fires: what the user can act on, with numbers where there are
            some (ε against the monitor's ``eps_star``, the trends of its ``study``, the measured remedies).
        level: the band's coverage.
        comparable: ``False`` when the run's model or training set differs from the benchmark's, so that ρ
            compares unlike things; ``unlike`` then names the differences.
    """

    epoch: int
    eps: float | None
    adv_train_loss: float
    clean_test_loss: float
    ratio: float
    best_running_ratio: float
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
    comparable: bool = True
    unlike: str = ""
    advice: str = ""
    diverged_epoch: int | None = None
    chance_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for loggers and JSON."""
        out = asdict(self)
        out["ratio_interval"] = list(self.ratio_interval)
        return out

    def metrics(self, prefix: str = "advhooks/") -> dict[str, float]:
        """The numeric fields for experiment trackers, under one naming that every adapter uses.

        ``regime`` is the regime's index in :data:`REGIMES` (0 clean-like, 1 near ε*, 2 above ε*, 3 ε ≫ ε*, 4 no
        verdict, 5 diverged, 6 not learning),
        ``provisional`` and ``comparable`` are 1 or 0: numbers, which every tracker accepts.
        """
        out = {
            f"{prefix}adv_train_loss": self.adv_train_loss,
            f"{prefix}rhat": self.rhat,
            f"{prefix}ratio": self.ratio,
            f"{prefix}ratio_low": self.ratio_interval[0],
            f"{prefix}ratio_high": self.ratio_interval[1],
            f"{prefix}best_running_ratio": self.best_running_ratio,
            f"{prefix}clean_like": float(self.regime == CLEAN_LIKE),
            f"{prefix}eps_far_above_eps_star": float(self.regime == FAR_ABOVE),
            f"{prefix}regime": float(REGIMES.index(self.regime)),
            f"{prefix}provisional": float(self.provisional),
            f"{prefix}comparable": float(self.comparable),
        }
        optional = {"eps": self.eps, "adv_test_loss": self.adv_test_loss,
                    "eps_star_lower_bound": self.eps_star_lower_bound}
        out.update({f"{prefix}{k}": float(v) for k, v in optional.items() if v is not None})
        return out

    def summary(self) -> str:
        """The verdict in one line: R̂ and its kind, θ̂'s epoch, ρ with its band, the regime and its caveats.

        Example:
            >>> report = PhaseReport(epoch=3, eps=0.1, adv_train_loss=0.3, clean_test_loss=0.2, ratio=1.5,
            ...                      best_running_ratio=1.5, best_epoch=3, regime="above eps*", flagged=False,
            ...                      flag_epoch=None, eps_star_lower_bound=None, probe=None, samples=10, explanation="",
            ...                      ratio_interval=(1.2, 1.9), rhat=0.3, rhat_kind="fixed weights",
            ...                      early_stopped_epoch=2, provisional=False)
            >>> report.summary()
            'R-hat 0.3000 (fixed weights, theta-hat = epoch 2) = 1.500 x R*(0) [1.200, 1.900], regime above eps*'
        """
        where = "" if self.early_stopped_epoch is None else f", theta-hat = epoch {self.early_stopped_epoch}"
        low, high = self.ratio_interval
        return (f"R-hat {self.rhat:.4f} ({self.rhat_kind}{where}) = {self.ratio:.3f} x R*(0) [{low:.3f}, {high:.3f}], "
                f"regime {self.regime}{' (provisional)' if self.provisional else ''}"
                f"{'' if self.comparable else f' (NOT COMPARABLE with the benchmark: {self.unlike})'}")

    @property
    def should_stop(self) -> bool:
        """The one stop rule: the ε ≫ ε* regime, or a run whose latest epoch diverged (as Lightning's
        ``EarlyStopping(check_finite=True)``); adapters with ``stop_on_flag`` act on it."""
        return self.regime in (FAR_ABOVE, DIVERGED)


def comparable(ratios: Sequence[float]) -> list[float]:
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
        return NO_VERDICT, "no finite R-hat to compare with R*(0): no verdict"
    band = f"rho in [{low:.3f}, {high:.3f}]"
    if high < 1.0:
        return CLEAN_LIKE, f"{band} < 1: eps < eps*, adversarial training behaves like clean training"
    if low <= 1.0:
        return NEAR, f"{band} contains 1: eps is near eps* (cannot be told apart at this precision)"
    if low >= threshold and far_allowed:
        return FAR_ABOVE, f"{band} >= {threshold:g} and no longer improving: eps looks several times eps*"
    return ABOVE, f"{band} > 1: eps > eps*"




def ratio_band(rhat: MeanEstimate | None, r_star: MeanEstimate, level: float) -> tuple[float, float, float]:
    """ρ = R̂ / R*(0) and its band at ``level``; NaN when there is no finite positive R̂ (``None``: no loss yet)."""
    if rhat is None or rhat.mean <= 0 or not math.isfinite(rhat.mean):
        return math.nan, math.nan, math.nan
    return ratio_interval(rhat, r_star, level)


# A band within 1 % of ln K counts as reaching it (a collapsed model's loss is ln K up to rounding, or a little
# below it when it predicts the class frequencies of a nearly balanced set).
CHANCE_TOLERANCE = 0.99


def chance_level(rhat: MeanEstimate | None, clean: MeanEstimate | None, level: float,
                 num_classes: int | None) -> str | None:
    """Why the run is not learning, or ``None``: R̂ *and* the clean training loss at θ̂'s weights (``clean``) both
    reach ln K (to 1 %, within their bands), the cross-entropy of a uniform guess over K classes. A model whose
    adversarial loss alone is that high still learns (ε may be far above ε*: that is a regime); one whose clean loss
    is there too has collapsed. ``None`` also without a finite R̂, a clean loss or K.

    Example:
        >>> at_chance, learned = MeanEstimate(2.31, 0.01, 100, 100), MeanEstimate(0.4, 0.01, 100, 100)
        >>> chance_level(at_chance, at_chance, 0.8, 10)[:46]
        'R-hat 2.3100 and the clean loss 2.3100 reach l'
        >>> chance_level(at_chance, learned, 0.8, 10) is None  # a model that learned, broken by a strong attack
        True
    """
    if rhat is None or clean is None or not num_classes or num_classes < 2:
        return None
    chance = math.log(num_classes)
    if not all(math.isfinite(e.mean) and e.interval(level)[1] >= CHANCE_TOLERANCE * chance for e in (rhat, clean)):
        return None
    return (f"R-hat {rhat.mean:.4f} and the clean loss {clean.mean:.4f} reach ln {num_classes} = {chance:.4f}, the "
            "loss of a uniform guess: the model is not learning (a collapsed run or a learning rate too high), which "
            "says nothing about eps*")


def judge(low: float, high: float, threshold: float, warmed_up: bool, plateaued: bool, *,
          diverged: int | None = None, not_learning: str | None = None) -> tuple[str, str]:
    """The regime of ρ's band and why: ε ≫ ε* only after the warm-up and on a plateau of the verdict ρ.

    ``diverged``: the first non-finite epoch, when the latest epoch is non-finite (the run diverged: no verdict,
    whatever θ̂ had); ``not_learning``: :func:`chance_level`'s reason when R̂ is at chance level. Both come before ρ.

    Example:
        >>> judge(0.5, 0.7, 1.5, True, False, diverged=8)[0], judge(0.5, 0.7, 1.5, True, False)[0]
        ('diverged', 'clean-like')
    """
    if diverged is not None:
        return DIVERGED, (f"the loss is NaN/inf since epoch {diverged} (the run diverged): no verdict about eps, "
                          "whatever theta-hat read before")
    if not_learning is not None:
        return NOT_LEARNING, not_learning
    regime, reason = decide_regime(low, high, threshold=threshold, far_allowed=warmed_up and plateaued)
    if regime == ABOVE and low >= threshold and warmed_up:
        reason += " (still improving: no eps >> eps* verdict yet)"
    return regime, reason


def caveats(kind: str, evaluates_rhat: bool, epoch: int, warmup_epochs: int, regime: str,
            nonfinite: int, lower_bound: float | None = None) -> list[str]:
    """What a report's verdict rests on, for people: its kind of R̂, the warm-up, NaN/inf batches, the probe's
    lower bound on ε*."""
    notes = []
    if kind == "provisional":
        notes.append("provisional: no adversarial test loss, so the verdict uses the best running mean of the "
                     "training loss (give the monitor evaluate_with(...) or epoch_end(adv_test_loss=...))")
    elif kind == "running mean" and evaluates_rhat:
        notes.append("R-hat at theta-hat's fixed weights is evaluated once the warm-up is over; until then it is "
                     "theta-hat's running mean")
    elif kind == "running mean":
        notes.append("R-hat is the running mean of the early-stopped epoch (evaluate_with(model, train_data) gives "
                     "the paper's fixed-weights value)")
    if epoch < warmup_epochs and regime != CLEAN_LIKE:
        notes.append(f"warm-up {epoch}/{warmup_epochs}")
    if nonfinite:
        notes.append(f"{nonfinite} samples had a NaN/inf loss and were left out of the mean")
    if lower_bound is not None:
        notes.append(f"probe: eps* >= {format_eps(lower_bound)}")
    return notes


def log_report(logger: logging.Logger, report: PhaseReport, reason: str, verbose: bool = False,
               warned: set[str] | None = None) -> None:
    """One line per epoch (INFO; with ``verbose`` shown whatever the logger's level, which stays as it is), and
    warnings for NaN/inf batches, for the ε ≫ ε* flag, and the first time a settled report is ``diverged`` or
    ``not learning`` (the states in ``warned`` are not warned about again; the new one is added). The flag's
    warning carries the flagged report's ``advice``."""
    eps_txt = "?" if report.eps is None else format_eps(report.eps)
    low, high = report.ratio_interval
    where = "" if report.early_stopped_epoch is None else f", theta-hat = epoch {report.early_stopped_epoch}"
    args = (report.epoch, report.rhat, report.rhat_kind, where, report.ratio, low, high, eps_txt, report.regime,
            " (provisional)" if report.provisional else "",
            "" if report.comparable else f" (NOT COMPARABLE with the benchmark: {report.unlike})", report.explanation)
    line = "epoch %d: R-hat %.4f (%s%s) = %.3f x R*(0) [%.3f, %.3f] (eps %s): %s%s%s — %s"
    if verbose and not logger.isEnabledFor(logging.INFO):  # to the handlers directly: no level is changed
        logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, args, None))
    else:
        logger.info(line, *args)
    if report.nonfinite_samples:
        logger.warning("epoch %d: %d samples had a NaN/inf adversarial loss (left out of the mean)",
                       report.epoch, report.nonfinite_samples)
    if report.flagged:
        logger.warning("eps = %s looks >> eps*: %s. %s", eps_txt, reason, report.advice or ADVICE)
    if (warned is not None and report.regime in (DIVERGED, NOT_LEARNING) and report.regime not in warned
            and not report.provisional):
        warned.add(report.regime)
        logger.warning("epoch %d: %s: %s", report.epoch, report.regime, reason)
