"""Random starts that are a function of the sample, not of the random generator's history.

An evaluation of fixed weights (the paper's R̂, the adversarial test loss that selects θ̂, the probe) must give
the same number whatever training did to the global generator and however the samples are split between
processes. :class:`SampleNoise` draws each sample's numbers from a counter-based hash of
``(seed, sample index, ε, draw, element)``: batched integer arithmetic on the sample's device, no host read. (A
``cuda_graph=True`` attack given one runs its eager loop: the captured loop draws its own starts.)

Pass one as an attack's ``generator=``; :func:`~advhooks.attacks.norms.random_in_ball_` then takes its
uniform and Gaussian numbers from it. Each draw (a restart's start) advances its counter.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import torch

__all__ = ["SampleNoise"]

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mul32(x: torch.Tensor | int, constant: int) -> torch.Tensor | int:
    """``x * constant`` modulo 2³² for ``x`` in [0, 2³²) held in int64 (or a Python int), without a signed overflow."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK


def _mix32(x: torch.Tensor | int) -> torch.Tensor | int:
    """A 32-bit integer finaliser (xor-shift / multiply rounds): nearby inputs give unrelated outputs. The same
    arithmetic on a tensor (on its device) and on a Python int (the host-side keys: no tensor, no device)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _fold(value: int) -> int:
    """A Python integer of any size (a negative one as its 64-bit two's complement) folded to 32 bits by the same
    finaliser (host side, once per key)."""
    if value < 0:
        value &= (1 << 64) - 1
    out = 0
    while True:
        out = _mix32(((out ^ (value & _MASK)) + _GOLDEN) & _MASK)
        value >>= 32
        if value == 0:
            return out


class SampleNoise:
    """Per-sample random numbers keyed by ``(seed, sample index, ε)``: the same sample draws the same start on
    any process, in any batch, after any amount of training.

    Args:
        indices: each sample's index in its data set (the order of the batch), an int64 tensor or a sequence.
        seed: the evaluation's seed.
        eps: the strength the start is drawn for (a start at another ε is another draw).

    Example:
        >>> a = SampleNoise([3, 7], seed=0, eps=0.1).rand((2, 4))
        >>> b = SampleNoise([7], seed=0, eps=0.1).rand((1, 4))
        >>> bool(torch.equal(a[1], b[0])), bool(((a > 0) & (a < 1)).all())
        (True, True)
    """

    def __init__(self, indices: torch.Tensor | Sequence[int], *, seed: int, eps: float) -> None:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        if indices.ndim != 1:
            raise ValueError(f"indices must be one index per sample, got shape {tuple(indices.shape)}")
        if not math.isfinite(eps):
            raise ValueError(f"eps must be finite, got {eps}")
        base = _fold((_fold(int(seed)) << 64) | struct.unpack("<Q", struct.pack("<d", float(eps)))[0])
        self._keys = _mix32((_mix32(indices & _MASK) ^ (indices >> 32) ^ base) & _MASK)
        self._draws = 0

    def __len__(self) -> int:
        return int(self._keys.shape[0])

    def _bits(self, shape: Sequence[int], device: torch.device | str | None) -> torch.Tensor:
        """Per element, 32 fresh pseudo-random bits (int64), one row per sample; advances the draw counter."""
        shape = tuple(shape)
        if not shape or shape[0] != len(self):
            raise ValueError(f"SampleNoise holds {len(self)} samples, asked for shape {shape}")
        per_sample = math.prod(shape[1:])
        keys = self._keys = self._keys.to(device)  # (moved once, then kept where the samples are)
        draw = _mix32((self._draws * _GOLDEN) & _MASK)
        self._draws += 1
        # The element's counter spread by the golden ratio, xor-ed (not added: two samples then share no shifted run of
        # numbers) into the sample's key, then one finaliser round, which avalanches every input bit.
        spread = _mul32(torch.arange(per_sample, dtype=torch.int64, device=keys.device), _GOLDEN)
        return _mix32((keys ^ draw).unsqueeze(1) ^ spread.unsqueeze(0)).reshape(shape)

    def rand(self, shape: Sequence[int], *, device: torch.device | str | None = None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform numbers in the open interval (0, 1), one row of ``shape[1:]`` per sample (also after rounding to a
        narrow ``dtype``: the largest value is the one just below 1)."""
        bits = self._bits(shape, device)
        uniform = ((bits >> 8).to(torch.float64) + 0.5).mul_(2.0 ** -24).to(dtype)
        return uniform.clamp_(max=1.0 - torch.finfo(dtype).eps / 2)  # (the spacing just below 1 is half eps)

    def randn(self, shape: Sequence[int], *, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal numbers (Box–Muller from two uniform draws), one row of ``shape[1:]`` per sample."""
        u1 = self.rand(shape, device=device, dtype=torch.float64)
        u2 = self.rand(shape, device=device, dtype=torch.float64)
        return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).to(dtype)
