"""What the monitor's own evaluation may cost: a share of the training it watches, counted in passes.

A pass is one forward or one backward over one sample. A PGD-10 training step with the ``at`` objective costs 22
per sample (:attr:`~advhooks.StepOutput.passes`); evaluating one sample under an attack of k steps costs 2k + 1
(k forward and input-gradient passes and the final forward). The monitor evaluates the adversarial test loss
(θ̂'s choice) and R̂ at θ̂'s fixed weights only while the passes it has spent, with those still owed at the last
planned epoch, stay within ``share`` of the training passes it has been fed:

- on a CIFAR-10-sized run (50,000 training samples, a 1,000-sample test subset) that is every epoch;
- on a small set whose test set is a third of its training set (the bundled digits) it is every few epochs
  before the warm-up ends and nearly every epoch after it, R̂ first (it is what the verdict reads).

Two evaluations are reserved from the start and made whatever the budget: R̂ of θ̂ when the warm-up ends (the first
verdict; with the test loss that picks θ̂ when none was affordable before), and the last planned epoch's test loss
and R̂ (the final verdict). After the warm-up a test loss is
evaluated only when the R̂ of the θ̂ it may move to is affordable too, so that the verdict never reads a running
mean. Every count is a sum over all processes, so every process takes the same decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_BUDGET", "SELECTION_STEPS", "EvaluationBudget", "check_budget", "evaluation_passes"]

DEFAULT_BUDGET = 0.05
"""The default share of the training passes the monitor's evaluation may take."""

SELECTION_STEPS = 3
"""Attack steps of the adversarial test loss that chooses θ̂ (R̂ keeps the evaluation attack's own). Chosen on the
bundled digits (digits-mlp, ε 1–32/255, 3 seeds: θ̂'s R̂ within 0.3 of its standard error of PGD-10's choice when
every epoch is evaluated) and checked on MNIST-1D; ``benchmarks/monitor_overhead.py`` measures both."""


def evaluation_passes(attack: Any, extra_forwards: int = 0) -> int:
    """Passes per sample of evaluating under ``attack`` (an advhooks attack): per restart its steps' forward and
    input-gradient passes (each over ``eot`` draws) and the final forward; ``extra_forwards``: more forwards on the
    same sample (R̂'s clean loss)."""
    return int(attack.restarts) * (2 * int(attack.steps) * int(attack.eot) + 1) + int(extra_forwards)


@dataclass
class EvaluationBudget:
    """The monitor's spending: ``trained`` training passes fed so far, ``spent`` evaluation passes, and whether the
    warm-up's R̂ is still owed; what the reserved evaluations cost is the caller's to add (``owed``)."""

    share: float = DEFAULT_BUDGET
    trained: float = 0.0
    spent: float = 0.0
    first_rhat_owed: bool = True  # the R̂ the warm-up's end owes the verdict (reserved, then made whatever the budget)

    def affords(self, passes: float, owed: float = 0.0) -> bool:
        """Whether ``passes`` more keep the spending, with what is ``owed``, within the share of the training so far."""
        return self.spent + passes + owed <= self.share * self.trained

    def state_dict(self) -> dict[str, Any]:
        """Plain values (the share is a setting, given again on resume)."""
        return {"budget_trained": self.trained, "budget_spent": self.spent, "first_rhat_owed": self.first_rhat_owed}

    def load_state_dict(self, state: Mapping[str, Any], measured: bool = False) -> None:
        """Restore :meth:`state_dict`. A state saved before the budget existed evaluates every epoch, as it did
        (nothing counted to hold it to a share); ``measured``: a fixed-weights R̂ is already known."""
        legacy = "budget_trained" not in state
        self.trained = math.inf if legacy else float(state["budget_trained"])
        self.spent = float(state.get("budget_spent") or 0.0)
        self.first_rhat_owed = bool(state.get("first_rhat_owed", not measured))


def check_budget(share: float) -> float:
    """A budget share: a number > 0 (``math.inf``: evaluate every epoch)."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not share > 0:
        raise ValueError(f"budget must be a share of the training passes > 0 (e.g. 0.05, or math.inf for every "
                         f"epoch), got {share!r}")
    return float(share)
