"""The clean benchmark R*(0): measured once, stored as one safetensors file, read by the monitor.

The file holds the clean model's weights (tensors ``weights.<name>``), the per-sample clean test losses
(``stats.test_losses``, for uncertainty bands) and the record as JSON in the safetensors metadata
(key ``advhooks.record``). :func:`read_record` parses only the header, so reading the record never
reads the weights, and nothing is ever unpickled.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset

from ._datasets import labels_of
from ._outputs import logits_of
from ._version import __version__
from .attacks.criteria import Criterion, per_sample
from .attacks.model_state import eval_mode

__all__ = [
    "RECIPE_KEYS",
    "SCHEMA_VERSION",
    "BenchmarkFormatError",
    "CleanBenchmark",
    "benchmark_reference",
    "dataset_fingerprint",
    "evaluate_clean",
    "model_fingerprint",
    "read_record",
    "recipe_differences",
    "write_json_atomic",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_RECORD_KEY = "advhooks.record"
_WEIGHTS = "weights."
_TEST_LOSSES = "stats.test_losses"
_MAX_HEADER = 100 * 1024 * 1024


class BenchmarkFormatError(ValueError):
    """A file is not a readable advhooks clean benchmark (truncated, wrong schema, not safetensors)."""


def _sha256(chunks: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """Class, parameter count and a hash of parameter names and shapes."""
    params = list(model.named_parameters())
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "num_parameters": int(sum(p.numel() for _, p in params)),
        "hash": _sha256(f"{n}:{tuple(p.shape)};".encode() for n, p in params),
    }


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


def _criterion_name(criterion: Criterion | None) -> str:
    if criterion is None:
        return "cross_entropy"
    return getattr(criterion, "__name__", type(criterion).__name__)


@torch.no_grad()
def evaluate_clean(model: nn.Module, loader: Iterable, criterion: Criterion | None = None,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, float]:
    """Per-sample clean losses (float64, on the CPU) and the accuracy of ``model`` over ``loader``.

    The model is evaluated in eval mode and put back in the mode it was in.
    """
    crit = per_sample(criterion)
    losses, correct, n = [], torch.zeros((), dtype=torch.long), 0
    with eval_mode(model):
        for x, y in loader:
            if device is not None:
                x, y = x.to(device), y.to(device)
            logits = logits_of(model(x))
            loss = crit(logits, y)
            if loss.ndim != 1:
                raise ValueError("the criterion must return one loss per sample to measure a benchmark")
            losses.append(loss.double().cpu())
            correct += (logits.argmax(1) == y).sum().cpu()
            n += y.shape[0]
    if n == 0:
        raise ValueError("the data loader is empty")
    losses = torch.cat(losses)
    bad = ~torch.isfinite(losses)
    if bad.any():
        first = int(bad.nonzero()[0])
        raise ValueError(f"the clean loss is {float(losses[first])} for {int(bad.sum())} of {n} samples (first at "
                         f"index {first} of the loader): NaN or inf in the data or the model's weights")
    return losses, correct.item() / n


@dataclass
class CleanBenchmark:
    """The measured clean reference: R*(0), the clean training loss, Δ and where they came from.

    Attributes:
        clean_test_loss: R*(0), the mean per-sample clean test loss of the clean model.
        clean_train_loss: R̂(θ̂(0), 0), its mean clean training loss (``None`` when not measured).
        generalization_gap: Δ = R*(0) − R̂(θ̂(0), 0).
        clean_test_accuracy / clean_train_accuracy: accuracies of the same model.
        test_loss_stderr: standard error of R*(0) as a mean over the test set.
        best_epoch: the early-stopping epoch (``None`` for a model measured as given).
        n_train / n_test: sample counts; criterion: the loss's name.
        dataset / model: fingerprints (see :func:`dataset_fingerprint`, :func:`model_fingerprint`).
        training: how the clean model was trained (preset, epochs, lr, ...), when known.
        test_losses: per-sample clean test losses (kept in the file for uncertainty bands).
        state_dict: the clean model's weights (``None`` when only the record was read).

    Example:
        >>> net = nn.Linear(4, 3)
        >>> data = [(torch.rand(8, 4), torch.randint(0, 3, (8,)))]
        >>> bench = CleanBenchmark.measure(net, data, train_loader=data)
        >>> round(bench.generalization_gap, 6)
        0.0
    """

    clean_test_loss: float
    clean_train_loss: float | None
    generalization_gap: float | None
    clean_test_accuracy: float
    clean_train_accuracy: float | None
    test_loss_stderr: float
    n_test: int
    n_train: int | None
    criterion: str = "cross_entropy"
    best_epoch: int | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    advhooks_version: str = __version__
    torch_version: str = torch.__version__
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION
    test_losses: torch.Tensor | None = field(default=None, repr=False)
    state_dict: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    # -- measuring -------------------------------------------------------------------------------
    @classmethod
    def measure(cls, model: nn.Module, test_loader: Iterable, train_loader: Iterable | None = None,
                criterion: Criterion | None = None, device: torch.device | str | None = None,
                best_epoch: int | None = None, training: dict[str, Any] | None = None) -> CleanBenchmark:
        """Measure a clean model the user already has.

        Args:
            model: the clean-trained model (its weights are stored in the benchmark).
            test_loader: the test data, yielding ``(inputs, labels)``; R*(0) is its mean per-sample loss.
            train_loader: the training data *without augmentation*, for R̂(θ̂(0), 0) and Δ.
            criterion: per-sample loss, the same as training; default cross-entropy.
            device: where to run (default: where the data already is).
            best_epoch: the early-stopping epoch, if known.
            training: free-form description of the clean training (stored in the record).
        """
        test_losses, test_acc = evaluate_clean(model, test_loader, criterion, device)
        train_loss = train_acc = gap = None
        n_train = None
        if train_loader is not None:
            train_losses, train_acc = evaluate_clean(model, train_loader, criterion, device)
            train_loss = float(train_losses.mean())
            gap = float(test_losses.mean()) - train_loss
            n_train = int(train_losses.numel())
        test_ds = getattr(test_loader, "dataset", None)
        train_ds = getattr(train_loader, "dataset", None)
        dataset = dataset_fingerprint(train_ds, test_ds) if isinstance(test_ds, Dataset) else {}
        n = test_losses.numel()
        stderr = float(test_losses.std(unbiased=True) / math.sqrt(n)) if n > 1 else 0.0
        return cls(
            clean_test_loss=float(test_losses.mean()),
            clean_train_loss=train_loss,
            generalization_gap=gap,
            clean_test_accuracy=float(test_acc),
            clean_train_accuracy=None if train_acc is None else float(train_acc),
            test_loss_stderr=stderr,
            n_test=int(n),
            n_train=n_train,
            criterion=_criterion_name(criterion),
            best_epoch=best_epoch,
            dataset=dataset,
            model=model_fingerprint(model),
            training=dict(training or {}),
            test_losses=test_losses.float(),
            state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        )

    # -- derived values --------------------------------------------------------------------------
    def bootstrap_interval(self, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
        """A bootstrap interval of R*(0) over the test set (needs the stored per-sample losses)."""
        if self.test_losses is None:
            raise ValueError("this benchmark has no per-sample test losses (read it with load(), not read_record())")
        gen = torch.Generator().manual_seed(seed)
        losses = self.test_losses.double()
        idx = torch.randint(0, losses.numel(), (resamples, losses.numel()), generator=gen)
        means = losses[idx].mean(dim=1)
        lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
        return float(lo), float(hi)

    def warnings(self) -> list[str]:
        """What makes this benchmark a poor reference, in words (empty when nothing does).

        A clean model whose test loss is not above its training loss (Δ <= 0) gives ε* = 0 against anything;
        one whose best epoch is the last was still improving, so R*(0) is too high and every ε looks small.
        """
        out = []
        if self.generalization_gap is not None and self.generalization_gap <= 0:
            out.append(f"generalization gap Delta = {self.generalization_gap:.4f} <= 0: the clean model is not fitted "
                       "(train longer); eps* measured against this benchmark is 0")
        epochs = self.training.get("epochs")
        if self.best_epoch is not None and isinstance(epochs, int) and epochs > 1 and self.best_epoch >= epochs:
            out.append(f"the best epoch is the last one ({self.best_epoch} of {epochs}): the clean test loss was "
                       "still falling, so R*(0) is too high; train longer")
        return out

    def record(self) -> dict[str, Any]:
        """The JSON-serialisable record (everything but the tensors, which are never copied here)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in _TENSOR_FIELDS}

    def load_weights_into(self, model: nn.Module, strict: bool = True) -> nn.Module:
        """Load the clean weights into ``model`` (same architecture) and return it."""
        if self.state_dict is None:
            raise ValueError("this benchmark was read without its weights; use CleanBenchmark.load(path)")
        fp = model_fingerprint(model)
        if self.model.get("hash") and fp["hash"] != self.model["hash"]:
            raise ValueError(
                f"model does not match the benchmark's: {fp['class']} with {fp['num_parameters']} parameters vs "
                f"{self.model.get('class')} with {self.model.get('num_parameters')}"
            )
        model.load_state_dict(self.state_dict, strict=strict)
        return model

    # -- files -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the benchmark atomically (temporary file + rename) as one safetensors file."""
        path = Path(path)
        if not (math.isfinite(self.clean_test_loss) and self.clean_test_loss > 0):
            raise ValueError(f"refusing to save a benchmark whose R*(0) is {self.clean_test_loss}: it must be finite "
                             "and > 0 (a benchmark file that cannot be read back is worse than none)")
        tensors: dict[str, torch.Tensor] = {}
        for k, v in (self.state_dict or {}).items():
            tensors[_WEIGHTS + k] = v.detach().cpu().contiguous()
        if self.test_losses is not None:
            tensors[_TEST_LOSSES] = self.test_losses.detach().cpu().float().contiguous()
        if not tensors:  # safetensors needs at least a header; keep the file well-formed
            tensors["stats.empty"] = torch.zeros(0)
        metadata = {"format": "pt", _RECORD_KEY: json.dumps(self.record(), sort_keys=True)}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=metadata)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CleanBenchmark:
        """Read a benchmark file with its weights and per-sample losses (never unpickles)."""
        record = read_record(path)
        try:
            tensors = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types on corrupt data
            raise BenchmarkFormatError(f"{path}: cannot read tensors: {err}") from None
        bench = cls._from_record(record, path)
        bench.state_dict = {k[len(_WEIGHTS):]: v for k, v in tensors.items() if k.startswith(_WEIGHTS)}
        bench.test_losses = tensors.get(_TEST_LOSSES)
        return bench

    @classmethod
    def read(cls, path: str | os.PathLike) -> CleanBenchmark:
        """Read only the record (header bytes); ``state_dict`` and ``test_losses`` stay ``None``."""
        return cls._from_record(read_record(path), path)

    @classmethod
    def _from_record(cls, record: dict[str, Any], path: Any) -> CleanBenchmark:
        names = {f for f in cls.__dataclass_fields__ if f not in _TENSOR_FIELDS}
        missing = {"clean_test_loss", "clean_test_accuracy", "n_test"} - record.keys()
        if missing:
            raise BenchmarkFormatError(f"{path}: the record lacks {sorted(missing)}")
        for key, kind in _RECORD_TYPES.items():
            value = record.get(key)
            if value is None and key not in _REQUIRED_VALUES:
                continue
            if not _has_kind(value, kind):
                raise BenchmarkFormatError(f"{path}: malformed record: {key} = {value!r} is not {kind}")
        if not (math.isfinite(record["clean_test_loss"]) and record["clean_test_loss"] > 0):
            raise BenchmarkFormatError(f"{path}: malformed record: clean_test_loss must be finite and > 0")
        try:
            return cls(**{k: v for k, v in record.items() if k in names})
        except TypeError as err:
            raise BenchmarkFormatError(f"{path}: malformed record: {err}") from None

    def summary(self) -> str:
        """A few aligned lines for people."""
        def fmt(v: Any) -> str:
            return f"{v:.4f}" if isinstance(v, float) else str(v)

        rows = [
            ("R*(0) clean test loss", f"{self.clean_test_loss:.4f} ± {self.test_loss_stderr:.4f} (s.e.)"),
            ("clean train loss", fmt(self.clean_train_loss)),
            ("generalization gap Δ", fmt(self.generalization_gap)),
            ("clean test accuracy", fmt(self.clean_test_accuracy)),
            ("clean train accuracy", fmt(self.clean_train_accuracy)),
            ("best epoch", "- (a given model, measured as it is)" if self.best_epoch is None else str(self.best_epoch)),
            ("n train / n test", f"{self.n_train} / {self.n_test}"),
            ("criterion", self.criterion),
            ("model", f"{self.model.get('class', '?')} ({self.model.get('num_parameters', '?')} parameters)"),
            ("training", ", ".join(f"{k}={v}" for k, v in self.training.items()) or "-"),
            ("created", f"{self.created} (advhooks {self.advhooks_version}, torch {self.torch_version})"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# What a recipe records (in a benchmark's ``training`` and a run's ``recipe``) and the monitor compares.
RECIPE_KEYS = ("batch_size", "epochs", "optimizer", "lr", "momentum", "weight_decay", "schedule", "augmentation",
               "normalization", "n_train")


def recipe_differences(benchmark: CleanBenchmark, recipe: dict[str, Any]) -> list[str]:
    """What differs between a run's ``recipe`` and the recipe the benchmark was recorded with.

    Only what both sides know is compared; ``recipe["model"]`` (a module) is compared by fingerprint.

    Example:
        >>> bench = CleanBenchmark(0.1, 0.05, 0.05, 0.9, 0.95, 0.01, 100, 400, training={"batch_size": 64})
        >>> recipe_differences(bench, {"batch_size": 128})
        ["batch size 128 vs the benchmark's 64"]
    """
    out = []
    for key in RECIPE_KEYS:
        # Through JSON, as the benchmark's side was: a tuple and the list it was saved as are the same.
        ours = json.loads(json.dumps(recipe.get(key), default=str))
        theirs = benchmark.n_train if key == "n_train" else benchmark.training.get(key)
        if ours is None or theirs is None:
            continue
        same = math.isclose(float(ours), float(theirs), rel_tol=1e-9) if all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in (ours, theirs)) else ours == theirs
        if not same:
            out.append(f"{key.replace('_', ' ')} {ours} vs the benchmark's {theirs}")
    model = recipe.get("model")
    if isinstance(model, nn.Module) and benchmark.model.get("hash"):
        fp = model_fingerprint(model)
        if fp["hash"] != benchmark.model["hash"]:
            out.append(f"model {fp['class']} ({fp['num_parameters']} parameters) vs the benchmark's "
                       f"{benchmark.model.get('class')} ({benchmark.model.get('num_parameters')} parameters)")
    return out


def benchmark_reference(benchmark: CleanBenchmark | float) -> dict[str, Any]:
    """What identifies a benchmark in a run record: R*(0), its s.e., when it was made, the model and data."""
    if not isinstance(benchmark, CleanBenchmark):
        return {"clean_test_loss": float(benchmark)}
    return {"clean_test_loss": benchmark.clean_test_loss, "test_loss_stderr": benchmark.test_loss_stderr,
            "created": benchmark.created, "model_hash": benchmark.model.get("hash"),
            "test_labels_hash": benchmark.dataset.get("test_labels_hash"), "n_test": benchmark.n_test}


def write_json_atomic(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` as JSON through a temporary file renamed into place (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(value, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_TENSOR_FIELDS = ("test_losses", "state_dict")
_REQUIRED_VALUES = ("clean_test_loss", "clean_test_accuracy", "n_test")
# What each record field must hold; None is accepted for the optional ones.
_RECORD_TYPES = {
    "clean_test_loss": "a number", "clean_train_loss": "a number", "generalization_gap": "a number",
    "clean_test_accuracy": "a number", "clean_train_accuracy": "a number", "test_loss_stderr": "a number",
    "n_test": "an integer", "n_train": "an integer", "best_epoch": "an integer", "criterion": "a string",
    "dataset": "an object", "model": "an object", "training": "an object", "advhooks_version": "a string",
    "torch_version": "a string", "created": "a string",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_kind(value: Any, kind: str) -> bool:
    if kind == "a number":
        return _is_int(value) or isinstance(value, float)  # NaN allowed: a stderr of one sample
    if kind == "an integer":
        return _is_int(value) and value >= 0
    if kind == "a string":
        return isinstance(value, str)
    return isinstance(value, dict)


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The benchmark record from a file's safetensors header, reading nothing past the header.

    Raises:
        FileNotFoundError: no such file.
        BenchmarkFormatError: not a safetensors file, truncated, not an advhooks benchmark, or a schema
            version this library cannot read.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise BenchmarkFormatError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > _MAX_HEADER or n > size - 8:
            raise BenchmarkFormatError(f"{path}: not a safetensors file (header length {n} does not fit the file)")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BenchmarkFormatError(f"{path}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise BenchmarkFormatError(f"{path}: not a safetensors file (header is not a JSON object)")
    ends = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)
                and offsets[0] <= offsets[1]):
            raise BenchmarkFormatError(f"{path}: not a safetensors file (bad entry for tensor {name!r})")
        ends.append(offsets[1])
    if ends and max(ends) > size - 8 - n:
        raise BenchmarkFormatError(f"{path}: truncated ({size} bytes; the header describes {8 + n + max(ends)})")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or _RECORD_KEY not in meta:
        raise BenchmarkFormatError(f"{path}: a safetensors file, but not an advhooks clean benchmark (no record)")
    try:
        record = json.loads(meta[_RECORD_KEY])
    except (TypeError, json.JSONDecodeError):
        raise BenchmarkFormatError(f"{path}: the benchmark record is not valid JSON") from None
    if not isinstance(record, dict):
        raise BenchmarkFormatError(f"{path}: the benchmark record is not a JSON object")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BenchmarkFormatError(
            f"{path}: benchmark schema version {version!r}; this advhooks ({__version__}) reads version "
            f"{SCHEMA_VERSION}. Re-record it with `advhooks benchmark-clean`."
        )
    return record


def __getattr__(name: str) -> Any:  # step_decay and record_clean_benchmark lived here until 0.1.0
    from ._moved import moved_attribute

    return moved_attribute(__name__, name)
