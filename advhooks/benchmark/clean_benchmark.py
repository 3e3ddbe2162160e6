"""The clean benchmark R*(0): :class:`CleanBenchmark`, measured from a clean model, saved to and read from one
benchmark file (:mod:`advhooks.benchmark.file_format`: a JSON header and the tensors)."""

from __future__ import annotations

import copy
import datetime as _dt
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .._outputs import logits_of
from .._version import __version__
from ..attacks.criteria import Criterion, per_sample
from ..attacks.model_state import eval_mode
from .file_format import SCHEMA_VERSION, BenchmarkFormatError, check_header, read_header, read_tensors, write_file
from .recipe import dataset_fingerprint, model_fingerprint

__all__ = ["CleanBenchmark", "evaluate_clean"]

_TENSOR_FIELDS = ("test_losses", "state_dict")


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
        state_dict: the clean model's weights (``None`` when only the header was read).

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
            training: free-form description of the clean training (stored in the header).
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
            raise ValueError("this benchmark has no per-sample test losses (read it with load(), not read_header())")
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

    def header(self) -> dict[str, Any]:
        """The JSON-serialisable header (everything but the tensors, which are never copied here)."""
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
        return write_file(path, self.header(), self.state_dict, self.test_losses)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CleanBenchmark:
        """Read a benchmark file with its weights and per-sample losses (never unpickles)."""
        bench = cls._from_header(read_header(path), path)
        bench.state_dict, bench.test_losses = read_tensors(path)
        return bench

    @classmethod
    def read(cls, path: str | os.PathLike) -> CleanBenchmark:
        """Read only the header (header bytes); ``state_dict`` and ``test_losses`` stay ``None``."""
        return cls._from_header(read_header(path), path)

    @classmethod
    def _from_header(cls, record: dict[str, Any], path: Any) -> CleanBenchmark:
        check_header(record, path)
        names = {f for f in cls.__dataclass_fields__ if f not in _TENSOR_FIELDS}
        try:
            return cls(**{k: v for k, v in record.items() if k in names})
        except TypeError as err:
            raise BenchmarkFormatError(f"{path}: malformed header: {err}") from None

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
