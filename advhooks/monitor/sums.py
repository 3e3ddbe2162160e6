"""The open epoch's per-rank sums of the adversarial training loss, and their reduction across ranks.

The sums stay on the device of the losses (no host read per batch) until :meth:`EpochSums.totals`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .._distributed import is_distributed, rank, sum_across_processes, world_size

__all__ = ["EpochSums", "batch_loss", "classes_of"]

# Declared once: reset to 0, summed across ranks, saved and restored.
SUMS = ("loss_sum", "count", "nonfinite", "passes")  # passes: training passes, Σ batch × StepOutput.passes


def batch_loss(output: Any, batch_size: int | None, attack: Any = None) -> tuple[torch.Tensor, int, float | None, int]:
    """``(mean loss, batch size, ε, training passes per sample)`` of one batch: a :class:`~advhooks.StepOutput`, or a
    loss and its size (passes then taken as a step of ``attack``, the monitor's, and the update: 22 for PGD-10)."""
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
    passes = getattr(output, "passes", None)
    passes = 2 * (attack.steps if attack is not None else 10) + 2 if passes is None else passes
    return (loss if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))), n, eps, passes


def classes_of(output: Any) -> int | None:
    """The number of classes of a :class:`~advhooks.StepOutput`'s ``(batch, classes)`` logits (their shape: no host
    read), ``None`` for a bare loss or logits of another shape."""
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape[1] >= 2:
        return int(logits.shape[1])
    return None


class EpochSums:
    """Sums of the epoch's finite losses (× batch size), their sample count, the samples of NaN/inf batches, and the
    training passes of all of them (what the monitor's evaluation budget is a share of)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.values: dict[str, torch.Tensor | float] = dict.fromkeys(SUMS, 0.0)
        self.largest_batch = 0  # this rank's largest batch of the epoch (a Python int: no host read)
        self.by_rank: list[list[float]] | None = None  # every rank's open sums, from the last share()

    def any_updates(self, reducer: Callable[[torch.Tensor], torch.Tensor] | None) -> bool:
        """Whether any process's open epoch has seen a batch (a sum across processes: every process calls it)."""
        seen = _packed([self.values[name] for name in ("count", "nonfinite")])
        return float(sum_across_processes(seen, reducer).sum()) > 0

    def add(self, loss: torch.Tensor, n: int, passes: float = 0.0) -> None:
        """One batch's mean loss (a one-value tensor), its size and its training passes per sample; a NaN/inf loss is
        counted apart."""
        loss = loss.detach().to(torch.float64)
        if loss.numel() != 1:
            raise ValueError(f"update() needs the batch's mean loss (one value), got shape {tuple(loss.shape)}")
        finite = torch.isfinite(loss)
        added = {"loss_sum": torch.where(finite, loss * n, 0.0), "count": finite.to(torch.float64) * n,
                 "nonfinite": (~finite).to(torch.float64) * n, "passes": float(n * passes)}
        for name in SUMS:
            self.values[name] = self.values[name] + added[name]
        self.largest_batch = max(self.largest_batch, n)
        self.by_rank = None  # (shared before this batch: stale)

    def share(self, reducer: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        """Gather every rank's open sums onto every rank (a sum across processes: each must call it), so that a
        state saved from one rank alone (one checkpoint file) restores every rank's share of the open epoch."""
        mine = _packed([self.values[name] for name in SUMS])
        table = torch.zeros((world_size(), len(SUMS)), dtype=torch.float64, device=mine.device)
        table[rank()] = mine
        self.by_rank = sum_across_processes(table, reducer).tolist()

    def totals(self, reducer: Callable[[torch.Tensor], torch.Tensor] | None, sync_timeout: float) -> dict[str, float]:
        """The sums over all ranks, read on the host (``reducer``, else ``torch.distributed`` when initialised),
        and ``largest_batch``: the sum over ranks of each rank's largest batch, the global batch size."""
        packed = _packed([self.values[name] for name in SUMS] + [float(self.largest_batch)])
        if reducer is not None or is_distributed():
            _wait_for_all_ranks(sync_timeout)
            packed = sum_across_processes(packed, reducer)
        return dict(zip((*SUMS, "largest_batch"), packed.tolist(), strict=True))

    def state_dict(self) -> dict[str, Any]:
        """This rank's open sums, as plain floats, with the rank they belong to, and every rank's when they were
        gathered by :meth:`share` since the last batch (``open_by_rank``)."""
        state: dict[str, Any] = {f"open_{name}": float(self.values[name]) for name in SUMS}
        state["rank"] = rank()
        state["open_by_rank"] = None if self.by_rank is None else [list(row) for row in self.by_rank]
        return state

    def load_state_dict(self, state: Mapping[str, Any], logger: logging.Logger | None = None) -> None:
        """Restore this rank's open sums: its row of ``open_by_rank`` when the state has every rank's (on another
        number of processes, rank 0 takes their total), else the sums saved by this rank.

        A state saved by one rank without :meth:`share` (a framework that writes one checkpoint) holds only that
        rank's sums: only that rank keeps them, so nothing is counted twice, and ``logger`` (main process) says that
        the other ranks' samples of the interrupted epoch are missing from its mean.
        """
        if logger is not None and self.lost_on_resume(state) and rank() == 0:
            logger.warning("this monitor state was saved mid-epoch by one process without share_open_sums(): the other "
                           "processes' samples of the interrupted epoch are missing from its mean")
        self.reset()
        by_rank = state.get("open_by_rank")
        if by_rank is not None:
            rows = [[float(v) for v in row] + [0.0] * (len(SUMS) - len(row)) for row in by_rank]  # (older: no passes)
            if len(rows) == world_size():
                row, self.by_rank = rows[rank()], rows  # (still every rank's sums until the next batch)
            else:
                row = [sum(col) for col in zip(*rows, strict=True)] if rank() == 0 else [0.0] * len(SUMS)
            self.values = dict(zip(SUMS, row, strict=True))
        elif not is_distributed() or int(state.get("rank", 0)) == rank():
            self.values = {name: float(state.get(f"open_{name}", 0.0)) for name in SUMS}

    @staticmethod
    def lost_on_resume(state: Mapping[str, Any]) -> bool:
        """Whether restoring ``state`` on several processes loses the other ranks' open-epoch sums (one rank's
        mid-epoch state, saved without :meth:`share`)."""
        open_samples = float(state.get("open_count") or 0) + float(state.get("open_nonfinite") or 0)
        return world_size() > 1 and state.get("open_by_rank") is None and open_samples > 0


def _packed(values: list[torch.Tensor | float]) -> torch.Tensor:
    """Sums (device tensors or plain floats) as one float64 tensor, on the device of the first tensor among them."""
    device = next((v.device for v in values if isinstance(v, torch.Tensor)), torch.device("cpu"))
    return torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])


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
