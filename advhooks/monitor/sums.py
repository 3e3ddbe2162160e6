"""The open epoch's per-rank sums of the adversarial training loss, and their reduction across ranks.

The sums stay on the device of the losses (no host read per batch) until :meth:`EpochSums.totals`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .._distributed import is_distributed, rank, sum_across_processes

__all__ = ["EpochSums", "batch_loss"]

# Declared once: reset to 0, summed across ranks, saved and restored.
SUMS = ("loss_sum", "count", "nonfinite")


def batch_loss(output: Any, batch_size: int | None) -> tuple[torch.Tensor, int, float | None]:
    """``(mean loss, batch size, ε)`` of one batch: a :class:`~advhooks.StepOutput`, or a loss and its size."""
    eps = None
    if hasattr(output, "adv_loss") and hasattr(output, "batch_size"):
        loss, n = output.adv_loss, output.batch_size
        if getattr(output, "eps", None) is not None:
            eps = float(output.eps)
    elif batch_size is None:
        raise ValueError("update(loss, batch_size): batch_size is required with a bare loss")
    else:
        loss, n = output, batch_size
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {n!r}")
    return (loss if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))), n, eps


class EpochSums:
    """Sums of the epoch's finite losses (× batch size), their sample count, and the samples of NaN/inf batches."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.values: dict[str, torch.Tensor | float] = dict.fromkeys(SUMS, 0.0)
        self.largest_batch = 0  # this rank's largest batch of the epoch (a Python int: no host read)

    @property
    def has_updates(self) -> bool:
        """Whether the open epoch has seen a batch (reads the count: one host sync)."""
        return float(self.values["count"]) + float(self.values["nonfinite"]) > 0

    def add(self, loss: torch.Tensor, n: int) -> None:
        """One batch's mean loss (a one-value tensor) and its size; a NaN/inf loss is counted apart."""
        loss = loss.detach().to(torch.float64)
        if loss.numel() != 1:
            raise ValueError(f"update() needs the batch's mean loss (one value), got shape {tuple(loss.shape)}")
        finite = torch.isfinite(loss)
        added = {"loss_sum": torch.where(finite, loss * n, 0.0), "count": finite.to(torch.float64) * n,
                 "nonfinite": (~finite).to(torch.float64) * n}
        for name in SUMS:
            self.values[name] = self.values[name] + added[name]
        self.largest_batch = max(self.largest_batch, n)

    def totals(self, reducer: Callable[[torch.Tensor], torch.Tensor] | None, sync_timeout: float) -> dict[str, float]:
        """The sums over all ranks, read on the host (``reducer``, else ``torch.distributed`` when initialised),
        and ``largest_batch``: the sum over ranks of each rank's largest batch, the global batch size."""
        sums = [self.values[name] for name in SUMS] + [float(self.largest_batch)]
        device = next((v.device for v in sums if isinstance(v, torch.Tensor)), torch.device("cpu"))
        packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in sums])
        if reducer is not None or is_distributed():
            _wait_for_all_ranks(sync_timeout)
            packed = sum_across_processes(packed, reducer)
        return dict(zip((*SUMS, "largest_batch"), packed.tolist(), strict=True))

    def state_dict(self) -> dict[str, Any]:
        """This rank's open sums, as plain floats, with the rank they belong to."""
        state = {f"open_{name}": float(self.values[name]) for name in SUMS}
        state["rank"] = rank()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore this rank's open sums.

        Frameworks that save one checkpoint from rank 0 hand rank 0's sums to every rank: only rank 0 keeps
        them, so nothing is counted twice (the epoch mean then covers rank 0's samples from before the save
        and every rank's after it).
        """
        self.reset()
        if not is_distributed() or int(state.get("rank", 0)) == rank():
            self.values = {name: float(state[f"open_{name}"]) for name in SUMS}


def _wait_for_all_ranks(sync_timeout: float) -> None:
    """Fail with a clear error, not a hang, when another rank never reaches ``epoch_end`` (gloo)."""
    if not is_distributed() or dist.get_backend() != "gloo":
        return  # NCCL: rely on its own watchdog timeout
    try:
        dist.monitored_barrier(timeout=timedelta(seconds=sync_timeout), wait_all_ranks=True)
    except RuntimeError as err:
        raise RuntimeError(
            f"PhaseMonitor.epoch_end on rank {dist.get_rank()}: not every rank reached epoch_end within "
            f"{sync_timeout:g} s (a rank crashed, raised, or skipped epoch_end): {err}"
        ) from err
