"""Which process this is, and sums across processes: the one place the library talks to ``torch.distributed``.

Every cross-process sum of the monitor (the epoch's loss sums, the evaluation passes of θ̂ and R̂) goes
through :func:`sum_across_processes`, with the caller's reducer when it has one (Accelerate's
``accelerator.reduce``), else ``all_reduce`` when a process group is initialised, else unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

__all__ = ["BATCHNORM_NOTE", "is_distributed", "is_main_process", "rank", "sum_across_processes",
           "unsynced_batchnorm", "world_size"]

BATCHNORM_NOTE = (
    "the model has BatchNorm layers and runs on {n} processes: each process normalises its own share of every batch "
    "(a smaller batch than the benchmark's global one), which moves the losses the monitor compares; convert them "
    "with {how} to normalise over the global batch")

Reducer = Callable[[torch.Tensor], torch.Tensor]


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """Rank 0, or the only process."""
    return not is_distributed() or dist.get_rank() == 0


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def unsynced_batchnorm(model: torch.nn.Module) -> bool:
    """Whether ``model`` has BatchNorm layers that normalise per process (not ``torch.nn.SyncBatchNorm``)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(m, torch.nn.SyncBatchNorm)
               for m in model.modules())


def sum_across_processes(values: torch.Tensor, reducer: Reducer | None = None) -> torch.Tensor:
    """``values`` summed over every process (each must call it): ``reducer(values)`` when given, else an
    ``all_reduce`` when a process group is initialised (moved to the GPU for NCCL), else ``values``."""
    if reducer is not None:
        return reducer(values)
    if not is_distributed():
        return values
    if dist.get_backend() == "nccl" and values.device.type != "cuda":
        values = values.to(torch.device("cuda", torch.cuda.current_device()))
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
