"""Figures 2 and 3 of the paper from :func:`advhooks.kit.theory.simulate` results (needs matplotlib)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from ...plotting import pyplot, save_figure
from .linear import SimulationResult

__all__ = ["plot_simulation"]


def plot_simulation(results: Sequence[SimulationResult], path: str | os.PathLike) -> Path:
    """Three panels: relative parameter difference along training (Figure 2 left, largest d; both runs of
    each pair at the one step ``trajectory_lr``, named in the title), parameter p-values (Figure 2 right) and
    loss p-values (Figure 3) against log(ε / √(d/n)), one line per d."""
    fig, axes = pyplot().subplots(1, 3, figsize=(14, 4), dpi=110)
    last = results[-1]
    for ratio, curve in zip(last.ratios, last.rel_diff_curves, strict=True):
        axes[0].plot(range(1, len(curve) + 1), curve, label=f"ε/√(d/n) = {ratio:g}")
    axes[0].set(xlabel="GD step t", ylabel="‖θ_t(ε) − θ_t(0)‖ / ‖θ_t(0)‖", yscale="log",
                title=f"Figure 2 left (n={last.n}, d={last.d}, both runs at step {last.trajectory_lr:.3g})")
    for res in results:
        logs = [math.log(r) for r in res.ratios]
        axes[1].plot(logs, res.param_pvalue, "o-", label=f"d = {res.d}")
        axes[2].plot(logs, res.loss_pvalue, "o-", label=f"d = {res.d}")
    axes[1].set(xlabel="log(ε / √(d/n))", ylabel="mean p-value of θ^(T)(ε)", title="Figure 2 right: parameters")
    axes[2].set(xlabel="log(ε / √(d/n))", ylabel="mean p-value of R̂(θ^(T)(ε), ε)", title="Figure 3: training loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
