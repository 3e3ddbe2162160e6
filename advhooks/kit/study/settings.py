"""What a study runs (:class:`StudySettings`) and its units of work (:class:`Unit`)."""

from __future__ import annotations

from dataclasses import dataclass

from ...benchmark import Recipe
from ...uncertainty import DEFAULT_LEVEL
from ..estimate import check_eps_grid
from ..estimate.settings import FinetuneSettings

STUDY_SCHEMA = "advhooks.study-unit/1"


@dataclass(frozen=True)
class StudySettings:
    """What a study runs: the grid of configurations and the recipe every unit shares.

    ``widths`` entries are the model builder's size argument (``None``: its default). ``recipe`` is how the clean
    runs (and the grid's) train (default :class:`~advhooks.benchmark.Recipe`'s); ``finetune_epochs`` the
    fine-tune's length (``None``: the estimator's default). ``check_grid``: also the grid (training from scratch at
    each ε) for the first seed of each configuration (``True`` or ``"first"``) or for every seed (``"all"``).
    ``fgsm_eps``: the FGSM probe's increasing strengths (empty: no probe). ``customary_eps``: the ε people
    would use on this data, shown as its ratio to ε*.
    """

    widths: tuple[int | None, ...]
    fractions: tuple[float, ...]
    seeds: tuple[int, ...]
    method: str = "finetune"
    check_grid: bool | str = False
    fgsm_eps: tuple[float, ...] = ()
    recipe: Recipe = Recipe()
    finetune_epochs: int | None = None
    norm: str = "linf"
    split_seed: int = 0
    customary_eps: float | None = None
    level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        if self.check_grid not in (False, True, "first", "all"):
            raise ValueError(f"check_grid must be False, True, 'first' or 'all', got {self.check_grid!r}")
        object.__setattr__(self, "check_grid", {True: "first", False: False}.get(self.check_grid, self.check_grid))
        self._check_grid()
        self._check_recipe()

    def _check_grid(self) -> None:
        if not self.widths or not self.fractions or not self.seeds:
            raise ValueError("a study needs at least one width, one train fraction and one seed")
        if any(w is not None and (not isinstance(w, int) or w < 1) for w in self.widths):
            raise ValueError(f"widths must be integers >= 1, got {list(self.widths)}")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"train fractions must be in (0, 1], got {list(self.fractions)}")
        for name, values in (("widths", list(self.widths)), ("train fractions", [f"{f:g}" for f in self.fractions]),
                             ("seeds", list(self.seeds))):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct, got {values}")

    def _check_recipe(self) -> None:
        if self.method not in ("finetune", "grid", "clean-probe"):
            raise ValueError(f"method must be finetune, grid or clean-probe, got {self.method!r}")
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be linf or l2, got {self.norm!r}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")
        if self.fgsm_eps:
            check_eps_grid(self.fgsm_eps, "fgsm_eps")
            if self.norm != "linf":
                raise ValueError("the FGSM probe trains with plain FGSM (L-inf): compare it with an L-inf eps*")
        if self.customary_eps is not None and not self.customary_eps > 0:
            raise ValueError(f"customary_eps must be > 0, got {self.customary_eps}")
        if not isinstance(self.recipe, Recipe):
            raise TypeError(f"recipe must be an advhooks.benchmark.Recipe, got {type(self.recipe).__name__}")
        if self.finetune_epochs is not None and self.finetune_epochs < 1:
            raise ValueError(f"finetune_epochs must be >= 1, got {self.finetune_epochs}")

    def units(self) -> list[Unit]:
        """Every unit of work in a fixed order: the runs (width × fraction × seed), then the FGSM probes."""
        runs = [Unit("run", w, f, s) for w in self.widths for f in self.fractions for s in self.seeds]
        probes = [Unit("fgsm", w, f) for w in self.widths for f in self.fractions] if self.fgsm_eps else []
        return runs + probes

    def grid_checked(self, unit: Unit) -> bool:
        """Whether ``unit`` also runs the grid check (with ``check_grid``: the first seed of each configuration, or
        every seed with ``"all"``)."""
        if unit.kind != "run" or not self.check_grid or self.method == "grid":
            return False
        return self.check_grid == "all" or unit.seed == self.seeds[0]


@dataclass(frozen=True)
class Unit:
    """One unit of work: a clean benchmark and its ε* estimate (``kind="run"``, one seed), or the FGSM probe of
    a configuration (``kind="fgsm"``, no seed)."""

    kind: str
    width: int | None
    fraction: float
    seed: int | None = None

    @property
    def name(self) -> str:
        """``run-width64-fraction0.5-seed1``: its file's name without ``.json``, and its progress label."""
        tail = "" if self.seed is None else f"-seed{self.seed}"
        return f"{self.kind}-width{'default' if self.width is None else self.width}-fraction{self.fraction:g}{tail}"

    def as_list(self) -> list:
        """How a unit file names it: ``[kind, width, fraction]`` and the seed for a run."""
        return [self.kind, self.width, self.fraction, *([] if self.seed is None else [self.seed])]




def finetune_epochs_of(settings: StudySettings) -> int:
    """The fine-tune's length a study runs: its ``finetune_epochs``, else the estimator's default."""
    return settings.finetune_epochs or FinetuneSettings().epochs
