"""The ε* probe: a model's adversarial loss at a ladder of strengths ε′; the largest ε′ whose loss is at most
R*(0) bounds ε* from below. The monitor runs it on the model being trained (:meth:`PhaseMonitor.enable_probe`);
the kit's clean probe (:mod:`advhooks.kit.estimate.clean_probe`) measures its own ladder on the clean model, over
the whole training set, and reads its bound with the same :func:`ladder_lower_bound`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._distributed import Reducer, sum_across_processes
from .._validation import check_finite_nonnegative, check_positive_int
from ..attacks import PGD, Attack
from ..attacks.criteria import cross_entropy
from ..evaluation import loss_sums

__all__ = ["EpsStarProbe", "ladder_lower_bound"]


def ladder_lower_bound(points: Iterable[tuple[float, float]], r_star: float) -> float | None:
    """The largest ε′ of ``(ε′, loss)`` pairs whose loss is ≤ ``r_star``, or ``None`` when none is.

    Example:
        >>> ladder_lower_bound([(1 / 255, 0.2), (2 / 255, 0.3), (4 / 255, 0.6)], r_star=0.35) * 255
        2.0
    """
    passing = [eps for eps, loss in points if loss <= r_star]
    return max(passing) if passing else None


@dataclass
class EpsStarProbe:
    """The monitor's probe: ``model``'s loss on a fixed ``(inputs, targets)`` subset at each rung of ``ladder``."""

    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    attack: Attack
    ladder: list[float]
    every: int
    batch_size: int

    @classmethod
    def build(cls, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, attack: Attack | None,
              ladder: Sequence[float] | None, every: int, batch_size: int, *, eps: float | None) -> EpsStarProbe:
        """Validated settings; the default ladder is ``eps × (1/8, 1/4, 1/2, 1)``, the default attack PGD-5 in L∞
        with random start."""
        if ladder is None:
            if eps is None:
                raise ValueError("enable_probe needs ladder= when the monitor has no eps")
            ladder = [eps * f for f in (1 / 8, 1 / 4, 1 / 2, 1.0)]
        ladder = sorted(check_finite_nonnegative("ladder value", e) for e in ladder)
        if not ladder:
            raise ValueError("ladder must not be empty")
        if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
            raise ValueError("probe inputs and targets must be non-empty and of the same length")
        return cls(model, inputs, targets, attack or PGD(ladder[-1], steps=5), ladder,
                   check_positive_int("every", every), check_positive_int("batch_size", batch_size))

    def due(self, epoch: int) -> bool:
        """Every ``every`` epochs, and at the first."""
        return (epoch - 1) % self.every == 0

    def run(self, r_star: float, bound: float | None,
            reducer: Reducer | None = None) -> tuple[dict[str, float], float | None]:
        """``{f"{ε′:.6g}": mean loss}`` over the subset for each rung, and the lower bound ``bound`` raised by it.

        On several processes each probes its own subset and the sums are added (``reducer``, else
        ``torch.distributed``), so every process returns the same losses and bound. Random starts are drawn per
        sample from ``(0, position in the subset, ε′)``: the same weights give the same probe whatever
        training drew from the global generator.
        """
        batches = [(self.inputs[i : i + self.batch_size], self.targets[i : i + self.batch_size])
                   for i in range(0, self.inputs.shape[0], self.batch_size)]
        # each rung's [Σ loss, count] over this process's subset (the sums across processes are the totals)
        sums = torch.stack([loss_sums(self.model, batches, self.attack, eps, cross_entropy)[[0, 2]]
                            for eps in self.ladder])
        totals = sum_across_processes(sums, reducer).tolist()
        losses = {f"{eps:.6g}": total / count for eps, (total, count) in zip(self.ladder, totals, strict=True)}
        new = ladder_lower_bound(((eps, losses[f"{eps:.6g}"]) for eps in self.ladder), r_star)
        return losses, bound if new is None or (bound is not None and bound >= new) else new
