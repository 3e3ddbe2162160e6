"""The paper's Figure 4 from a :class:`~advhooks.kit.connectivity.ConnectivityResult` (needs the ``plot`` extra)."""

from __future__ import annotations

import os
from pathlib import Path

from ...plotting import pyplot, save_figure

__all__ = ["plot_connectivity"]


def plot_connectivity(result, path: str | os.PathLike) -> Path:
    """A :class:`~advhooks.kit.connectivity.ConnectivityResult` as the paper's Figure 4 and its two profiles.

    Left (when the result has a contour): the clean training loss over the plane of the clean model, the
    curve's middle and the adversarial model, with the trained curve and the straight line. Right: the
    loss along both paths against t (0 = clean, 1 = adversarial), with their barriers.
    """
    import numpy as np

    plt = pyplot()
    panels = 2 if result.contour else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2), squeeze=False)
    if result.contour:
        filled = _draw_contour(axes[0, 0], result.contour, np)
        fig.colorbar(filled, ax=axes[0, 0], label="clean training loss", format="%.3g")
    ax = axes[0, -1]
    ax.plot(result.t, result.line_loss, color="tab:gray", ls="--",
            label=f"straight line (barrier {result.line_barrier:.3f}, ridge {result.line_ridge:.3f})")
    ax.plot(result.t, result.curve_loss, color="k",
            label=f"trained curve (barrier {result.curve_barrier:.3f}, ridge {result.curve_ridge:.3f})")
    ax.set_xlabel("t (0: clean model, 1: adversarial model)")
    ax.set_ylabel("clean training loss")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _draw_contour(ax, contour: dict, np):
    loss = np.asarray(contour["loss"])
    low, high = max(float(loss.min()), 1e-4), max(float(loss.max()), 2e-4)
    levels = np.geomspace(low, high, 16)
    filled = ax.contourf(contour["x"], contour["y"], np.clip(loss, low, high), levels=levels, cmap="RdYlBu",
                         norm=_log_norm(low, high))
    curve = np.asarray(contour["curve"])
    ax.plot(curve[:, 0], curve[:, 1], color="k", lw=1.5)
    points = contour["points"]
    ax.plot([points["clean"][0], points["adversarial"][0]], [points["clean"][1], points["adversarial"][1]],
            color="k", ls="--", lw=1)
    labels = {"middle": contour.get("middle_is", "middle")}
    for name, (x, y) in points.items():
        ax.plot([x], [y], "o", color="k")
        right = name == "adversarial"  # labelled on its left, inside the frame
        ax.annotate(labels.get(name, name), (x, y), textcoords="offset points", xytext=(-4 if right else 4, 5),
                    ha="right" if right else "left", fontsize=8)
    ax.set_aspect("equal")
    ax.set_title("clean training loss in the plane of the three points", fontsize=9)
    return filled


def _log_norm(low: float, high: float):
    from matplotlib.colors import LogNorm

    return LogNorm(vmin=low, vmax=high)
