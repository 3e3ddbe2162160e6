"""Paired timing rounds shared by the benchmarks: every row once per round, in a new order each round."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import torch

__all__ = ["paired_times", "sync"]


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired_times(fns: dict[str, Callable[[], None]], device: torch.device, repeats: int,
                 warmup: int) -> dict[str, torch.Tensor]:
    """Seconds per call of each function, one value per round (float64); ratios of rows are then paired.

    Each round runs every function once in a shuffled order (seeded), so a shared machine's drift hits all
    rows of a round alike and cancels out of their per-round ratios.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order, rng = list(fns), random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for k in order:
            sync(device)
            t0 = time.perf_counter()
            fns[k]()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in times.items()}
