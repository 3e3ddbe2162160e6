"""The picture of an ε* estimate (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

import os
from pathlib import Path

from ...plotting import pyplot, save_figure
from .result import EpsStarEstimate

__all__ = ["plot_estimate"]


def plot_estimate(est: EpsStarEstimate, path: str | os.PathLike, unit: float = 1 / 255) -> Path:
    """Adversarial training loss against ε with the R*(0) line, the points (one line per run) and the ε* marker.

    Args:
        est: an estimate from :mod:`advhooks.kit.estimate`.
        path: where to write the PNG.
        unit: the x axis is ε / ``unit`` (default ε × 255).
    """
    plt = pyplot()
    scale = 1 / unit
    label = "ε × 255" if abs(scale - 255) < 1e-9 else f"ε / {unit:g}"
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    pts = [p for p in est.points if p.get("loss") is not None]
    runs = sorted({p.get("run", 0) for p in pts})
    for run in runs:
        mine = sorted((p["eps"], p["loss"]) for p in pts if p.get("run", 0) == run)
        ax.plot([e * scale for e, _ in mine], [v for _, v in mine], "o-", alpha=0.8,
                label="adversarial training loss" if run == runs[0] else None, color="tab:blue")
    ax.axhline(est.clean_test_loss, color="tab:green", ls="--", label=f"R*(0) = {est.clean_test_loss:.4f}")
    if est.value is not None:
        ax.axvline(est.value * scale, color="tab:red", ls=":", label=f"{est.method} ε* = {est.value * scale:.3g}/255")
        ax.plot([est.value * scale], [est.clean_test_loss], "*", color="tab:red", markersize=14)
    if est.lower_bound is not None and est.method != "clean-probe":
        ax.axvline(est.lower_bound * scale, color="tab:gray", ls="--", lw=1,
                   label=f"clean-probe lower bound {est.lower_bound * scale:.3g}/255")
    if est.first_order is not None:
        ax.axvline(est.first_order * scale, color="tab:purple", ls="-.",
                   label=f"first order {est.first_order * scale:.3g}/255")
    ax.set_xlabel(label)
    ax.set_ylabel("adversarial training loss R̂(θ, ε)")
    ax.set_title(f"ε* by {est.method} ({est.norm})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
