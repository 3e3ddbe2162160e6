"""Put a model into attack mode and back, leaving it exactly as it was found.

An attack must not change the model: not a submodule's train/eval mode, not a BatchNorm running
statistic, not ``num_batches_tracked``, not a ``requires_grad`` flag. Parameters and their ``.grad``
are untouched because input gradients come from ``torch.autograd.grad`` with the perturbation as the
only input.

During the attack the parameters are frozen (``requires_grad=False``): the forward then records only
what the input gradient needs (a convolution keeps its weight, not its input), which saves memory and
a few percent of time per iteration. The flags are restored on exit, also when the model raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.parallel import DistributedDataParallel
from torch.nn.parameter import UninitializedParameter

__all__ = ["BN_MODES", "attack_mode", "eval_mode", "unwrap_parallel"]

BN_MODES = ("eval", "train")


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel wrappers.

    Attack forwards go to the inner module so DDP never prepares a gradient reduction for a backward
    that will not come (which would fail the next step with "expected to have finished reduction"),
    and never broadcasts buffers once per attack step.
    """
    while isinstance(model, DistributedDataParallel):
        model = model.module
    return model


@contextmanager
def _modes_restored(module: nn.Module) -> Iterator[None]:
    """Put every submodule's train/eval flag back as it was on exit (also after an exception)."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        yield
    finally:
        for m, was_training in modes:
            m.training = was_training


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode for an evaluation; every submodule's mode is restored on exit.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> with eval_mode(net):
        ...     net.training
        False
        >>> net.training
        True
    """
    with _modes_restored(model):
        model.eval()
        yield model


@contextmanager
def attack_mode(model: nn.Module, bn: str = "eval") -> Iterator[nn.Module]:
    """Context in which ``model`` runs an attack; restores every module's state on exit.

    Args:
        model: the model (DDP wrappers are looked through).
        bn: ``"eval"``: the whole model is put in eval mode (running statistics, dropout off), as in
            TRADES/MART and most attack libraries; ``"train"``: modes stay as the user set them and
            BatchNorm layers in training mode use batch statistics without updating their running
            statistics (as in the code of Rice et al. that the paper modified).

    Yields:
        The unwrapped module to run forwards on.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
        >>> with attack_mode(net, "eval") as m:
        ...     m.training
        False
        >>> net.training
        True
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    module = unwrap_parallel(model)
    untracked: list[_NormBase] = []
    # Lazy modules' uninitialised parameters cannot be touched until their first forward.
    frozen = [p for p in module.parameters() if p.requires_grad and not isinstance(p, UninitializedParameter)]
    with _modes_restored(module):
        try:
            for p in frozen:
                p.requires_grad_(False)
            if bn == "eval":
                module.eval()
            else:
                for m in module.modules():
                    if isinstance(m, _NormBase) and m.training and m.track_running_stats:
                        m.track_running_stats = False
                        untracked.append(m)
            yield module
        finally:
            for p in frozen:
                p.requires_grad_(True)
            for m in untracked:
                m.track_running_stats = True


def autocast_loss_scale(device_type: str) -> float:
    """Factor for the attack loss so fp16 autocast backward passes do not underflow.

    Sign and L2 directions are scale-invariant, so a fixed factor changes nothing but the range; bf16
    and fp32 have fp32's exponent range and need none.
    """
    if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16:
        return 1024.0
    return 1.0
