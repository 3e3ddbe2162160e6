"""Diagnostics from the paper, usable in any loop: catastrophic overfitting and robust overfitting.

- :class:`CatastrophicOverfittingDetector` (Andriushchenko & Flammarion 2020; the paper's Table 2): on a
  fixed check batch, PGD accuracy collapses while FGSM accuracy stays high. The decision is the pure
  function :func:`catastrophic_overfitting`.
- :class:`RobustOverfittingTracker` (the paper's Figure 5): the adversarial generalisation gap (adversarial
  test loss − adversarial training loss) relative to its value at a reference epoch, and the best
  checkpoint epoch by adversarial test loss.

Both keep plain-value state (``state_dict()``/``load_state_dict()``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._outputs import logits_of
from ._validation import check_finite_nonnegative, check_positive_int, check_unit_interval
from .attacks import FGM, PGD, eval_mode

__all__ = [
    "CatastrophicOverfittingDetector",
    "OverfittingReport",
    "RobustOverfittingTracker",
    "catastrophic_overfitting",
]

log = logging.getLogger(__name__)


def catastrophic_overfitting(pgd_accuracy: Sequence[float], fgsm_accuracy: Sequence[float], *,
                             collapse: float = 0.5, gap: float = 0.3, floor: float = 0.1) -> bool:
    """Whether the latest epoch shows catastrophic overfitting (a pure function of the histories).

    True when the latest PGD accuracy fell below ``collapse`` × its best so far (or below ``floor``, once it
    had been above it) while FGSM accuracy exceeds PGD accuracy by more than ``gap``.

    Example:
        >>> catastrophic_overfitting([0.40, 0.45, 0.02], [0.50, 0.55, 0.90])
        True
        >>> catastrophic_overfitting([0.40, 0.45, 0.44], [0.50, 0.55, 0.56])
        False
    """
    if not pgd_accuracy or len(pgd_accuracy) != len(fgsm_accuracy):
        raise ValueError("pgd_accuracy and fgsm_accuracy must be non-empty and of the same length")
    best = max(pgd_accuracy)
    now_pgd, now_fgsm = pgd_accuracy[-1], fgsm_accuracy[-1]
    collapsed = now_pgd < collapse * best or (best > floor and now_pgd < floor)
    return collapsed and now_fgsm - now_pgd > gap


@dataclass
class OverfittingReport:
    """One epoch of the catastrophic-overfitting check."""

    epoch: int
    pgd_accuracy: float
    fgsm_accuracy: float
    flagged: bool
    flag_epoch: int | None


class CatastrophicOverfittingDetector:
    """Flag catastrophic overfitting in FGSM training from PGD vs FGSM accuracy on a fixed check batch.

    Args:
        inputs / targets: the fixed check batch (e.g. 512 test or held-out samples).
        eps: the training strength.
        norm: ``"linf"`` (where the phenomenon is known) or ``"l2"``.
        pgd_steps: steps of the PGD evaluation attack.
        collapse / gap / floor: see :func:`catastrophic_overfitting`.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> det = CatastrophicOverfittingDetector(torch.rand(16, 1, 2, 2), torch.randint(0, 3, (16,)), eps=0.1)
        >>> det.epoch_end(net).flagged
        False
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, eps: float, norm: str = "linf",
                 pgd_steps: int = 10, collapse: float = 0.5, gap: float = 0.3, floor: float = 0.1) -> None:
        if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
            raise ValueError("inputs and targets must be non-empty and of the same length")
        self.inputs, self.targets = inputs, targets
        self.eps = check_finite_nonnegative("eps", eps)
        self.pgd = PGD(self.eps, norm=norm, steps=check_positive_int("pgd_steps", pgd_steps))
        self.fgsm = FGM(self.eps, norm=norm)
        self.collapse = check_unit_interval("collapse", collapse, closed_right=True)
        self.gap = check_unit_interval("gap", gap, closed_right=True)
        self.floor = check_unit_interval("floor", floor, closed_right=True)
        self.pgd_accuracy: list[float] = []
        self.fgsm_accuracy: list[float] = []
        self.flag_epoch: int | None = None

    def _accuracy(self, model: nn.Module, attack) -> float:
        adv = attack(model, self.inputs, self.targets)
        with eval_mode(model), torch.no_grad():
            return float((logits_of(model(adv)).argmax(1) == self.targets).double().mean())

    def epoch_end(self, model: nn.Module) -> OverfittingReport:
        """Measure both accuracies for the current model and decide; the flag fires once."""
        self.pgd_accuracy.append(self._accuracy(model, self.pgd))
        self.fgsm_accuracy.append(self._accuracy(model, self.fgsm))
        epoch = len(self.pgd_accuracy)
        hit = catastrophic_overfitting(self.pgd_accuracy, self.fgsm_accuracy, collapse=self.collapse, gap=self.gap,
                                       floor=self.floor)
        flagged = hit and self.flag_epoch is None
        if flagged:
            self.flag_epoch = epoch
            log.warning("catastrophic overfitting at epoch %d: PGD accuracy %.3f (best %.3f), FGSM accuracy %.3f. "
                        "FGSM training at this eps has broken down; use PGD, a smaller eps, or FGSM with a random "
                        "start and GradAlign.", epoch, self.pgd_accuracy[-1], max(self.pgd_accuracy),
                        self.fgsm_accuracy[-1])
        return OverfittingReport(epoch, self.pgd_accuracy[-1], self.fgsm_accuracy[-1], flagged, self.flag_epoch)

    def state_dict(self) -> dict[str, Any]:
        """Plain values."""
        return {"pgd_accuracy": list(self.pgd_accuracy), "fgsm_accuracy": list(self.fgsm_accuracy),
                "flag_epoch": self.flag_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        pgd, fgsm = [float(v) for v in state["pgd_accuracy"]], [float(v) for v in state["fgsm_accuracy"]]
        if len(pgd) != len(fgsm):
            raise ValueError("state histories differ in length")
        self.pgd_accuracy, self.fgsm_accuracy = pgd, fgsm
        self.flag_epoch = None if state["flag_epoch"] is None else int(state["flag_epoch"])


class RobustOverfittingTracker:
    """The adversarial generalisation gap relative to a reference epoch (the paper's Figure 5).

    Args:
        reference_epoch: the epoch whose gap is the unit (the paper uses 101: right after the first decay).

    Example:
        >>> tracker = RobustOverfittingTracker(reference_epoch=2)
        >>> for train, test in [(1.0, 1.2), (0.8, 1.0), (0.5, 1.1)]:
        ...     report = tracker.update(train, test)
        >>> round(report["gap_ratio"], 6), report["best_epoch"]
        (3.0, 2)
    """

    def __init__(self, reference_epoch: int) -> None:
        self.reference_epoch = check_positive_int("reference_epoch", reference_epoch)
        self.train_losses: list[float] = []
        self.test_losses: list[float] = []

    def update(self, adv_train_loss: float, adv_test_loss: float) -> dict[str, Any]:
        """Add one epoch; returns the gap, the gap ratio (once the reference epoch is reached) and best epoch."""
        self.train_losses.append(float(adv_train_loss))
        self.test_losses.append(float(adv_test_loss))
        epoch = len(self.train_losses)
        gap = self.test_losses[-1] - self.train_losses[-1]
        ratio = None
        if epoch >= self.reference_epoch:
            ref = self.test_losses[self.reference_epoch - 1] - self.train_losses[self.reference_epoch - 1]
            ratio = gap / ref if ref != 0 else None
        best = min(range(epoch), key=self.test_losses.__getitem__) + 1
        return {"epoch": epoch, "gap": gap, "gap_ratio": ratio, "best_epoch": best,
                "best_test_loss": self.test_losses[best - 1]}

    def state_dict(self) -> dict[str, Any]:
        """Plain values."""
        return {"reference_epoch": self.reference_epoch, "train_losses": list(self.train_losses),
                "test_losses": list(self.test_losses)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        train, test = [float(v) for v in state["train_losses"]], [float(v) for v in state["test_losses"]]
        if len(train) != len(test):
            raise ValueError("state histories differ in length")
        self.reference_epoch = check_positive_int("reference_epoch", state["reference_epoch"])
        self.train_losses, self.test_losses = train, test
