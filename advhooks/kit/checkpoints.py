"""Model weights from a file a user hands us: safetensors, or a torch state dict read with ``weights_only``.

Checkpoints written from a wrapped model carry the wrapper in every key: ``module.`` for
``DataParallel``/``DistributedDataParallel``, ``_orig_mod.`` for ``torch.compile``. :func:`load_weights`
strips such a prefix when the keys then match the model, and otherwise names what does not match in one
line. Nothing is ever unpickled beyond what ``torch.load(weights_only=True)`` allows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["WRAPPER_PREFIXES", "load_weights", "read_checkpoint", "read_state_dict"]

# Key prefixes that wrappers add to a model's state dict (DataParallel/DDP, torch.compile).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_BENCHMARK_WEIGHTS = "weights."  # an advhooks clean benchmark stores its model's weights under this prefix


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` (an advhooks benchmark's weights too) or a torch file.

    Torch files are read with ``weights_only=True``; a ``{"state_dict": ...}`` wrapper (Lightning and many
    scripts) is unwrapped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not readable as a state dict.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types on corrupt data
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
        if any(k.startswith(_BENCHMARK_WEIGHTS) for k in state):
            state = {k[len(_BENCHMARK_WEIGHTS):]: v for k, v in state.items() if k.startswith(_BENCHMARK_WEIGHTS)}
        return state
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, ... on what it refuses
        raise ValueError(f"{path}: not a torch state dict readable with weights_only=True ({err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"{path}: expected a state dict (names to tensors), found {type(state).__name__}")
    return state


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """A state dict from a weights file (as :func:`read_state_dict`) or from a run record that names one.

    A ``.json`` file is read as a run record (:meth:`~advhooks.PhaseMonitor.record`); its ``"checkpoint"``
    entry (a path relative to the record's folder, written by ``PhaseMonitor.save_record(..., weights=True)``)
    is the weights file. Returns the state dict and the path it was read from.
    """
    path = Path(path)
    if path.suffix != ".json":
        return read_state_dict(path), str(path)
    if not path.exists():
        raise FileNotFoundError(f"run record not found: {path}")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    named = record.get("checkpoint") if isinstance(record, dict) else None
    if not isinstance(named, str) or not named:
        raise ValueError(f"{path}: the run record names no weights (no 'checkpoint' entry; save the record with "
                         "PhaseMonitor.save_record(path, weights=True), or pass the weights file itself)")
    weights = path.parent / named
    return read_state_dict(weights), str(weights)


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items()}


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "the checkpoint") -> nn.Module:
    """Load ``state`` into ``model`` strictly, looking through wrapper prefixes; return the model.

    Args:
        model: the bare model (not wrapped).
        state: a state dict, possibly saved from a ``DataParallel``/DDP or ``torch.compile`` wrapper.
        source: how to name the state in an error (e.g. the file's path).

    Raises:
        ValueError: the names still differ after stripping, or a shape differs; the message names them.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> saved = {"module." + k: v for k, v in nn.Linear(2, 2).state_dict().items()}
        >>> load_weights(net, saved) is net
        True
    """
    expected = set(model.state_dict())
    names = set(state)
    removed = ""
    for prefix in WRAPPER_PREFIXES:  # in wrapping order: DDP(compile(model)) saves "module._orig_mod."
        if names != expected and names and all(k.startswith(prefix) for k in names):
            state, removed = _strip(state, prefix), removed + prefix
            names = set(state)
    if names != expected:
        missing, unexpected = sorted(expected - names), sorted(names - expected)
        hint = f" (after removing the wrapper prefix {removed!r} from every key)" if removed else ""
        raise ValueError(f"{source} does not fit the model{hint}: missing {_few(missing)}; "
                         f"unexpected {_few(unexpected)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shape mismatches
        detail = " ".join(str(err).split())
        raise ValueError(f"{source} does not fit the model: {detail[:300]}") from None
    return model


def _few(keys: list[str]) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:3])
    return f"{shown} (+{len(keys) - 3} more)" if len(keys) > 3 else shown
