"""The monitor's per-epoch history: running means, their ratios to R*(0), test losses and verdict ratios."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .report import comparable

__all__ = ["EpochHistory"]

_LISTS = ("running_ratios", "losses", "test_losses", "verdict_ratios")


@dataclass
class EpochHistory:
    """One entry per closed epoch (``losses``: running means; ``running_ratios``: running mean / R*(0);
    ``test_losses``: adversarial test losses when known; ``verdict_ratios``: the verdict's ρ)."""

    losses: list[float] = field(default_factory=list)
    running_ratios: list[float] = field(default_factory=list)
    test_losses: list[float | None] = field(default_factory=list)
    verdict_ratios: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.losses)

    def append(self, running_mean: float, r_star: float, test_loss: float | None) -> None:
        self.losses.append(running_mean)
        self.running_ratios.append(running_mean / r_star)
        self.test_losses.append(test_loss)

    def plateaued(self, patience: int, min_delta: float) -> bool:
        """The verdict ρ improved by less than ``min_delta`` (relative) over the last ``patience`` epochs."""
        history = comparable(self.verdict_ratios)
        return len(history) > patience and min(history) >= min(history[: len(history) - patience]) * (1.0 - min_delta)

    def first_nonfinite_epoch(self) -> int | None:
        """The first epoch (1-based) whose running mean or adversarial test loss was NaN or inf, if any."""
        return next((i + 1 for i in range(self.epochs) if self._nonfinite(i)), None)

    def latest_nonfinite(self) -> bool:
        """Whether the latest epoch's running mean or adversarial test loss was NaN or inf."""
        return self.epochs > 0 and self._nonfinite(self.epochs - 1)

    def _nonfinite(self, i: int) -> bool:
        test = self.test_losses[i]
        return not math.isfinite(self.losses[i]) or (test is not None and not math.isfinite(test))

    def best_running_ratio(self) -> tuple[float, int]:
        """The smallest running-mean ratio so far and its epoch (NaN and 0 when every epoch diverged)."""
        finite = comparable(self.running_ratios)
        best = min(finite)
        return (best, finite.index(best) + 1) if math.isfinite(best) else (math.nan, 0)

    def rows(self) -> list[dict[str, Any]]:
        """Per epoch, the run record's plain values (NaN and inf as ``None``)."""
        return [{"epoch": i + 1, "running_mean": plain(m), "adv_test_loss": None if t is None else plain(t),
                 "ratio": plain(r)}
                for i, (m, t, r) in enumerate(zip(self.losses, self.test_losses, self.verdict_ratios, strict=True))]

    def state_dict(self) -> dict[str, Any]:
        return {name: list(getattr(self, name)) for name in _LISTS}

    def load_state_dict(self, state: Mapping[str, Any], epoch: int) -> None:
        """Restore the lists of ``state`` for ``epoch`` closed epochs (older states lack some lists)."""
        lists = {k: list(state.get(k) or ([None] * epoch if k == "test_losses" else [])) for k in _LISTS}
        if any(len(v) != epoch for k, v in lists.items() if k != "verdict_ratios" or v):
            raise ValueError("monitor state is inconsistent: history length differs from the epoch count")
        self.running_ratios = [float(r) for r in lists["running_ratios"]]
        self.losses = [float(v) for v in lists["losses"]]
        self.test_losses = [None if t is None else float(t) for t in lists["test_losses"]]
        self.verdict_ratios = [float(r) for r in lists["verdict_ratios"]] or list(self.running_ratios)


def plain(v: float) -> float | None:
    """A float for JSON: NaN and inf become ``None``."""
    return v if math.isfinite(v) else None
