"""The picture of an ε* study: ε* with its band against width and against training-set size (``plot`` extra)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...plotting import pyplot, save_figure

__all__ = ["plot_study"]


def _series(ax, rows: Sequence[dict[str, Any]], x_key: str, group_key: str, label: str) -> None:
    groups = list(dict.fromkeys(r[group_key] for r in rows))
    for index, group in enumerate(groups):
        chosen = sorted((r for r in rows if r[group_key] == group and r["eps_star"] is not None),
                        key=lambda r: r[x_key] or 0)
        if not chosen:
            continue
        dodge = 1 + 0.04 * (index - (len(groups) - 1) / 2)  # side by side, so that overlapping bands stay visible
        xs = [r[x_key] * dodge for r in chosen]
        ys = [r["eps_star"] * 255 for r in chosen]
        low = [y - (r["interval"][0] * 255 if r["interval"] else y) for y, r in zip(ys, chosen, strict=True)]
        high = [(r["interval"][1] * 255 if r["interval"] else y) - y for y, r in zip(ys, chosen, strict=True)]
        ax.errorbar(xs, ys, yerr=[low, high], fmt="o-", capsize=4, label=f"{label} {group:g}" if isinstance(
            group, float) else f"{label} {'default' if group is None else group}")
        grid = [(r[x_key] * dodge, r["grid"] * 255) for r in chosen if r.get("grid") is not None]
        if grid:
            ax.plot(*zip(*grid, strict=True), "x", color=ax.lines[-1].get_color(), ms=8)
    seeds = max((len(r.get("grid_per_seed") or []) for r in rows), default=0)
    if any(r.get("grid") is not None for r in rows):
        ax.plot([], [], "x", color="k", ms=8,
                label="grid check (first seed)" if seeds <= 1 else f"grid check (mean of {seeds} seeds)")


def plot_study(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """ε* (× 255) with its band against model width (one line per training fraction) and against the number of
    training samples (one line per width); the grid check's ε*, when run, as crosses."""
    plt = pyplot()
    rows = result["rows"]
    widths = {r["width"] for r in rows}
    sizes = {r["n_train"] for r in rows}
    panels = [p for p, n in (("width", len(widths)), ("n_train", len(sizes))) if n > 1] or ["width"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    customary = result["settings"].get("customary_eps")
    for ax, panel in zip(axes[0], panels, strict=True):
        if customary:
            ax.axhline(customary * 255, color="grey", lw=1, ls=":", label=f"customary ε ({customary * 255:.3g}/255)")
        if panel == "width":
            _series(ax, [r for r in rows if r["width"] is not None] or rows, "width", "fraction", "train fraction")
            ax.set_xlabel("model width")
        else:
            _series(ax, rows, "n_train", "width", "width")
            ax.set_xlabel("training samples")
        values = sorted(v for v in (widths if panel == "width" else sizes) if v is not None)
        if values and all(isinstance(v, int) and v > 0 for v in values):
            ax.set_xscale("log", base=2)
            ax.set_xticks(values, [str(v) for v in values])
            ax.minorticks_off()
        ax.set_ylabel("ε* × 255 (band)")
        ax.legend(fontsize=8)
    fig.suptitle("ε* study" + (f" (customary ε = {customary * 255:.3g}/255)" if customary else ""), fontsize=10)
    return save_figure(fig, path)
