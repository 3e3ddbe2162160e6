"""Units on disk: one JSON file each, reused only when it was run with the same recipe, model and data; and an
estimate as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from ...benchmark import dataset_fingerprint, model_fingerprint
from ..estimate import estimate_eps_star
from ..estimate.settings import FinetuneSettings, attack_name
from .settings import STUDY_SCHEMA, StudySettings, Unit, finetune_epochs_of


def estimate_as_json(method: str, bench: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """An estimate as JSON; one that cannot be made (e.g. a clean model too poor for the probe to choose its
    points) is a unit without a value that says why, not the end of the study."""
    try:
        return estimate_eps_star(method, bench, *args, **kwargs).to_dict()
    except ValueError as err:
        return {"method": method, "value": None, "interval": None, "warnings": [f"no {method} estimate: {err}"]}


def unit_recipe(settings: StudySettings, unit: Unit) -> dict[str, Any]:
    """What a unit's result depends on: a stored unit is reused only under the same values."""
    recipe = settings.recipe.to_dict()
    if unit.kind == "fgsm":
        out = {"fgsm_eps": settings.fgsm_eps, **{k: recipe[k] for k in ("epochs", "lr", "batch_size")},
               "split_seed": settings.split_seed, "seed": settings.seeds[0]}
    else:
        keep = ("method", "norm", "split_seed", "level")
        out = {k: getattr(settings, k) for k in keep} | recipe | {"grid_check": settings.grid_checked(unit)}
        if settings.method == "finetune":
            out["finetune_epochs"] = finetune_epochs_of(settings)
            # the estimator's own settings: a unit estimated another way is not reused
            defaults = FinetuneSettings()
            out["finetune"] = {"attack": attack_name(defaults.attack), "cooldown": defaults.cooldown,
                               "growth": defaults.growth, "max_points": defaults.max_points}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


def unit_identity(setting: dict[str, Any], model: nn.Module, subset: Dataset, test_set: Dataset) -> dict[str, Any]:
    """The setting a unit ran on: its description, the model's architecture and the data's labels."""
    data = dataset_fingerprint(subset, test_set)
    return {"setting": setting, "model_hash": model_fingerprint(model)["hash"],
            "data": {k: data.get(k) for k in ("n_train", "n_test", "train_labels_hash", "test_labels_hash")}}


def read_stored(path: Path, unit: Unit, recipe: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any] | None:
    """The unit stored at ``path`` when there is one, checked against what this study would run."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(stored, dict) or stored.get("schema") != STUDY_SCHEMA or stored.get("unit") != unit.as_list():
        raise ValueError(f"{path} is not this study's unit {unit.as_list()} ({STUDY_SCHEMA})")
    for name, ours, theirs in (("settings", recipe, stored.get("settings")),
                               ("model or data", identity, stored.get("identity"))):
        if ours != theirs:
            differ = differences(ours, theirs if isinstance(theirs, dict) else {})
            raise ValueError(f"{path} was run with other {name} ({differ}); use another --units folder")
    return stored


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    """``key: stored -> now`` for each key that differs."""
    keys = sorted(set(ours) | set(theirs))
    return ", ".join(f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in keys if ours.get(k) != theirs.get(k))


