"""Helpers for tests that run several gloo processes on the CPU.

With torch 2.14 and gloo, a process can abort at interpreter exit after all its work ("terminate called
without an active exception"), with or without destroy_process_group. So workers write their results,
meet at a barrier, flush, and leave through os._exit(0) without the teardown.
"""

from __future__ import annotations

import datetime
import os
import sys

import torch.distributed as dist


def init_gloo(rank: int, world: int, out_dir: str) -> None:
    """A file store, not a TCP port (no race for a free port); a failed peer times out instead of hanging CI."""
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))


def leave(barrier: bool = True) -> None:
    """Meet the other ranks (unless one may be gone), flush, and exit without gloo's teardown."""
    if barrier:
        dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
