"""The run record: one monitored run as plain JSON values (what ``estimate-eps-star --method records`` reads)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._files import atomic_write, write_json_atomic
from ..attacks import Attack
from ..benchmark import benchmark_reference, model_fingerprint

if TYPE_CHECKING:
    from .phase_monitor import PhaseMonitor

__all__ = ["RUN_RECORD_SCHEMA", "run_record", "write_record", "write_weights"]

RUN_RECORD_SCHEMA = "advhooks.run/1"


def run_record(monitor: PhaseMonitor, attack: Attack | None, chance_loss: float | None = None) -> dict[str, Any]:
    """``monitor``'s run with the evaluation ``attack`` and ln K (``chance_loss``, when known); the setup's model is
    stored as its fingerprint."""
    setup = monitor.setup
    # the setup's plain values beside the recipe's, as a benchmark's training entry keeps them; the model by hash
    recipe = {**dict(monitor.recipe), **setup.plain()}
    if isinstance(setup.model, nn.Module):
        recipe["model_hash"] = model_fingerprint(setup.model)["hash"]
    recipe.setdefault("epochs", monitor.total_epochs)
    rhat = monitor.rhat
    return {
        "schema": RUN_RECORD_SCHEMA,
        "eps": monitor.last_eps if monitor.last_eps is not None else monitor.eps,
        "attack": None if attack is None else repr(attack),
        "norm": None if attack is None else attack.norm,
        "epochs": monitor.history.rows(),
        "early_stopped_epoch": None if rhat is None else rhat["epoch"],
        "rhat": None if rhat is None else dict(rhat),
        # The run's health: its first NaN/inf epoch, and the loss of a uniform guess (ln K) that R̂ must stay below.
        "diverged_epoch": monitor.history.first_nonfinite_epoch(),
        "chance_loss": chance_loss,
        "recipe": recipe,
        "benchmark": benchmark_reference(monitor.benchmark),
        "level": monitor.level,
        "evaluation_seconds": dict(monitor.evaluation_seconds),
    }


def write_record(path: str | os.PathLike, record: dict[str, Any],
                 weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``record`` as JSON atomically; with ``weights``, those first, as ``<stem>.safetensors`` beside it.

    The record then names the weights file in ``"checkpoint"`` (relative to its folder), which
    ``advhooks connectivity --checkpoint record.json`` reads.
    """
    path = Path(path)
    if weights is not None:
        target = write_weights(path.with_suffix(".safetensors"), weights)
        record = {**record, "checkpoint": target.name}
    return write_json_atomic(path, record)


def write_weights(path: str | os.PathLike, weights: dict[str, torch.Tensor]) -> Path:
    """Weights (θ̂'s) as one safetensors file, written atomically (a temporary file renamed into place); each tensor
    copied to the CPU on its own, so shared storage (tied weights) is written once per name."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp))
