"""What the ε ≫ ε* flag can tell a user beyond the verdict: ε against an ε* estimate they hand the monitor
(``PhaseMonitor(eps_star=...)``), with the estimate's band."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..schedules import format_eps

__all__ = ["EpsStarBand", "eps_star_band", "eps_sentence"]

EpsStarBand = tuple[float, float, float]  # (value, low, high)


def eps_star_band(given: Any) -> EpsStarBand | None:
    """``(value, low, high)`` of an ε* estimate: an ``EpsStarEstimate``, its JSON (a mapping with ``value`` and
    ``interval``, or the path of a file holding it, as ``estimate-eps-star --json`` writes), or
    ``(value, (low, high))``; ``None`` stays ``None``. An estimate without a value or a band is refused."""
    if given is None:
        return None
    if isinstance(given, (str, os.PathLike)):
        try:
            given = json.loads(Path(given).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"eps_star file {given}: not JSON ({err})") from None
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
