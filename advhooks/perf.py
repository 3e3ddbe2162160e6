"""Process-level speed switches that a library must not flip on its own: opt-in, documented trade-offs."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["HostReads", "count_host_reads", "retain_host_memory"]

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def retain_host_memory() -> bool:
    """Keep freed CPU memory in the process instead of returning it to the OS (glibc only).

    PyTorch on the CPU allocates each activation afresh; large blocks come from ``mmap`` and go back to
    the OS when freed, so every attack iteration page-faults its activations in again (≈ 200k minor page
    faults per PGD-10 call of PreActResNet18, batch 32, measured here). With ``mmap`` off for ``malloc`` and
    no trimming, freed blocks are reused and the faults disappear. The price: the process keeps its peak
    memory until it exits. Process-wide and not undone; call it once at start-up.

    Returns:
        ``True`` if glibc accepted the settings, ``False`` on other C libraries (nothing changed).

    Example:
        >>> from advhooks.perf import retain_host_memory
        >>> retain_host_memory()  # doctest: +SKIP
        True
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    if not ok:
        log.warning("mallopt refused the settings; host memory is not retained")
    return ok


class HostReads:
    """How many times tensor values were copied to the host (see :func:`count_host_reads`)."""

    def __init__(self) -> None:
        self.count = 0


@contextmanager
def count_host_reads() -> Iterator[HostReads]:
    """Count the reads of tensor values on the host inside the block: ``.item()``, ``bool()``, ``float()``,
    ``.tolist()``.

    On a GPU each is a device synchronisation (and breaks CUDA-graph capture); on the CPU the same reads
    are visible at the dispatcher (``aten._local_scalar_dense``) and through ``Tensor.tolist``, so the
    attacks' "no host read in the loop" rule can be checked without a GPU.

    Example:
        >>> import torch
        >>> with count_host_reads() as reads:
        ...     _ = torch.ones(3).sum().item()
        >>> reads.count
        1
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    reads = HostReads()

    class _Counting(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                reads.count += 1
            return func(*args, **(kwargs or {}))

    original = torch.Tensor.tolist

    def counted_tolist(self):
        reads.count += 1
        return original(self)

    torch.Tensor.tolist = counted_tolist
    try:
        with _Counting():
            yield reads
    finally:
        torch.Tensor.tolist = original
