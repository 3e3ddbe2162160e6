"""What an ε* estimator is asked: the data it trains and evaluates on (:class:`EstimationData`) and each method's
settings (:class:`ProbeSettings`, :class:`GridSettings`, :class:`FinetuneSettings`), declared once as frozen
dataclasses with their defaults and validated when made. The Python API and ``advhooks estimate-eps-star`` build
the same objects (:func:`settings_for`), so an estimator's signature is (model factory, data, benchmark, ε,
settings).

Attacks are named as the core names them, by class (:class:`~advhooks.attacks.PGD`,
:class:`~advhooks.attacks.FGM`); the names ``"pgd"`` / ``"fgm"`` are accepted at the door and converted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from torch.utils.data import Dataset

from ..._validation import check_choice, check_positive_int
from ...attacks import FGM, PGD, Attack
from ...attacks.domain import Normalization
from ...attacks.norms import NORMS
from ...benchmark import CleanBenchmark, Recipe
from ...uncertainty import DEFAULT_LEVEL
from .crossing import GROWTH

__all__ = ["TRAINING_ATTACKS", "EstimationData", "FinetuneSettings", "GridSettings", "Measurement", "ProbeSettings",
           "TrainingSettings", "attack_class", "make_attack", "settings_for"]

# The attacks an estimator trains with, by the names the CLI gives them.
TRAINING_ATTACKS: dict[str, type[Attack]] = {"pgd": PGD, "fgm": FGM}


def attack_class(attack: type[Attack] | str) -> type[Attack]:
    """``PGD`` or ``FGM``, given as the class or by its name (``"pgd"``, ``"fgm"``, any case)."""
    if isinstance(attack, str) and attack.lower() in TRAINING_ATTACKS:
        return TRAINING_ATTACKS[attack.lower()]
    if isinstance(attack, type) and attack in TRAINING_ATTACKS.values():
        return attack
    raise ValueError(f"attack must be PGD or FGM (or 'pgd' / 'fgm'), got {attack!r}")


def attack_name(attack: type[Attack]) -> str:
    """The name a result's settings record for ``attack`` (``"pgd"``, ``"fgm"``)."""
    return next(name for name, cls in TRAINING_ATTACKS.items() if cls is attack)


def make_attack(attack: type[Attack] | str, eps: float, norm: str, steps: int = 10,
                normalization: Normalization = None) -> Attack:
    """``PGD`` (PGD-``steps`` with random start) or ``FGM`` (with random start: FGSM-RS in L∞) of strength ``eps``.

    ``normalization=(mean, std)`` when the data is normalised before the model (ε stays in pixel units).

    Example:
        >>> make_attack(PGD, 4 / 255, "linf", steps=5).steps
        5
    """
    if attack_class(attack) is PGD:
        return PGD(eps, norm=norm, steps=steps, normalization=normalization)
    return FGM(eps, norm=norm, random_start=True, normalization=normalization)


@dataclass(frozen=True)
class EstimationData:
    """The data an estimator trains and evaluates on.

    Args:
        train_set: the training set (augmented, if the recipe augments).
        test_set: the test set (the grid and the check of an estimate keep the epoch of smallest adversarial test
            loss; the fine-tune and the clean probe do not need it).
        train_eval_set: the training set without augmentation, on which R̂ is evaluated (default ``train_set``).

    Example:
        >>> import torch
        >>> data = EstimationData(torch.utils.data.TensorDataset(torch.rand(4, 2), torch.zeros(4)))
        >>> data.train_eval is data.train_set
        True
    """

    train_set: Dataset
    test_set: Dataset | None = None
    train_eval_set: Dataset | None = None

    @property
    def train_eval(self) -> Dataset:
        """The set R̂ is evaluated on: ``train_eval_set``, else ``train_set``."""
        return self.train_set if self.train_eval_set is None else self.train_eval_set

    def needing_test_set(self, why: str) -> EstimationData:
        """This data, checked to have a test set (``why``: what needs it, for the error)."""
        if self.test_set is None:
            raise ValueError(f"{why} needs test_set (the epoch of smallest adversarial test loss is kept)")
        return self


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """How every loss of an estimate is measured: the attack's norm, its PGD steps, the data's normalisation.

    Args:
        norm: ``"linf"`` or ``"l2"``.
        steps: the PGD steps of every evaluation (the clean probe's rungs, every R̂) and of PGD training.
        normalization: ``(mean, std)`` when the data is normalised before the model (ε stays in pixel units).
    """

    norm: str = "linf"
    steps: int = 10
    normalization: Normalization = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", check_choice("norm", self.norm, NORMS))
        check_positive_int("steps", self.steps)

    def measurement(self) -> dict[str, Any]:
        """:class:`Measurement`'s own three settings, as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(Measurement)}

    def probe(self) -> ProbeSettings:
        """The clean probe measured as these settings measure (itself when it is one)."""
        return self if isinstance(self, ProbeSettings) else ProbeSettings(**self.measurement())

    def evaluation_attack(self, eps: float) -> Attack:
        """The attack every R̂ at ``eps`` is evaluated with: PGD-``steps``."""
        return make_attack(PGD, eps, self.norm, self.steps, self.normalization)


@dataclass(frozen=True, kw_only=True)
class ProbeSettings(Measurement):
    """The clean probe's settings (no training): :class:`Measurement`'s, and the batch size of its passes."""

    METHOD: ClassVar[str] = "clean-probe"
    batch_size: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("batch_size", self.batch_size)


@dataclass(frozen=True, kw_only=True)
class TrainingSettings(Measurement):
    """What every estimator that trains shares.

    Args:
        attack: the training attack, :class:`~advhooks.attacks.PGD` or :class:`~advhooks.attacks.FGM` (FGSM-RS
            in L∞); every R̂ is evaluated with PGD-``steps`` whatever it is.
        recipe: how each run trains (default: the clean benchmark's, :meth:`~advhooks.benchmark.Recipe.from_record`).
        runs: repeats with other seeds (``seed + 1000 · run``), averaged at each ε.
        seed: the runs' seed (initialisation, shuffling, attacks) and the band's.
        level: the band's coverage.
        train_subset: the fixed training subset R̂ is evaluated on (``None``: the whole set).
        draws: Monte Carlo draws of the band.
    """

    attack: type[Attack] = PGD
    recipe: Recipe | None = None
    runs: int = 1
    seed: int = 0
    level: float = DEFAULT_LEVEL
    train_subset: int | None = 512
    draws: int = 2000

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "attack", attack_class(self.attack))
        if self.recipe is not None and not isinstance(self.recipe, Recipe):
            raise TypeError(f"recipe must be a Recipe (Recipe(**mapping) makes one), got {type(self.recipe).__name__}")
        for name in ("runs", "draws"):
            check_positive_int(name, getattr(self, name))
        if self.train_subset is not None:
            check_positive_int("train_subset", self.train_subset)
        if not (isinstance(self.level, float | int) and 0 < self.level < 1):
            raise ValueError(f"level must be in (0, 1), got {self.level!r}")

    def training_attack(self, eps: float) -> Attack:
        """The attack a run trains with at ``eps`` (at ε = 0 nothing is attacked: the evaluation attack stands in)."""
        if eps > 0:
            return make_attack(self.attack, eps, self.norm, self.steps, self.normalization)
        return self.evaluation_attack(eps)

    def recipe_of(self, benchmark: CleanBenchmark) -> Recipe:
        """The recipe the runs train with: ``recipe``, else the benchmark's."""
        return self.recipe or Recipe.from_record(benchmark.training)


@dataclass(frozen=True, kw_only=True)
class GridSettings(TrainingSettings):
    """The grid's settings (runs from scratch, the paper's section 5.2), also those of the check of an estimate.

    Args:
        include_clean: the benchmark's own point (0, R̂(θ̂(0), 0)) is a point of the curve.
        extend: the most strengths added beyond the given ones (× 1.5) until R̂ brackets R*(0) (0: exactly those).
        records_dir: where each run's record is written, with θ̂'s weights beside it (``None``: nowhere).
        Others: :class:`TrainingSettings`'s.
    """

    METHOD: ClassVar[str] = "grid"
    include_clean: bool = True
    extend: int = 2
    records_dir: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.extend, bool) or not isinstance(self.extend, int) or self.extend < 0:
            raise ValueError(f"extend must be an integer >= 0, got {self.extend!r}")


@dataclass(frozen=True, kw_only=True)
class FinetuneSettings(TrainingSettings):
    """The fine-tune's settings (the paper's section 6). Why these defaults: :func:`estimate_finetune`'s docstring.

    Args:
        epochs: each fine-tune's epochs at the recipe's learning rate.
        cooldown: then epochs at a tenth of it.
        growth: the factor between two strengths of the ladder.
        max_points: the most strengths (the ladder grows by ``growth`` until R̂ is on both sides of R*(0)).
        Others: :class:`TrainingSettings`'s (``attack`` defaults to FGM).
    """

    METHOD: ClassVar[str] = "finetune"
    attack: type[Attack] = FGM
    epochs: int = 10
    cooldown: int = 1
    growth: float = GROWTH
    max_points: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("epochs", "cooldown"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not (isinstance(self.growth, float | int) and math.isfinite(self.growth) and self.growth > 1):
            raise ValueError(f"growth must be > 1, got {self.growth}")
        check_positive_int("max_points", self.max_points)


# Each method's settings, by the name ``estimate_eps_star`` and the CLI give it.
# "records" combines monitored runs as the grid does (its level, seed, include_clean and draws).
SETTINGS: dict[str, type[Measurement]] = {
    **{cls.METHOD: cls for cls in (ProbeSettings, GridSettings, FinetuneSettings)}, "records": GridSettings}


def settings_for(method: str, benchmark: CleanBenchmark, given: Mapping[str, Any]) -> Measurement:
    """``method``'s settings from options as the CLI gives them (``None``: the method's default).

    ``lr``, ``batch_size`` and, for the grid, ``epochs`` are the recipe's: they replace the benchmark's for the
    methods that train, and mean nothing to the clean probe and to ``"records"`` (whose runs are done); the
    fine-tune's ``epochs`` are its own. Options a method does not have are ignored (``--runs`` to the probe).
    """
    cls = SETTINGS[method]
    given = {k: v for k, v in given.items() if v is not None}
    recipe_keys = ("lr", "batch_size") + (("epochs",) if cls is GridSettings else ())
    recipe_given = {k: given.pop(k, None) for k in recipe_keys}
    if issubclass(cls, TrainingSettings) and method != "records" and "recipe" not in given:
        given["recipe"] = Recipe.from_record(benchmark.training).with_given(**recipe_given)
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in given.items() if k in names})


def check_settings(method: str, settings: Measurement | None) -> Measurement:
    """``settings`` for ``method`` (``None``: its defaults), checked to be that method's type."""
    cls = SETTINGS[method]
    if settings is None:
        return cls()
    if type(settings) is not cls:
        raise TypeError(f"method {method!r} takes {cls.__name__}, got {type(settings).__name__}")
    return settings

