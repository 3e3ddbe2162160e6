"""Pictures of a monitored run, and the matplotlib helpers the kit's figures share (the ``plot`` extra)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["plot_run", "pyplot", "save_figure"]


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
