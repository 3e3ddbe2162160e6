"""What the ε ≫ ε* flag can tell a user beyond the verdict: ε against an ε* estimate they hand the monitor
(``PhaseMonitor(eps_star=...)``), with the estimate's band, and what a study of their setting
(``PhaseMonitor(study=...)``, ``advhooks study --json``'s file) says a wider model or more data would do."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..schedules import format_eps
from ..uncertainty import z_value

__all__ = ["EpsStarBand", "FlagAdvice", "eps_sentence", "eps_star_band", "study_rows", "trend_sentence"]

EpsStarBand = tuple[float, float, float]  # (value, low, high)


def _read_json(given: Any, what: str) -> Any:
    """``given`` itself, or the JSON of the file it names."""
    if not isinstance(given, (str, os.PathLike)):
        return given
    try:
        return json.loads(Path(given).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} file {given}: not JSON ({err})") from None


def eps_star_band(given: Any) -> EpsStarBand | None:
    """``(value, low, high)`` of an ε* estimate: an ``EpsStarEstimate``, its JSON (a mapping with ``value`` and
    ``interval``, or the path of a file holding it, as ``estimate-eps-star --json`` writes), or
    ``(value, (low, high))``; ``None`` stays ``None``. An estimate without a value or a band is refused."""
    if given is None:
        return None
    given = _read_json(given, "eps_star")
    if isinstance(given, Mapping):
        value, interval = given.get("value"), given.get("interval")
    elif isinstance(given, tuple) and len(given) == 2:
        value, interval = given
    else:
        value, interval = getattr(given, "value", None), getattr(given, "interval", None)
    if value is None or interval is None or len(interval) != 2:
        raise ValueError("eps_star must be an eps* estimate with a value and a band (an EpsStarEstimate, its JSON or "
                         f"its file, or (value, (low, high))), got {given!r:.80}")
    band = (float(value), float(interval[0]), float(interval[1]))
    if not all(math.isfinite(v) and v >= 0 for v in band) or not band[1] <= band[0] <= band[2] or band[0] <= 0:
        raise ValueError(f"eps_star must have 0 <= low <= value <= high, all finite and value > 0, got {band}")
    return band


def eps_sentence(eps: float | None, band: EpsStarBand | None) -> str:
    """``eps = ... is R x the eps* estimate V [L, H] (R_low to R_high)``, or ``""`` without either."""
    if eps is None or band is None:
        return ""
    value, low, high = band
    upper = f"{eps / low:.1f}x" if low > 0 else "unbounded"
    return (f"eps = {format_eps(eps)} is {eps / value:.1f}x the eps* estimate {format_eps(value)} "
            f"[{format_eps(low)}, {format_eps(high)}] ({eps / high:.1f}x to {upper}). ")


def study_rows(given: Any) -> list[dict] | None:
    """The rows of a study (``advhooks study --json``'s file, or its result mapping); ``None`` stays ``None``."""
    if given is None:
        return None
    given = _read_json(given, "study")
    rows = given.get("rows") if isinstance(given, Mapping) else None
    if not rows:
        raise ValueError("study must be an advhooks study (its --json file or result) with its rows: run every unit")
    return [dict(r) for r in rows]


def _trend(points: list[tuple[float, float, float, float]], z: float, draws: int = 4000):
    """Weighted least squares of ln ε* on ln x (each row's band as its error), and draws of (a, b)."""
    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    se = np.array([max((math.log(p[3]) - math.log(p[2])) / (2 * z), 1e-6) for p in points])
    design = np.column_stack([np.ones_like(x), x]) / se[:, None]
    cov = np.linalg.inv(design.T @ design)
    coef = cov @ design.T @ (y / se)
    return np.random.default_rng(0).multivariate_normal(coef, cov, size=draws)


def trend_sentence(eps: float | None, rows: list[dict] | None, level: float = 0.8) -> str:
    """What the study's trends say about the run's ε: the width at which ε* reaches it (ln ε* linear in ln width,
    per training fraction, fitted over the rows with their bands), and the direction of more data; or that the
    trend does not resolve it."""
    if eps is None or not rows:
        return ""
    z = z_value(level)
    usable = [r for r in rows if r.get("eps_star") and r.get("interval") and r["interval"][0] > 0]
    said = []
    for axis, key, group in (("width", "width", "fraction"), ("training-set size", "n_train", "width")):
        groups: dict[Any, list] = {}
        for r in usable:
            if isinstance(r.get(key), (int, float)):
                groups.setdefault(r.get(group), []).append((float(r[key]), r["eps_star"], *r["interval"]))
        fits = [(k, g) for k, g in groups.items() if len({p[0] for p in g}) >= 2]
        if not fits:
            continue
        _, pts = max(fits, key=lambda kg: len(kg[1]))  # the fraction (or width) with the most rows
        draws = _trend(pts, z)
        low_b, high_b = _band(draws[:, 1], level)
        if low_b <= 0 <= high_b:
            said.append(f"the study's {axis} trend does not resolve how eps* moves with it")
        elif axis == "width" and low_b > 0:
            slope = draws[:, 1]
            with np.errstate(divide="ignore", over="ignore"):  # a draw with no rise never reaches eps: infinite
                log_width = np.where(slope > 0, (math.log(eps) - draws[:, 0]) / np.where(slope > 0, slope, 1.0),
                                     np.inf)
                low_w, high_w = np.exp(_band(log_width, level))
            upto = f"{high_w:.3g}" if np.isfinite(high_w) else "beyond any width (no upper end)"
            said.append(f"the study's width trend (eps* grows as width^{np.median(slope):.2f}) reaches eps* = "
                        f"{format_eps(eps)} at width {low_w:.3g} to {upto} ({level:.0%} band)")
        else:
            sign = "grows" if low_b > 0 else "shrinks"
            consequence = "" if low_b > 0 else ": more data will not bring eps* up to this eps"
            said.append(f"the study's {axis} trend: eps* {sign} with more data (exponent {np.median(draws[:, 1]):.2f})"
                        f"{consequence}")
    return ("; ".join(said) + ". ") if said else ""


def _band(values, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(np.asarray(values, dtype=float), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)



class FlagAdvice:
    """The sentences the ε ≫ ε* flag adds for one monitor: from its ``eps_star`` and its ``study``."""

    def __init__(self, eps_star: Any = None, study: Any = None, level: float = 0.8) -> None:
        self.eps_star, self.rows, self.level = eps_star_band(eps_star), study_rows(study), level

    def sentence(self, eps: float | None) -> str:
        """What the flag says about ``eps`` beyond the verdict (``""`` when nothing was handed)."""
        return eps_sentence(eps, self.eps_star) + trend_sentence(eps, self.rows, self.level)
