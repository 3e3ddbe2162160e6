"""The ε* study (the paper's Table 3) and the FGSM instability threshold (its Table 2), on a user's setting.

A study crosses model widths with training-set fractions. Each *unit* of work is one (width, fraction, seed):
a clean benchmark R*(0) trained on that fraction of the training set (drawn once with the split seed, not the
run seed: every seed sees the same samples) and an ε* estimate of the chosen method against it; with
``check_grid`` the first seed of each configuration also runs the grid (training from scratch at each ε).
With ``fgsm_eps`` each configuration also gets the FGSM probe: plain FGSM training (no random start) at
increasing ε until :class:`~advhooks.diagnostics.CatastrophicOverfittingDetector` fires; the paper reports
ε* below that unstable ε.

Units are independent and each is a JSON file in ``records_dir`` when one is given (the grid check's run
records, with their early-stopped weights, in a ``grid-...`` folder beside it): a unit whose file exists
is read instead of run, so a study resumes after an interruption and can be spread over processes or
machines (``shard=(i, n)`` runs every n-th unit; rerunning without ``shard`` over the gathered files only
combines). :func:`summarise` turns the units into one row per configuration:

- R*(0): the mean over seeds; its s.e. combines the test set's sampling error (common to every seed: one test
  set) with the seeds' spread (``sqrt(mean se² + var/k)``).
- ε*: the mean of the seeds' estimates; the band's half-widths are the larger of t·sd/√k (Student's t with
  k − 1 degrees of freedom: the spread over seeds holds every source of noise) and the seeds' own mean
  half-widths (a floor when there are few seeds; not divided by √k, because R*(0)'s test-set error, part of
  every seed's band, is shared by all of them).
- the customary ε's ratio to ε* with the band carried through.

:func:`compare` says, for configurations that differ in one factor only, whether their bands overlap.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..attacks import FGM
from ..benchmark import dataset_fingerprint, model_fingerprint, write_json_atomic
from ..diagnostics import CatastrophicOverfittingDetector
from ..schedules import format_eps
from ..uncertainty import DEFAULT_LEVEL
from .data import train_fraction
from .estimate import check_eps_grid, estimate_eps_star
from .training import record_clean_benchmark, train_adversarially

__all__ = ["STUDY_SCHEMA", "StudyRow", "StudySettings", "compare", "fgsm_threshold", "run_study", "summarise"]

STUDY_SCHEMA = "advhooks.study-unit/1"


@dataclass(frozen=True)
class StudySettings:
    """What a study runs: the grid of configurations and the recipe every unit shares.

    ``widths`` entries are the model builder's size argument (``None``: its default). ``epochs``/``lr``/
    ``batch_size``/``weight_decay`` are the clean runs' (and the grid's); ``finetune_epochs`` the fine-tune's.
    ``fgsm_eps``: the FGSM probe's increasing strengths (empty: no probe). ``customary_eps``: the ε people
    would use on this data, shown as its ratio to ε*.
    """

    widths: tuple[int | None, ...]
    fractions: tuple[float, ...]
    seeds: tuple[int, ...]
    method: str = "finetune"
    check_grid: bool = False
    fgsm_eps: tuple[float, ...] = ()
    epochs: int = 60
    finetune_epochs: int = 10
    lr: float = 0.05
    batch_size: int = 64
    weight_decay: float = 0.0
    norm: str = "linf"
    split_seed: int = 0
    customary_eps: float | None = None
    level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
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
        if self.epochs < 1 or self.finetune_epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs, finetune_epochs and batch_size must be >= 1 and lr > 0")

    def units(self) -> list[tuple]:
        """Every unit of work in a fixed order: ``("run", width, fraction, seed)``, then ``("fgsm", width,
        fraction)``."""
        runs = [("run", w, f, s) for w in self.widths for f in self.fractions for s in self.seeds]
        probes = [("fgsm", w, f) for w in self.widths for f in self.fractions] if self.fgsm_eps else []
        return runs + probes


def _unit_name(unit: tuple) -> str:
    kind, width, fraction, *seed = unit
    tail = f"-seed{seed[0]}" if seed else ""
    return f"{kind}-width{'default' if width is None else width}-fraction{fraction:g}{tail}.json"


def fgsm_threshold(model_factory: Callable[[], nn.Module], train_set: Dataset, check_set: Dataset,
                   eps: Sequence[float], *, epochs: int, lr: float, batch_size: int, seed: int = 0,
                   check_size: int = 512, device: torch.device | str = "cpu",
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The smallest ε of ``eps`` at which plain FGSM training overfits catastrophically (the paper's Table 2).

    At each ε in increasing order: a model from ``model_factory`` (under ``seed``) trained with FGSM (FGM in
    L∞, no random start) for ``epochs`` at a constant ``lr``, and after each epoch the catastrophic-overfitting
    detector on a fixed check batch of ``check_set`` (PGD-10 against FGSM accuracy). The ladder stops at the
    first ε whose run is flagged. Returns ``{"threshold", "stable_below", "runs"}``: the first flagged ε
    (``None``: none fired), the largest ε below it that stayed stable, and each run's flag epoch and final
    accuracies.
    """
    ladder = check_eps_grid(eps, "fgsm eps")
    xs, ys = zip(*(check_set[i] for i in range(min(check_size, len(check_set)))), strict=True)
    inputs, targets = torch.stack(xs).to(device), torch.as_tensor(ys).to(device)
    out: dict[str, Any] = {"threshold": None, "stable_below": None, "runs": [], "epochs": epochs}
    for e in ladder:
        torch.manual_seed(seed)
        model = model_factory().to(device)
        detector = CatastrophicOverfittingDetector(inputs, targets, e)
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        train_adversarially(model, loader, FGM(e, norm="linf"), e, epochs, lr, decay=False, device=device,
                            on_epoch=lambda record: detector.epoch_end(model).flag_epoch is not None)  # noqa: B023
        out["runs"].append({"eps": e, "flag_epoch": detector.flag_epoch, "epochs_run": len(detector.pgd_accuracy),
                            "pgd_accuracy": detector.pgd_accuracy[-1], "fgsm_accuracy": detector.fgsm_accuracy[-1],
                            "best_pgd_accuracy": max(detector.pgd_accuracy)})
        if progress:
            progress(f"FGSM at eps {format_eps(e)}: " + (f"catastrophic overfitting at epoch {detector.flag_epoch}"
                                                        if detector.flag_epoch else "stable"))
        if detector.flag_epoch is not None:
            out["threshold"] = e
            break
        out["stable_below"] = e
    return out


@dataclass
class StudyRow:
    """One configuration of the study, combined over its seeds (see the module's docstring)."""

    width: int | None
    fraction: float
    n_train: int
    seeds: list[int]
    clean_test_loss: float
    clean_test_loss_stderr: float
    generalization_gap: float
    eps_star: float | None
    interval: tuple[float, float] | None
    per_seed: list[float | None]
    customary_ratio: float | None = None
    customary_ratio_interval: tuple[float, float] | None = None
    grid: float | None = None
    grid_interval: tuple[float, float] | None = None
    fgsm: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


def _combined_band(values: list[float], bands: list[tuple[float, float] | None], level: float):
    """The band of the mean over seeds: the larger of the seeds' spread (t·sd/√k) and their own mean band."""
    k, mean = len(values), float(np.mean(values))
    t = float(stats.t.ppf((1 + level) / 2, k - 1)) if k > 1 else 0.0
    spread = t * float(np.std(values, ddof=1)) / math.sqrt(k) if k > 1 else 0.0
    known = [b for b in bands if b is not None]
    low = float(np.mean([v - b[0] for v, b in zip(values, bands, strict=True) if b])) if known else 0.0
    high = float(np.mean([b[1] - v for v, b in zip(values, bands, strict=True) if b])) if known else 0.0
    if k == 1 and not known:
        return None
    return mean - max(spread, low), mean + max(spread, high)


def _row(settings: StudySettings, width: int | None, fraction: float, units: list[dict],
         probe: dict | None) -> StudyRow:
    benches = [u["benchmark"] for u in units]
    estimates = [u["estimate"] for u in units]
    values = [e["value"] for e in estimates]
    usable = [(v, tuple(e["interval"]) if e["interval"] else None) for v, e in zip(values, estimates, strict=True)
              if v is not None]
    r = np.array([b["clean_test_loss"] for b in benches])
    se = np.array([b["test_loss_stderr"] for b in benches])
    row = StudyRow(width, fraction, units[0]["n_train"], [u["seed"] for u in units], float(r.mean()),
                   float(math.sqrt(np.mean(se ** 2) + (r.var(ddof=1) / r.size if r.size > 1 else 0.0))),
                   float(np.mean([b["generalization_gap"] for b in benches])), None, None, values, fgsm=probe)
    if usable:
        row.eps_star = float(np.mean([v for v, _ in usable]))
        row.interval = _combined_band([v for v, _ in usable], [b for _, b in usable], settings.level)
    if len(usable) < len(units):
        row.warnings.append(f"{len(units) - len(usable)} of {len(units)} seeds gave no estimate")
    if settings.customary_eps and row.eps_star:
        row.customary_ratio = settings.customary_eps / row.eps_star
        if row.interval and row.interval[0] > 0:
            row.customary_ratio_interval = (settings.customary_eps / row.interval[1],
                                            settings.customary_eps / row.interval[0])
    grids = [u["grid"] for u in units if u.get("grid")]
    if grids:
        row.grid = grids[0]["value"]
        row.grid_interval = tuple(grids[0]["interval"]) if grids[0]["interval"] else None
    for unit in units:
        row.warnings += [f"seed {unit['seed']}: {w}" for w in unit["estimate"]["warnings"]]
    return row


def summarise(settings: StudySettings, units: dict[str, dict]) -> list[StudyRow]:
    """One :class:`StudyRow` per configuration from the units' JSON (every unit must be there)."""
    missing = [_unit_name(u) for u in settings.units() if _unit_name(u) not in units]
    if missing:
        raise ValueError(f"{len(missing)} units are missing, e.g. {missing[0]}; run the other shards first")
    rows = []
    for w in settings.widths:
        for f in settings.fractions:
            runs = [units[_unit_name(("run", w, f, s))] for s in settings.seeds]
            probe = units.get(_unit_name(("fgsm", w, f)))
            rows.append(_row(settings, w, f, runs, probe["fgsm"] if probe else None))
    return rows


def compare(rows: Sequence[StudyRow]) -> list[dict[str, Any]]:
    """For configurations that differ in one factor (adjacent widths, or adjacent fractions), whether their
    ε* bands overlap: resolved (they do not) or not at this number of seeds."""
    out = []
    by_key = {(r.width, r.fraction): r for r in rows}
    widths = list(dict.fromkeys(r.width for r in rows))
    fractions = list(dict.fromkeys(r.fraction for r in rows))
    pairs = [(by_key[(w0, f)], by_key[(w1, f)], "width") for f in fractions for w0, w1 in pairwise(widths)]
    pairs += [(by_key[(w, f0)], by_key[(w, f1)], "fraction") for w in widths for f0, f1 in pairwise(fractions)]
    for a, b, factor in pairs:
        if a.interval is None or b.interval is None:
            overlap = None
        else:
            overlap = a.interval[0] <= b.interval[1] and b.interval[0] <= a.interval[1]
        out.append({"factor": factor, "from": _label(a), "to": _label(b), "eps_star": [a.eps_star, b.eps_star],
                    "intervals": [a.interval, b.interval], "overlap": overlap})
    return out


def _label(row: StudyRow) -> str:
    return f"width {'default' if row.width is None else row.width}, fraction {row.fraction:g}"


def _run_unit(unit: tuple, settings: StudySettings, build: Callable[[int | None], nn.Module], data: tuple,
              device: torch.device | str, progress: Callable[[str], None] | None, setting: dict[str, Any],
              grid_records: Path | None = None) -> dict[str, Any]:
    """One unit of work: a clean benchmark and its ε* estimate(s), or the FGSM probe.

    ``data``: (training subset, its view without augmentation, test set). ``grid_records``: where the grid
    check writes its run records with their θ̂ weights, and its clean benchmark (what ``advhooks connectivity``
    pairs them with).
    """
    kind, width, fraction, *seed = unit
    subset, subset_eval, test_set = data
    started = time.perf_counter()
    out: dict[str, Any] = {"schema": STUDY_SCHEMA, "unit": list(unit), "width": width, "fraction": fraction,
                           "n_train": len(subset), "settings": _recipe(settings, unit)}
    if kind == "fgsm":
        out["fgsm"] = fgsm_threshold(lambda: build(width), subset, test_set, settings.fgsm_eps,
                                     epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
                                     seed=settings.seeds[0], device=device, progress=progress)
    else:
        out["seed"] = seed = seed[0]
        torch.manual_seed(seed)
        bench = record_clean_benchmark(build(width), subset, test_set, epochs=settings.epochs,
                                       batch_size=settings.batch_size, lr=settings.lr,
                                       weight_decay=settings.weight_decay, train_eval_set=subset_eval, device=device,
                                       seed=seed, training={**setting, "width": width, "train_fraction": fraction,
                                                            "split_seed": settings.split_seed})
        out["benchmark"] = {k: getattr(bench, k) for k in ("clean_test_loss", "test_loss_stderr", "clean_train_loss",
                                                            "generalization_gap", "clean_test_accuracy")}
        common = dict(model_factory=lambda: build(width), train_set=subset, test_set=test_set,
                      train_eval_set=subset_eval, norm=settings.norm, lr=settings.lr, batch_size=settings.batch_size,
                      seed=seed, device=device, level=settings.level, progress=progress)
        out["estimate"] = _estimate(settings.method, bench, epochs=settings.finetune_epochs
                                    if settings.method == "finetune" else settings.epochs, **common)
        if _grid_checked(settings, unit):
            out["grid"] = _estimate("grid", bench, epochs=settings.epochs, records_dir=grid_records, **common)
            if grid_records is not None:
                bench.save(grid_records / "clean.safetensors")
    out["seconds"] = time.perf_counter() - started
    return out


def _estimate(method: str, bench: Any, **kwargs: Any) -> dict[str, Any]:
    """An estimate as JSON; one that cannot be made (e.g. a clean model too poor for the probe to choose its
    points) is a unit without a value that says why, not the end of the study."""
    try:
        return estimate_eps_star(method, bench, **kwargs).to_dict()
    except ValueError as err:
        return {"method": method, "value": None, "interval": None, "warnings": [f"no {method} estimate: {err}"]}


def _grid_checked(settings: StudySettings, unit: tuple) -> bool:
    return unit[0] == "run" and settings.check_grid and unit[3] == settings.seeds[0] and settings.method != "grid"


def _recipe(settings: StudySettings, unit: tuple) -> dict[str, Any]:
    """What a unit's result depends on: a stored unit is reused only under the same values."""
    if unit[0] == "fgsm":
        keep = ("fgsm_eps", "epochs", "lr", "batch_size", "split_seed")
        out = {k: getattr(settings, k) for k in keep} | {"seed": settings.seeds[0]}
    else:
        keep = ("method", "epochs", "lr", "batch_size", "weight_decay", "norm", "split_seed", "level")
        out = {k: getattr(settings, k) for k in keep} | {"grid_check": _grid_checked(settings, unit)}
        if settings.method == "finetune":
            out["finetune_epochs"] = settings.finetune_epochs
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


def _identity(setting: dict[str, Any], model: nn.Module, subset: Dataset, test_set: Dataset) -> dict[str, Any]:
    """The setting a unit ran on: its description, the model's architecture and the data's labels."""
    data = dataset_fingerprint(subset, test_set)
    return {"setting": setting, "model_hash": model_fingerprint(model)["hash"],
            "data": {k: data.get(k) for k in ("n_train", "n_test", "train_labels_hash", "test_labels_hash")}}


def _stored(path: Path, unit: tuple, recipe: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any] | None:
    """The unit stored at ``path`` when there is one, checked against what this study would run."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(stored, dict) or stored.get("schema") != STUDY_SCHEMA or stored.get("unit") != list(unit):
        raise ValueError(f"{path} is not this study's unit {list(unit)} ({STUDY_SCHEMA})")
    for name, ours, theirs in (("settings", recipe, stored.get("settings")),
                               ("model or data", identity, stored.get("identity"))):
        if ours != theirs:
            differ = _differences(ours, theirs if isinstance(theirs, dict) else {})
            raise ValueError(f"{path} was run with other {name} ({differ}); use another records folder")
    return stored


def _differences(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    """``key: stored -> now`` for each key that differs."""
    keys = sorted(set(ours) | set(theirs))
    return ", ".join(f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in keys if ours.get(k) != theirs.get(k))


def run_study(settings: StudySettings, build: Callable[[int | None], nn.Module], train_set: Dataset,
              test_set: Dataset, *, train_eval_set: Dataset | None = None, records_dir: str | os.PathLike | None = None,
              shard: tuple[int, int] = (0, 1), setting: dict[str, Any] | None = None,
              device: torch.device | str = "cpu", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or read back from ``records_dir``) every unit of this shard and, when all are there, summarise.

    Args:
        settings: the study.
        build: ``build(width)`` → a freshly initialised model (``width`` ``None``: the default size).
        train_set / test_set / train_eval_set: the data (``train_eval_set``: without augmentation).
        records_dir: one JSON file per unit; existing files are read instead of run (when they were run with
            the same recipe, setting, model architecture and data: otherwise a ValueError).
        shard: ``(i, n)``: run only units ``i, i + n, i + 2n, ...``.
        setting: how the setting is named (``{"preset": ...}`` or the factories), stored with every unit and
            in the clean benchmarks.

    Returns:
        ``{"settings", "units", "rows", "comparisons", "seconds", "complete", "reused"}``; ``rows`` and
        ``comparisons`` only when every unit is available (``complete``); ``reused``: units read from the folder.
    """
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    started, setting = time.perf_counter(), setting or {}
    folder = Path(records_dir) if records_dir is not None else None
    units: dict[str, dict] = {}
    reused = 0
    for i, unit in enumerate(settings.units()):
        name, (_, width, fraction, *_) = _unit_name(unit), unit
        data = (train_fraction(train_set, fraction, settings.split_seed),
                train_fraction(train_eval_set or train_set, fraction, settings.split_seed), test_set)
        identity = _identity(setting, build(width), data[1], test_set)
        stored = _stored(folder / name, unit, _recipe(settings, unit), identity) if folder is not None else None
        if stored is not None:
            units[name] = stored
            reused += 1
        elif i % count == index:
            if progress:
                progress(name[:-5])
            grid_records = folder / f"grid-{name[4:-5]}" if folder is not None else None
            units[name] = {**_run_unit(unit, settings, build, data, device, progress, setting, grid_records),
                           "identity": identity}
            if folder is not None:
                write_json_atomic(folder / name, units[name])
    out: dict[str, Any] = {"settings": {**_recipe(settings, ("run", None, 1.0, settings.seeds[0])),
                                        "widths": list(settings.widths), "fractions": list(settings.fractions),
                                        "seeds": list(settings.seeds), "customary_eps": settings.customary_eps,
                                        "fgsm_eps": list(settings.fgsm_eps), "setting": setting},
                           "units": units, "complete": len(units) == len(settings.units()), "reused": reused}
    if out["complete"]:
        rows = summarise(settings, units)
        out["rows"] = [asdict(r) for r in rows]
        out["comparisons"] = compare(rows)
    out["seconds"] = time.perf_counter() - started
    return out


def _eps255(v: float | None) -> str:
    return "-" if v is None else f"{v * 255:.3g}"


def _band255(band: Sequence[float] | None) -> str:
    return "" if band is None else f" [{band[0] * 255:.3g}, {band[1] * 255:.3g}]"


def _fgsm_cell(probe: dict[str, Any] | None) -> str:
    if probe is None:
        return ""
    if probe["threshold"] is None:
        return f"> {_eps255(probe['stable_below'])} (none fired)"
    below = "" if probe["stable_below"] is None else f", stable at {_eps255(probe['stable_below'])}"
    return f"{_eps255(probe['threshold'])} (epoch {probe['runs'][-1]['flag_epoch']}{below})"


def format_study(result: dict[str, Any]) -> str:
    """The study as a table (ε in units of 1/255), then what its bands resolve."""
    settings, rows = result["settings"], [StudyRow(**r) for r in result["rows"]]
    level = f"{settings['level']:.0%}"
    customary = settings.get("customary_eps")
    value = "eps* lower bound" if settings.get("method") == "clean-probe" else "eps*"
    header = ["width", "fraction", "n_train", "R*(0) (s.e.)", "Delta", f"{value} x255 [{level} band]"]
    header += [f"{customary * 255:.3g}/255 / eps*"] if customary else []
    header += ["grid eps* x255"] if any(r.grid is not None for r in rows) else []
    header += ["FGSM unstable eps x255"] if any(r.fgsm for r in rows) else []
    table = [header]
    for r in rows:
        cells = ["default" if r.width is None else str(r.width), f"{r.fraction:g}", str(r.n_train),
                 f"{r.clean_test_loss:.4f} ({r.clean_test_loss_stderr:.4f})", f"{r.generalization_gap:.4f}",
                 _eps255(r.eps_star) + _band255(r.interval)]
        if customary:
            ratio = r.customary_ratio_interval
            cells.append("-" if r.customary_ratio is None else f"{r.customary_ratio:.3g}" +
                         ("" if ratio is None else f" [{ratio[0]:.3g}, {ratio[1]:.3g}]"))
        if "grid eps* x255" in header:
            cells.append(_eps255(r.grid) + _band255(r.grid_interval))
        if "FGSM unstable eps x255" in header:
            cells.append(_fgsm_cell(r.fgsm))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    seeds = len(settings["seeds"])
    for c in result["comparisons"]:
        a, b = c["eps_star"]
        if c["overlap"] is None:
            verdict = "no band on one side: not comparable"
        elif c["overlap"]:
            verdict = f"the bands overlap: not resolved at {seeds} seed{'s' if seeds > 1 else ''}"
        else:
            verdict = f"the bands do not overlap: eps* {'grows' if b > a else 'shrinks'} (resolved)"
        lines.append(f"{c['from']} -> {c['to']}: {_eps255(a)} -> {_eps255(b)}/255, {verdict}")
    for r in rows:
        if r.fgsm and r.fgsm["threshold"] is not None and r.eps_star is not None:
            relation = "below" if r.eps_star < r.fgsm["threshold"] else "NOT below"
            if r.interval is not None:
                relation += (", band and all" if r.interval[1] < r.fgsm["threshold"] else ", but its band reaches it")
            lines.append(f"{_label(r)}: eps* {_eps255(r.eps_star)}/255 is {relation} the FGSM-unstable "
                         f"{_eps255(r.fgsm['threshold'])}/255 (the paper's Table 2 finds it below)")
    lines += [f"warning: {_label(r)}: {w}" for r in rows for w in r.warnings]
    return "\n".join(lines)
