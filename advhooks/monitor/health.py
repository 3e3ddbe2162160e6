"""Whether a run can be judged at all: a NaN/inf epoch (the run diverged) or R̂ at a uniform guess's loss (the run
does not learn) say nothing about ε, and come before any regime (:func:`~advhooks.monitor.report.judge`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..benchmark import CleanBenchmark
from ..uncertainty import MeanEstimate
from .comparison import BenchmarkComparison
from .history import EpochHistory
from .report import chance_level
from .sums import classes_of

__all__ = ["RunHealth"]


class RunHealth:
    """The monitor's view of the run's health: the number of classes K (ln K is a uniform guess's cross-entropy:
    from the benchmark's test labels, else the logits of the steps fed) and the states already warned about
    (:func:`~advhooks.monitor.report.log_report` warns about each once)."""

    def __init__(self, benchmark: CleanBenchmark | float, comparison: BenchmarkComparison) -> None:
        self.comparison = comparison  # (the differences it has seen: a likely cause of a run that does not learn)
        self.cross_entropy = isinstance(benchmark, CleanBenchmark) and benchmark.criterion == "cross_entropy"
        self.num_classes: int | None = benchmark.dataset.get("num_classes") if self.cross_entropy else None
        self.warned: set[str] = set()

    @property
    def chance_loss(self) -> float | None:
        """ln K, when K is known for a cross-entropy benchmark."""
        return math.log(self.num_classes) if self.num_classes else None

    def see(self, output: Any) -> None:
        """Learn K from a step's logits (their shape: no host read) when the benchmark did not say it."""
        if self.num_classes is None and self.cross_entropy:
            self.num_classes = classes_of(output)

    def states(self, history: EpochHistory, rhat: MeanEstimate | None, clean: MeanEstimate | None,
               level: float) -> tuple[int | None, int | None, str | None]:
        """``(first NaN/inf epoch, that epoch when the latest epoch is NaN/inf too, why the run is not learning)``
        (:func:`~advhooks.monitor.report.chance_level`, from R̂ and the clean loss at θ̂); the reason names the
        differences from the benchmark's recipe the monitor saw (a likely cause)."""
        first = history.first_nonfinite_epoch()
        not_learning = chance_level(rhat, clean, level, self.num_classes)
        if not_learning is not None and self.comparison.named:
            not_learning += "; the run differs from the benchmark: " + "; ".join(self.comparison.named.values())
        return first, first if history.latest_nonfinite() else None, not_learning

    def state_dict(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("num_classes") is not None and self.cross_entropy:
            self.num_classes = int(state["num_classes"])
