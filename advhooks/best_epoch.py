"""The epoch with the smallest loss so far: the one rule of early stopping in advhooks.

The clean benchmark's recorder (R*(0) at its best epoch), the kit's clean training and the monitor's θ̂ (the epoch
with the smallest adversarial test loss) all keep "the best epoch" with this tracker: a finite value strictly
smaller than every earlier one improves it; NaN, inf and ties never do. Whatever the caller does on an improvement
(copy the weights, evaluate R̂) it does itself, visibly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BestEpoch"]


@dataclass
class BestEpoch:
    """``update(epoch, value)`` says whether ``value`` is a new best; ``epoch`` and ``value`` hold the best so far.

    Example:
        >>> best = BestEpoch()
        >>> [best.update(e, v) for e, v in enumerate([0.9, float("nan"), 0.7, 0.7, 0.8], start=1)]
        [True, False, True, False, False]
        >>> best.epoch, best.value, best.since(5)
        (3, 0.7, 2)
    """

    epoch: int | None = None
    value: float = math.inf

    @classmethod
    def of(cls, values: Iterable[float | None]) -> BestEpoch:
        """The tracker after ``values`` of epochs 1, 2, ... (``None``: an epoch without a value)."""
        best = cls()
        for epoch, value in enumerate(values, start=1):
            best.update(epoch, value)
        return best

    def update(self, epoch: int, value: float | None) -> bool:
        """Whether ``value`` (finite, strictly below the best so far) makes ``epoch`` the best; then it is kept."""
        if value is None or not math.isfinite(value) or value >= self.value:
            return False
        self.epoch, self.value = epoch, float(value)
        return True

    def since(self, epoch: int) -> int | None:
        """Epochs from the best one to ``epoch`` (``None`` before any finite value): what a patience compares."""
        return None if self.epoch is None else epoch - self.epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best_epoch": self.epoch, "best_value": None if self.epoch is None else self.value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = state.get("best_epoch")
        self.value = math.inf if state.get("best_value") is None else float(state["best_value"])
