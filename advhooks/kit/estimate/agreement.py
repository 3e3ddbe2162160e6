"""Whether an ε* estimate and the other evidence about it agree: the clean probe's two figures (a lower bound and the
first-order value) and, when run, the check from scratch at the estimate. Where they disagree beyond the
estimate's band, :func:`disagreement` says so and which side the evidence points to."""

from __future__ import annotations

from ...monitor.report import ABOVE, CLEAN_LIKE, FAR_ABOVE
from ...schedules import format_eps
from .result import EpsStarEstimate

UP, DOWN = "above", "below"


def _claims(est: EpsStarEstimate, low: float, high: float) -> list[tuple[str, str, bool]]:
    """What each piece of evidence says about ε* against the band ``[low, high]``: (side, sentence, direct)."""
    claims = []
    if est.lower_bound is not None and est.lower_bound > high:
        claims.append((UP, f"the clean probe's lower bound {format_eps(est.lower_bound)} lies above the band", True))
    if est.first_order is not None and not low <= est.first_order <= high:
        side = UP if est.first_order > high else DOWN
        claims.append((side, f"the first-order value {format_eps(est.first_order)} lies {side} the band", False))
    check = est.verification
    if check and check.get("health") is None:  # its rho band excludes 1 at the estimate: the estimate is off
        where = f"the run from scratch at {format_eps(check['eps'])} reads {check['regime']} (rho's band excludes 1)"
        if check["regime"] == CLEAN_LIKE:
            claims.append((UP, where, True))
        elif check["regime"] in (ABOVE, FAR_ABOVE):
            claims.append((DOWN, where, True))
    return claims


def disagreement(est: EpsStarEstimate) -> str | None:
    """One sentence when the evidence disagrees with the estimate's band, else ``None``.

    The clean probe's figures disagree when they lie outside the band; the run from scratch at the estimate
    (``--verify``) when its ρ band excludes 1 there (``clean-like``: ε* is larger than the estimate, ``above eps*``:
    smaller).

    The run from scratch (``--verify``) and the clean probe's lower bound are direct measurements; the
    first-order value is a linearisation that overestimates where R̂(ε) curves upward. The evidence points to the
    side the direct measurements take; with none, to the first-order value's side; when direct measurements take
    both sides it is split.
    """
    if est.value is None or est.interval is None:
        return None
    low, high = est.interval
    claims = _claims(est, low, high)
    if not claims:
        return None
    direct = {side for side, _, is_direct in claims if is_direct}
    sides = direct or {side for side, _, _ in claims}
    where = f"the {est.method} band [{format_eps(low)}, {format_eps(high)}]"
    said = "; ".join(sentence for _, sentence, _ in claims)
    if len(sides) > 1:
        return f"the evidence disagrees with {where} and is split: {said}"
    side = next(iter(sides))
    weak = "" if direct or side != UP else (" (only the first-order value says so, a linearisation that "
                                            "overestimates where R-hat curves upward; --verify checks it with one "
                                            "run from scratch)")
    return f"the evidence disagrees with {where}: {said}; it points to a {'larger' if side == UP else 'smaller'} " \
           f"eps* than the estimate{weak}"
