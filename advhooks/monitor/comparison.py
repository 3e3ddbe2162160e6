"""Is this run comparable with its clean benchmark? What the monitor is told (``recipe=``) and what it sees
(the global batch size of the batches it is fed, ``total_epochs``, the model and training set of
``evaluate_with``), compared with the benchmark's recipe and fingerprints, each difference named once.

A different recipe (batch size, learning rate, epochs ...) is a warning: the paper compares runs of one
recipe, but the ratio still compares the same model on the same data. A different model or training set
makes ρ compare unlike things: the report says so (``comparable=False``), and ``strict=True`` refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch.utils.data import Dataset

from .._distributed import is_main_process
from ..benchmark import CleanBenchmark, RunSetup, differing_keys

__all__ = ["UNLIKE_KEYS", "BenchmarkComparison"]

# Differences that make R̂ / R*(0) a ratio of unlike things (not only another recipe).
UNLIKE_KEYS = ("model", "n_train")


class BenchmarkComparison:
    """The differences between a run and its benchmark found so far (the same on every process).

    Args:
        benchmark: the clean benchmark (a bare R*(0) has nothing to compare with).
        logger: where each new difference is named (main process only).
        strict: raise a ``ValueError`` on a model or data difference instead of reporting it.
    """

    def __init__(self, benchmark: CleanBenchmark | float, logger: logging.Logger, strict: bool) -> None:
        self.benchmark, self.logger, self.strict = benchmark, logger, strict
        self.named: dict[str, str] = {}
        self.batch_size_seen = False  # the fed batch size is compared once (not at all when a recipe gives it)

    @property
    def unlike(self) -> list[str]:
        """The model and data differences: why the ratio compares unlike things (empty when it does not)."""
        return [text for key, text in self.named.items() if key in UNLIKE_KEYS]

    def check(self, seen: Mapping[str, Any], source: str, setup: RunSetup | None = None) -> None:
        """Compare ``seen`` (recipe values) and ``setup`` with the benchmark; name what is new, once.

        ``source`` says where the values come from, for the warning ("the recipe given", "the batches fed").
        """
        if not isinstance(self.benchmark, CleanBenchmark):
            return
        new = {k: v for k, v in differing_keys(self.benchmark, dict(seen), setup).items() if k not in self.named}
        if not new:
            return
        self.named.update(new)
        unlike = [text for key, text in new.items() if key in UNLIKE_KEYS]
        if unlike and self.strict:
            raise ValueError("the run and the clean benchmark differ in model or data, so R-hat / R*(0) would "
                             f"compare unlike things (strict=True): {'; '.join(unlike)}")
        if is_main_process():
            consequence = ("the model or data differ, so its ratio to R*(0) compares unlike things (reports say "
                           "comparable=False)" if unlike else
                           "its ratio to R*(0) is not the paper's like-for-like comparison")
            self.logger.warning("this run differs from the clean benchmark's recipe (seen in the %s): %s; %s",
                                source, "; ".join(new.values()), consequence)

    def check_given(self, recipe: Mapping[str, Any], setup: RunSetup, total_epochs: int | None) -> None:
        """The recipe and setup the monitor is given and the run's length (``total_epochs``, when given, wins over
        a recipe's epochs, which may be a default); a given batch size wins over the batches fed."""
        self.check({**recipe, **({"epochs": total_epochs} if total_epochs else {})}, "recipe", setup)
        self.batch_size_seen = "batch_size" in recipe

    def check_evaluated(self, model: Any, train_data: Any) -> None:
        """The model and training set the monitor evaluates (``evaluate_with``); a loader's length counts batches,
        so its dataset's is taken."""
        data = getattr(train_data, "dataset", train_data)
        self.check({}, "model or training data (evaluate_with)",
                   RunSetup(model=model, n_train=len(data) if isinstance(data, Dataset) else None))

    def check_fed_batch(self, largest_batch: float) -> None:
        """Compare the global batch size the monitor was fed (the sum over processes of each one's largest
        batch of the epoch) with the benchmark's, once: the recipe's own word, if given, wins."""
        if not self.batch_size_seen and largest_batch > 0:
            self.batch_size_seen = True
            self.check({"batch_size": int(largest_batch)}, "batches fed to update()")

    def state_dict(self) -> dict[str, Any]:
        return {"differences": dict(self.named), "batch_size_seen": self.batch_size_seen}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Add what a saved run had found (what this monitor found already stays)."""
        self.named = {**dict(state.get("differences") or {}), **self.named}
        self.batch_size_seen = self.batch_size_seen or bool(state.get("batch_size_seen", False))
