"""The monitor's settings, validated once: :class:`MonitorSettings`, the fields of :class:`PhaseMonitor`."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .._distributed import is_main_process
from .._validation import check_finite_nonnegative, check_positive, check_positive_int
from ..attacks import Attack
from ..benchmark import CleanBenchmark, Recipe, RunSetup, given_recipe
from ..uncertainty import DEFAULT_LEVEL, MeanEstimate
from .advice import FlagAdvice
from .report import PhaseReport

__all__ = ["MonitorSettings", "default_warmup"]

log = logging.getLogger("advhooks.monitor")


@dataclass
class MonitorSettings:
    """The settings of a :class:`PhaseMonitor`, checked when it is built: the benchmark is read, R*(0) and its
    standard error kept, the default warm-up filled in, and a run shorter than its warm-up warned about once.

    Args:
        benchmark: a :class:`~advhooks.benchmark.CleanBenchmark`, the path of a benchmark file, or R*(0)
            as a number (then R*(0) has no band).
        eps: the training attack strength, for the reports (taken from the step outputs when given).
        threshold: ρ above which ε is several times ε* (default 1.5; see :mod:`advhooks.monitor`).
        patience: epochs without progress of the verdict ρ that make a plateau.
        warmup_epochs: no ε ≫ ε* verdict before this many epochs; default ``total_epochs // 2 + patience``
            when ``total_epochs`` is given, else 10.
        total_epochs: the planned number of epochs (the default warm-up, the short-run warning, the recipe).
        min_delta: relative improvement of the verdict ρ that counts as progress.
        on_flag: called once with the :class:`PhaseReport` when the ε ≫ ε* flag fires (main process).
        logger: where reports go (main process only); default ``advhooks.monitor``.
        reducer: sums a tensor across processes (e.g. ``lambda t: accelerator.reduce(t, "sum")``); default
            ``torch.distributed.all_reduce`` when a process group is initialised.
        sync_timeout: seconds ``epoch_end`` waits for the other ranks (gloo) before raising.
        level: coverage of the bands (default 0.8).
        verbose: show one line per epoch (INFO) even where the logger's level hides INFO; no level is changed.
        recipe: how this run trains (a :class:`~advhooks.benchmark.Recipe`, or a mapping of its fields as sugar,
            ``batch_size`` the global one; :func:`~advhooks.benchmark.given_recipe`). The monitor also compares
            what it sees: ``total_epochs``, the global batch it is fed, the model and training set of
            :meth:`PhaseMonitor.evaluate_with` (:mod:`~advhooks.monitor.comparison`).
        strict: a model or training set unlike the benchmark's raises a ``ValueError`` (default: the reports
            say ``comparable=False`` with the reason).
        attack: the attack A_ε of the paper's R̂: what :meth:`PhaseMonitor.evaluate_with` evaluates the adversarial test
            loss and R̂ with (PGD-10 is customary, whatever the training attack), and what the run record
            names. Give it ``normalization=`` when the data is normalised outside the model.
        eps_star: an ε* estimate of this setting (an ``EpsStarEstimate``, its JSON or file, or
            ``(value, (low, high))``): the ε ≫ ε* flag then says how many times ε* the run's ε is, with the band.
        study: a study of this setting (``advhooks study --json``'s file, or its result): the flag then says at
            which width the study's trend puts ε* at the run's ε, and which way more data moves ε* (each with
            its band, or that the trend does not resolve it).
        setup: what this run trains, compared beside the recipe (a :class:`~advhooks.benchmark.RunSetup`: the
            model by fingerprint, the data's normalisation, the training-set size); a recipe mapping's ``model``,
            ``normalization`` and ``n_train`` keys are sugar for it.
    """

    benchmark: CleanBenchmark | str | os.PathLike | float
    eps: float | None = None
    threshold: float = 1.5
    patience: int = 5
    warmup_epochs: int | None = None
    total_epochs: int | None = None
    min_delta: float = 0.01
    on_flag: Callable[[PhaseReport], None] | None = None
    logger: logging.Logger = field(default=log, repr=False)
    reducer: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    sync_timeout: float = 600.0
    level: float = DEFAULT_LEVEL
    verbose: bool = False
    recipe: Recipe | Mapping[str, Any] | None = field(default=None, repr=False)
    attack: Attack | None = field(default=None, repr=False)
    strict: bool = False
    eps_star: Any = field(default=None, repr=False)
    study: Any = field(default=None, repr=False)
    setup: RunSetup | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.benchmark, self._r_star = _reference(self.benchmark)
        self.clean_test_loss = self._r_star.mean
        _check_settings(self)
        self.advice = FlagAdvice(self.eps_star, self.study, self.level)
        if is_main_process():
            _warn_at_start(self)


def _warn_at_start(m: MonitorSettings) -> None:
    """A run shorter than its warm-up: said once, when the monitor is built."""
    if m.total_epochs is not None and m.warmup_epochs > m.total_epochs:
        m.logger.warning(
            "the run (%d epochs) is shorter than the monitor's warm-up (%d epochs): the eps >> eps* flag can "
            "never fire; pass warmup_epochs= (past your first learning-rate decay) or train longer",
            m.total_epochs, m.warmup_epochs)


def _reference(benchmark: Any) -> tuple[CleanBenchmark | float, MeanEstimate]:
    """The benchmark (read from its file when a path) and R*(0) with its standard error."""
    if isinstance(benchmark, (str, os.PathLike)):
        benchmark = CleanBenchmark.read(benchmark)
    if isinstance(benchmark, CleanBenchmark):
        r_star, stderr, n = benchmark.clean_test_loss, benchmark.test_loss_stderr, benchmark.n_test
    elif isinstance(benchmark, (int, float)) and not isinstance(benchmark, bool):
        r_star, stderr, n = float(benchmark), 0.0, 1
    else:
        raise TypeError("benchmark must be a CleanBenchmark, a benchmark file path, or R*(0) as a number")
    r_star = check_positive("benchmark clean_test_loss (R*(0))", r_star)
    return benchmark, MeanEstimate(r_star, float(stderr) if math.isfinite(stderr) else 0.0, n, n)


def _check_settings(m: MonitorSettings) -> None:
    """Validate (and normalise) the monitor's settings in place; the default warm-up is filled in here."""
    if m.eps is not None:
        m.eps = check_finite_nonnegative("eps", m.eps)
    m.threshold = check_positive("threshold", m.threshold)
    if m.threshold <= 1.0:
        raise ValueError(f"threshold must be > 1 (a ratio to R*(0)), got {m.threshold}")
    m.patience = check_positive_int("patience", m.patience)
    m.total_epochs = None if m.total_epochs is None else check_positive_int("total_epochs", m.total_epochs)
    m.warmup_epochs = default_warmup(m.total_epochs, m.patience) if m.warmup_epochs is None else m.warmup_epochs
    if isinstance(m.warmup_epochs, bool) or not isinstance(m.warmup_epochs, int) or m.warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be an integer >= 0, got {m.warmup_epochs!r}")
    m.min_delta = check_finite_nonnegative("min_delta", m.min_delta)
    m.sync_timeout = check_positive("sync_timeout", m.sync_timeout)
    if not 0.0 < float(m.level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {m.level!r}")
    _check_types(m)


def _check_types(m: MonitorSettings) -> None:
    if m.on_flag is not None and not callable(m.on_flag):
        raise TypeError("on_flag must be callable as on_flag(report)")
    if m.setup is not None and not isinstance(m.setup, RunSetup):
        raise TypeError(f"setup must be an advhooks.benchmark.RunSetup, got {type(m.setup).__name__}")
    m.recipe, carried = given_recipe(m.recipe)  # at the door: the recipe's values, and the setup a mapping carries
    m.setup = carried.joined(m.setup)
    if not isinstance(m.strict, bool):
        raise TypeError(f"strict must be True or False, got {m.strict!r}")
    if m.attack is not None and not isinstance(m.attack, Attack):
        raise TypeError(f"attack must be an advhooks attack (PGD, FGM), got {type(m.attack).__name__}")


def default_warmup(total_epochs: int | None, patience: int) -> int:
    """The monitor's default warm-up: the paper's first learning-rate decay (half the run), then ``patience``
    epochs; 10 when the run's length is unknown."""
    return total_epochs // 2 + patience if total_epochs else 10
