"""The study's rows (one per configuration, bands over seeds), the one-factor comparisons and the printed table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
from scipy import stats

from .settings import StudySettings, Unit


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
    grid_per_seed: list[float | None] = field(default_factory=list)
    fgsm: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


def _combined_band(values: list[float], bands: list[tuple[float, float] | None], level: float):
    """The geometric mean over seeds and its band, on the log scale (ε* is positive, and so is its band): the larger
    of the seeds' spread (t·sd(ln ε*)/√k) and their own bands' mean half-widths in ln ε*. ``(mean, band)``."""
    logs = np.log(values)
    k, mean = len(values), float(np.mean(logs))
    t = float(stats.t.ppf((1 + level) / 2, k - 1)) if k > 1 else 0.0
    spread = t * float(np.std(logs, ddof=1)) / math.sqrt(k) if k > 1 else 0.0
    known = [(v, b) for v, b in zip(logs, bands, strict=True) if b is not None]
    # a seed's band that reaches 0 is unbounded below on the log scale: the combined band then reaches 0 too
    low = float(np.mean([v - math.log(b[0]) if b[0] > 0 else math.inf for v, b in known])) if known else 0.0
    high = float(np.mean([math.log(b[1]) - v for v, b in known])) if known else 0.0
    if k == 1 and not known:
        return math.exp(mean), None
    return math.exp(mean), (math.exp(mean - max(spread, low)), math.exp(mean + max(spread, high)))


def row_of(settings: StudySettings, width: int | None, fraction: float, units: list[dict],
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
        row.eps_star, row.interval = _combined_band([v for v, _ in usable], [b for _, b in usable], settings.level)
    if len(usable) < len(units):
        row.warnings.append(f"{len(units) - len(usable)} of {len(units)} seeds gave no estimate")
    if settings.customary_eps and row.eps_star:
        row.customary_ratio = settings.customary_eps / row.eps_star
        if row.interval and row.interval[0] > 0:
            row.customary_ratio_interval = (settings.customary_eps / row.interval[1],
                                            settings.customary_eps / row.interval[0])
    grids = [u["grid"] for u in units if u.get("grid")]  # the first seed's, or every seed's (check_grid "all")
    row.grid_per_seed = [g["value"] for g in grids]
    checked = [(g["value"], tuple(g["interval"]) if g["interval"] else None) for g in grids if g["value"] is not None]
    if checked:
        row.grid, row.grid_interval = _combined_band([v for v, _ in checked], [b for _, b in checked], settings.level)
    for unit in units:
        row.warnings += [f"seed {unit['seed']}: {w}" for w in unit["estimate"]["warnings"]]
    return row


def summarise(settings: StudySettings, units: dict[str, dict]) -> list[StudyRow]:
    """One :class:`StudyRow` per configuration from the units' JSON (every unit must be there)."""
    missing = [f"{u.name}.json" for u in settings.units() if f"{u.name}.json" not in units]
    if missing:
        raise ValueError(f"{len(missing)} units are missing, e.g. {missing[0]}; run the other shards first")
    rows = []
    for w in settings.widths:
        for f in settings.fractions:
            runs = [units[f"{Unit('run', w, f, s).name}.json"] for s in settings.seeds]
            probe = units.get(f"{Unit('fgsm', w, f).name}.json")
            rows.append(row_of(settings, w, f, runs, probe["fgsm"] if probe else None))
    return rows


def compare(rows: Sequence[StudyRow]) -> list[dict[str, Any]]:
    """For configurations that differ in one factor (adjacent widths, or adjacent fractions), whether their
    ε* bands overlap: resolved (they do not) or not at this number of seeds; the estimate's, then (when every
    seed ran the grid) the grid's."""
    out = _compare(rows, "estimate", lambda r: (r.eps_star, r.interval))
    if rows and all(len(r.grid_per_seed) == len(r.seeds) > 1 for r in rows):
        out += _compare(rows, "grid", lambda r: (r.grid, r.grid_interval))
    return out


def _compare(rows: Sequence[StudyRow], estimator: str, of: Any) -> list[dict[str, Any]]:
    out = []
    by_key = {(r.width, r.fraction): r for r in rows}
    widths = list(dict.fromkeys(r.width for r in rows))
    fractions = list(dict.fromkeys(r.fraction for r in rows))
    pairs = [(by_key[(w0, f)], by_key[(w1, f)], "width") for f in fractions for w0, w1 in pairwise(widths)]
    pairs += [(by_key[(w, f0)], by_key[(w, f1)], "fraction") for w in widths for f0, f1 in pairwise(fractions)]
    for a, b, factor in pairs:
        (va, ia), (vb, ib) = of(a), of(b)
        overlap = None if ia is None or ib is None else ia[0] <= ib[1] and ib[0] <= ia[1]
        out.append({"estimator": estimator, "factor": factor, "from": _label(a), "to": _label(b),
                    "eps_star": [va, vb], "intervals": [ia, ib], "overlap": overlap})
    return out


def _label(row: StudyRow) -> str:
    return f"width {'default' if row.width is None else row.width}, fraction {row.fraction:g}"


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
    grid_seeds = max((len(r.grid_per_seed) for r in rows), default=0)
    grid_header = f"grid eps* x255 ({'first seed' if grid_seeds == 1 else f'{grid_seeds} seeds'})"
    header += [grid_header] if any(r.grid is not None for r in rows) else []
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
        if grid_header in header:
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
        who = "grid: " if c.get("estimator") == "grid" else ""
        lines.append(f"{who}{c['from']} -> {c['to']}: {_eps255(a)} -> {_eps255(b)}/255, {verdict}")
    for r in rows:
        if r.fgsm and r.fgsm["threshold"] is not None and r.eps_star is not None:
            below = r.eps_star < r.fgsm["threshold"]
            band = "" if r.interval is None or not below else (
                ", band and all" if r.interval[1] < r.fgsm["threshold"] else ", but its band reaches it")
            lines.append(f"{_label(r)}: eps* {_eps255(r.eps_star)}/255 is {'below' if below else 'NOT below'} the "
                         f"FGSM-unstable {_eps255(r.fgsm['threshold'])}/255{band} (the paper's Table 2 finds it below)")
    lines += [f"warning: {_label(r)}: {w}" for r in rows for w in r.warnings]
    return "\n".join(lines)
