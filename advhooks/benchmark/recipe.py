"""What a benchmark was made of: fingerprints of the model and the data, the training recipe it records,
and what identifies it in a run record."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .._datasets import labels_of
from ..schedules import step_decay

if TYPE_CHECKING:
    from .clean_benchmark import CleanBenchmark

__all__ = ["RECIPE_KEYS", "SCHEDULES", "SETUP_KEYS", "Recipe", "RunSetup", "benchmark_reference",
           "check_benchmark_setup", "dataset_fingerprint", "differing_keys", "given_recipe", "model_fingerprint",
           "recipe_differences", "unwrap_model"]


def _sha256(chunks: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()[:16]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside the wrappers that frameworks put around it: ``DistributedDataParallel`` and
    ``DataParallel`` (``.module``), ``torch.compile`` (``._orig_mod``), at any depth: what a fingerprint names.
    Not what an attack runs: :func:`~advhooks.attacks.unwrap_parallel` removes DDP only, so a compiled or
    ``DataParallel`` model still runs as the user wrapped it."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """Class, parameter count and a hash of parameter names and shapes, of the network inside any wrapper:
    framework wrappers (:func:`unwrap_model`: DDP, ``torch.compile``) and containers whose parameters all
    live in one child (a LightningModule's ``self.net``, a model class around a backbone). The same network
    fingerprints the same however it is held."""
    model = _network_of(unwrap_model(model))
    params = list(model.named_parameters())
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "num_parameters": int(sum(p.numel() for _, p in params)),
        "hash": _sha256(f"{n}:{tuple(p.shape)};".encode() for n, p in params),
    }


def _network_of(model: nn.Module) -> nn.Module:
    """Descend through modules that own no parameter themselves and hold all of them in one child."""
    while not any(True for _ in model.parameters(recurse=False)):
        holders = [child for child in model.children() if any(True for _ in child.parameters())]
        if len(holders) != 1:
            return model
        model = unwrap_model(holders[0])
    return model


def dataset_fingerprint(train: Dataset | None, test: Dataset) -> dict[str, Any]:
    """Sizes, sample shape, number of classes and a hash of the labels of both splits."""
    test_labels = labels_of(test)
    out: dict[str, Any] = {
        "n_test": int(len(test)),
        "sample_shape": list(test[0][0].shape),
        "num_classes": int(test_labels.max()) + 1 if len(test_labels) else 0,
        "test_labels_hash": _sha256([test_labels.to(torch.int64).numpy().tobytes()]),
    }
    if train is not None:
        train_labels = labels_of(train)
        out["n_train"] = int(len(train))
        out["train_labels_hash"] = _sha256([train_labels.to(torch.int64).numpy().tobytes()])
    return out


# The learning-rate schedules the kit trains as named: the paper's step decay, or none.
SCHEDULES = ("step_decay", "constant")


@dataclass(frozen=True)
class Recipe:
    """How a model is trained: what a clean benchmark records and every adversarial run must share with it.

    The defaults, declared here once, are the embedded default's (the ``digits-mlp`` preset): every place that
    trains (``benchmark-clean``, the estimators, the study, the demo) starts from ``Recipe()`` or a preset's
    recipe and replaces only what it is given (:meth:`with_given`).

    Args:
        epochs: training epochs.
        batch_size: the global batch size (per-process batch × processes).
        lr / momentum / weight_decay: SGD's settings.
        optimizer / schedule: their names (``"sgd"``; ``"step_decay"``: the learning rate / 10 at 1/2 and 3/4
            of the epochs, the paper's; ``"constant"``: no decay).
        augmentation: whether the training data is augmented (the CIFAR presets: crop + flip).

    Example:
        >>> recipe = Recipe().with_given(lr=0.1, batch_size=None)  # None: keep the default
        >>> recipe.lr, recipe.batch_size, recipe.epochs
        (0.1, 64, 60)
    """

    epochs: int = 60
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    schedule: str = "step_decay"
    augmentation: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def lr_factor(self, epoch: int) -> float:
        """The learning rate's factor in ``epoch`` (from 0) when the kit trains this recipe: 1 for ``"constant"``,
        else the paper's step decay (a schedule recorded by another loop, e.g. the HF Trainer's ``"linear"``, is
        trained as step decay: the kit's trainers warn when they do)."""
        return 1.0 if self.schedule == "constant" else step_decay(epoch, self.epochs)

    def with_given(self, **given: Any) -> Recipe:
        """This recipe with the values that are given (``None``: keep this recipe's)."""
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as a benchmark's ``training`` entry stores them."""
        return asdict(self)

    @classmethod
    def from_record(cls, training: Mapping[str, Any]) -> Recipe:
        """The recipe a benchmark's ``training`` entry records (what it does not record: the defaults)."""
        return cls(**{f.name: training[f.name] for f in fields(cls) if training.get(f.name) is not None})


# A recipe's fields: what a run's recipe and a benchmark's are compared on.
RECIPE_KEYS = tuple(f.name for f in fields(Recipe))
# What is trained, compared beside the recipe: the model (by fingerprint), the data's normalisation, the training-set
# size (a RunSetup; keys a recipe mapping may carry as sugar).
SETUP_KEYS = ("model", "normalization", "n_train")


@dataclass(frozen=True)
class RunSetup:
    """What a run trains, compared with its benchmark beside the recipe: not how the model is trained (the
    :class:`Recipe`) but which model, on which data.

    Args:
        model: the network (compared by :func:`model_fingerprint`).
        normalization: how the data is normalised (``{"mean": [...], "std": [...]}`` as benchmarks record it).
        n_train: the training set's size.

    Example:
        >>> values, setup = given_recipe({"batch_size": 64, "n_train": 1347, "model": None})
        >>> values, setup.n_train
        ({'batch_size': 64, 'n_train': 1347}, 1347)
    """

    model: nn.Module | None = None
    normalization: Any = None
    n_train: int | None = None

    def given(self) -> dict[str, Any]:
        """The values given (``None`` ones left out), keyed by :data:`SETUP_KEYS`."""
        return {k: getattr(self, k) for k in SETUP_KEYS if getattr(self, k) is not None}

    def plain(self) -> dict[str, Any]:
        """The values a record keeps as they are (the model is kept as its fingerprint)."""
        return {k: v for k, v in self.given().items() if k != "model"}

    def joined(self, other: RunSetup | None) -> RunSetup:
        """This setup with what ``other`` gives (``other`` wins where both give a value)."""
        return self if other is None else RunSetup(**{**self.given(), **other.given()})


def given_recipe(recipe: Recipe | Mapping[str, Any] | None) -> tuple[dict[str, Any], RunSetup]:
    """A recipe at the door: its plain values, as a run record or a benchmark keeps them, and the :class:`RunSetup`
    it carries.

    A :class:`Recipe` gives all its fields. A mapping is sugar for one: its ``model``, ``normalization`` and
    ``n_train`` keys make the setup; the plain values are the mapping as the user gave it, in its order, but for the
    model (a benchmark fingerprints it); only what is given is compared.
    """
    if recipe is None:
        return {}, RunSetup()
    if isinstance(recipe, Recipe):
        return recipe.to_dict(), RunSetup()
    if not isinstance(recipe, Mapping):
        raise TypeError(f"recipe must be a Recipe or a mapping, got {type(recipe).__name__}")
    values = {k: v for k, v in recipe.items() if k != "model"}
    return values, RunSetup(**{k: recipe[k] for k in SETUP_KEYS if k in recipe})


def recipe_differences(benchmark: CleanBenchmark, recipe: Recipe | Mapping[str, Any],
                       setup: RunSetup | None = None) -> list[str]:
    """What differs between a run's ``recipe`` (and ``setup``) and what the benchmark was recorded with, one phrase
    each.

    ``recipe``: a :class:`Recipe`, or a mapping (:func:`given_recipe`); only what both sides know is compared.

    Example:
        >>> from advhooks.benchmark import CleanBenchmark
        >>> bench = CleanBenchmark(0.1, 0.05, 0.05, 0.9, 0.95, 0.01, 100, 400, training={"batch_size": 64})
        >>> recipe_differences(bench, {"batch_size": 128})
        ["batch size 128 vs the benchmark's 64"]
    """
    return list(differing_keys(benchmark, recipe, setup).values())


def differing_keys(benchmark: CleanBenchmark, recipe: Recipe | Mapping[str, Any],
                   setup: RunSetup | None = None) -> dict[str, str]:
    """:func:`recipe_differences` keyed by what differs (a key of :data:`RECIPE_KEYS` or :data:`SETUP_KEYS`)."""
    values, carried = given_recipe(recipe)
    setup = carried.joined(setup)
    given = {**values, **setup.given()}
    out = {}
    for key in (*RECIPE_KEYS, *(k for k in SETUP_KEYS if k != "model")):  # the model: by fingerprint, below
        # Through JSON, as the benchmark's side was: a tuple and the list it was saved as are the same.
        ours = json.loads(json.dumps(given.get(key), default=str))
        theirs = benchmark.n_train if key == "n_train" else benchmark.training.get(key)
        if ours is None or theirs is None:
            continue
        same = math.isclose(float(ours), float(theirs), rel_tol=1e-9) if all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in (ours, theirs)) else ours == theirs
        if not same:
            out[key] = f"{key.replace('_', ' ')} {ours} vs the benchmark's {theirs}"
    if isinstance(setup.model, nn.Module) and benchmark.model.get("hash"):
        fp = model_fingerprint(setup.model)
        if fp["hash"] != benchmark.model["hash"]:
            out["model"] = (f"model {fp['class']} ({fp['num_parameters']} parameters) vs the benchmark's "
                            f"{benchmark.model.get('class')} ({benchmark.model.get('num_parameters')} parameters)")
    return out


def check_benchmark_setup(benchmark: CleanBenchmark, model: nn.Module, train_set: Dataset, test_set: Dataset, *,
                          strict: bool = False) -> str | None:
    """Is this the benchmark's setting? Data that is not the benchmark's (sizes or label hashes of either split)
    is a ``ValueError``; another model is returned as a sentence (a ``ValueError`` when ``strict``), ``None``
    when it is the benchmark's."""
    fingerprint = dataset_fingerprint(train_set, test_set)
    data = [f"{key} {fingerprint.get(key)} vs the benchmark's {benchmark.dataset[key]}"
            for key in ("n_train", "n_test", "train_labels_hash", "test_labels_hash")
            if key in benchmark.dataset and benchmark.dataset[key] != fingerprint.get(key)]
    if data:
        recorded = benchmark.training.get("split_seed")
        raise ValueError(f"the data is not the benchmark's (another split or data set; the benchmark was recorded "
                         f"with split seed {recorded}, see --split-seed): " + "; ".join(data))
    difference = differing_keys(benchmark, {}, RunSetup(model=model)).get("model")
    if difference and strict:
        raise ValueError(f"the benchmark was recorded on something else: {difference}")
    return None if difference is None else f"the benchmark was recorded on something else: {difference}"


def benchmark_reference(benchmark: CleanBenchmark | float) -> dict[str, Any]:
    """What identifies a benchmark in a run record: R*(0), its s.e., when it was made, the model and data."""
    if isinstance(benchmark, (int, float)):
        return {"clean_test_loss": float(benchmark)}
    return {"clean_test_loss": benchmark.clean_test_loss, "test_loss_stderr": benchmark.test_loss_stderr,
            "created": benchmark.created, "model_hash": benchmark.model.get("hash"),
            "test_labels_hash": benchmark.dataset.get("test_labels_hash"), "n_test": benchmark.n_test}
