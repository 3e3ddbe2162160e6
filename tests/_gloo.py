"""Helpers for tests that run several gloo processes on the CPU.

Workers write their results, then leave through ``advhooks.integrations.accelerate.finish``: with torch
2.14 and gloo a process can abort at interpreter exit after all its work, so it meets the other ranks,
flushes and exits through os._exit(0) without the teardown.
"""

from __future__ import annotations

import datetime
import socket
import sys

import torch.distributed as dist

from advhooks.integrations.accelerate import finish


def init_gloo(rank: int, world: int, out_dir: str) -> None:
    """A file store, not a TCP port (no race for a free port); a failed peer times out instead of hanging CI."""
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))


def leave(barrier: bool = True) -> None:
    """``finish(barrier=barrier)``: meet the other ranks (unless one may be gone), flush, and exit."""
    finish(barrier=barrier)


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def accelerate_launch_command(*args: str, processes: int = 2) -> list[str]:
    """``accelerate launch`` with ``processes`` gloo processes on a CPU-only machine.

    Accelerate starts several processes only through its multi-GPU launcher; the scripts then ask for
    ``cpu=True``, which selects the gloo backend.
    """
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", free_port(), *args]
