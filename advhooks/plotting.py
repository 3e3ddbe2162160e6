"""Pictures of a monitored run, and the matplotlib helpers the kit's figures share (the ``plot`` extra)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["plot_connectivity", "plot_run", "pyplot", "save_figure"]


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend, or an ImportError naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'advhooks[plot]'") from err
    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Lay out, write (creating the folder) and close ``fig``; returns the path."""
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    pyplot().close(fig)
    return out


def plot_run(record: dict, clean_test_loss: float, clean_band: tuple[float, float], path: str | os.PathLike) -> Path:
    """One monitored run (a :meth:`PhaseMonitor.record`): losses per epoch against R*(0), with both bands.

    The running mean of the adversarial training loss, the adversarial test loss, the paper's R̂ of the
    early-stopped model θ̂ with its band (error bar at θ̂'s epoch), and R*(0) with its band.
    """
    from .uncertainty import z_value

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    epochs = [e["epoch"] for e in record["epochs"]]
    ax.plot(epochs, [e["running_mean"] for e in record["epochs"]], color="tab:blue",
            label="adversarial training loss (running mean)")
    tests = [(e["epoch"], e["adv_test_loss"]) for e in record["epochs"] if e["adv_test_loss"] is not None]
    if tests:
        ax.plot(*zip(*tests, strict=True), color="tab:orange", label="adversarial test loss")
    ax.axhline(clean_test_loss, color="k", lw=1, label="R*(0) (clean benchmark)")
    ax.axhspan(*clean_band, color="k", alpha=0.12, lw=0)
    rhat = record.get("rhat")
    if rhat:
        half = z_value(record.get("level", 0.8)) * (rhat["stderr"] or 0.0)
        ax.errorbar([rhat["epoch"]], [rhat["mean"]], yerr=[[half], [half]], fmt="o", color="tab:red", capsize=4,
                    label=f"R-hat of the early-stopped model ({rhat['kind']})")
    eps = record.get("eps")
    ax.set_title("monitored run" + (f", eps = {eps * 255:.3g}/255" if eps is not None else ""))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_connectivity(result, path: str | os.PathLike) -> Path:
    """A :class:`~advhooks.connectivity.ConnectivityResult` as the paper's Figure 4 and its two profiles.

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
