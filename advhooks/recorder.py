"""Record the clean benchmark R*(0) from your own clean training loop, with your own recipe.

R*(0) must come from the same recipe (learning-rate schedule, augmentation, normalisation, batch size,
epochs) as the adversarial runs it is compared with; ``advhooks benchmark-clean`` trains with its own.
:class:`CleanBenchmarkRecorder` is called once per epoch from any loop (ε = 0 of that loop), keeps the
weights of the epoch with the smallest clean test loss (the paper's early stopping) and its per-sample
test losses, and returns the :class:`~advhooks.benchmark.CleanBenchmark` at the end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .attacks.criteria import Criterion
from .benchmark import CleanBenchmark, Recipe, RunSetup, dataset_fingerprint, evaluate_clean, given_recipe
from .best_epoch import BestEpoch

__all__ = ["CleanBenchmarkRecorder"]

log = logging.getLogger(__name__)


class CleanBenchmarkRecorder:
    """Keep the early-stopped clean model of your own loop and turn it into a clean benchmark.

    Args:
        test_data: the test set (a ``Dataset``, or a loader of ``(inputs, targets)``), prepared exactly as
            in your adversarial runs (same normalisation).
        recipe: how the loop trains: a :class:`~advhooks.benchmark.Recipe`, or a mapping of its fields as sugar
            (``batch_size``, ``epochs``, ``lr``, ``schedule``, ``augmentation``, ... and anything else to keep);
            stored in the benchmark, and compared by the monitor with the adversarial run's recipe.
        setup: what it trains (a :class:`~advhooks.benchmark.RunSetup`; its ``normalization`` and ``n_train`` are
            stored, the model is fingerprinted by the benchmark itself); a recipe mapping's keys are sugar for it.
        criterion: per-sample loss, default cross-entropy.
        batch_size: for a test ``Dataset``.
        device: where to evaluate (default: where the data is).

    Example:
        >>> net = nn.Linear(4, 3)
        >>> data = torch.utils.data.TensorDataset(torch.rand(16, 4), torch.randint(0, 3, (16,)))
        >>> recorder = CleanBenchmarkRecorder(data, recipe={"batch_size": 8, "epochs": 2})
        >>> for epoch in range(2):
        ...     _ = recorder.epoch_end(net)      # after each epoch of your clean training
        >>> bench = recorder.finish(net, train_data=data)
        >>> bench.best_epoch, bench.training["batch_size"]
        (1, 8)
    """

    def __init__(self, test_data: Dataset | Iterable, *, recipe: Recipe | Mapping[str, Any] | None = None,
                 criterion: Criterion | None = None, batch_size: int = 256,
                 device: torch.device | str | None = None, setup: RunSetup | None = None) -> None:
        self.test_data = test_data
        values, carried = given_recipe(recipe)
        # the benchmark fingerprints the model itself and measures the data's size
        self.recipe = {**values, **carried.joined(setup).plain()}
        try:
            json.dumps(self.recipe)
        except TypeError as err:
            raise TypeError(f"recipe must hold plain values (it is stored as JSON in the benchmark): {err}") from None
        self.criterion = criterion
        self.batch_size = batch_size
        self.device = device
        self.epoch = 0
        self.best = BestEpoch()  # the epoch with the smallest clean test loss
        self.history: list[float] = []
        self._best_state: dict[str, torch.Tensor] | None = None

    @property
    def best_epoch(self) -> int | None:
        """The epoch with the smallest clean test loss so far (``None`` before the first)."""
        return self.best.epoch

    @property
    def best_loss(self) -> float:
        """That epoch's clean test loss (inf before the first)."""
        return self.best.value

    def _loader(self, data: Dataset | Iterable) -> Iterable:
        return DataLoader(data, batch_size=self.batch_size) if isinstance(data, Dataset) else data

    def epoch_end(self, model: nn.Module) -> float:
        """Evaluate the clean test loss after an epoch; keep the weights when it is the smallest so far.

        Returns the epoch's clean test loss (NaN or inf losses are refused by the evaluation).
        """
        self.epoch += 1
        losses, _ = evaluate_clean(model, self._loader(self.test_data), self.criterion, self.device)
        loss = float(losses.mean())
        self.history.append(loss)
        if self.best.update(self.epoch, loss):
            self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return loss

    def finish(self, model: nn.Module, train_data: Dataset | Iterable | None = None) -> CleanBenchmark:
        """The benchmark of the best epoch: loads its weights into ``model`` and measures R*(0), Δ.

        Args:
            model: the model that was trained (it ends with the best epoch's weights).
            train_data: the training set *without augmentation*, for R̂(θ̂(0), 0) and Δ (recommended).
        """
        if self._best_state is None:
            raise ValueError("finish() before any epoch_end(): call epoch_end(model) after each epoch")
        model.load_state_dict(self._best_state)
        recipe = {"epochs": self.epoch, **self.recipe}
        bench = CleanBenchmark.measure(model, self._loader(self.test_data),
                                       None if train_data is None else self._loader(train_data), self.criterion,
                                       self.device, best_epoch=self.best_epoch, training=recipe)
        if isinstance(self.test_data, Dataset) and (train_data is None or isinstance(train_data, Dataset)):
            bench.dataset = dataset_fingerprint(train_data, self.test_data)
        for warning in bench.warnings():
            log.warning("clean benchmark: %s", warning)
        return bench
