"""The main job on the embedded default, end to end: ``advhooks demo``.

1. Records the clean benchmark R*(0) on the bundled digits (digits-mlp preset, early stopping).
2. Estimates ε* for free (clean probe) and by fine-tuning (section 6), each with its band.
3. Trains adversarially (PGD-10, L∞) from scratch at a few ε, each watched by a PhaseMonitor that evaluates
   the adversarial test loss every epoch and the paper's R̂ of the early-stopped model; the runs are run
   records, and together they give the grid ε* (section 5.2) with its band. Each run's ρ, band and regime
   come from the same R̂, so the verdicts and the grid agree.
4. Writes ``demo.json`` (everything; ``eps_star.grid|finetune|clean_probe`` are
   :meth:`EpsStarEstimate.to_dict` and ``runs[i]`` hold ``eps``, ``ratio``, ``ratio_interval``, ``regime``,
   ``early_stopped_epoch``) and ``demo.png`` (needs the ``plot`` extra), and returns a summary table.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..attacks import PGD
from ..monitor import PhaseMonitor
from ..plotting import pyplot, save_figure
from ..robustness import robust_accuracy
from ..schedules import format_eps
from . import estimate as E
from .data import load_digits
from .presets import get_preset
from .training import adversarial_loss, record_clean_benchmark, train_adversarially

__all__ = ["DEMO_EPS", "QUICK_EPS", "format_demo_table", "run_demo"]

DEMO_EPS = (2 / 255, 8 / 255, 16 / 255, 32 / 255)
QUICK_EPS = (4 / 255, 32 / 255)


def run_demo(out_dir: str | Path, *, quick: bool = False, seed: int = 0,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the demo and write its report into ``out_dir``; returns the JSON-ready results.

    Args:
        out_dir: the output folder (created).
        quick: a short version for tests (fewer epochs and strengths).
        seed: seeds everything.
        progress: called with a line of text as the demo advances.
    """
    say = progress or (lambda text: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    preset = get_preset("digits-mlp")
    recipe = preset.recipe.with_given(epochs=12 if quick else None)
    epochs = recipe.epochs
    eps_list = QUICK_EPS if quick else DEMO_EPS
    train, test = load_digits(seed=0)

    torch.manual_seed(seed)
    say(f"recording the clean benchmark (digits-mlp, {epochs} epochs)")
    bench = record_clean_benchmark(preset.model(), train, test, recipe=recipe, seed=seed,
                                   training={"preset": preset.name})
    bench.save(out / "clean.safetensors")
    say(f"R*(0) = {bench.clean_test_loss:.4f}")

    say("estimating eps* (clean probe, fine-tune)")
    probe = E.estimate_clean_probe(bench.load_weights_into(preset.model()), train, bench, list(E.DEFAULT_LADDER))
    finetune = E.estimate_finetune(preset.model, E.EstimationData(train), bench, E.finetune_start(probe),
                                   E.FinetuneSettings(seed=seed, **({"epochs": 4} if quick else {})),
                                   mean_grad_dual_norm=probe.mean_grad_dual_norm)

    runs, records = [], []
    test_loader = DataLoader(test, batch_size=256)
    runs_started = time.perf_counter()
    for eps in eps_list:
        say(f"adversarial training at eps = {format_eps(eps)}")
        torch.manual_seed(seed)
        model = preset.model()
        monitor = PhaseMonitor(bench, eps=eps, total_epochs=epochs, attack=PGD(eps, steps=10),
                               recipe=recipe, eps_star=finetune if finetune.interval else None)
        monitor.evaluate_with(model, train, test, seed=seed)
        loader = DataLoader(train, batch_size=recipe.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        history = train_adversarially(model, loader, PGD(eps, steps=10), eps, recipe, monitor=monitor)
        last = history[-1]["report"]
        monitor.evaluate_rhat()  # a no-op after the last planned epoch; a run cut short evaluates θ̂'s R̂ here
        records.append(monitor.record())
        runs_seconds = time.perf_counter() - runs_started
        robust_loss, robust_acc = adversarial_loss(model, test_loader, PGD(eps, steps=20), eps)
        fast_suite = robust_accuracy(model, test, eps, suite="fast")  # APGD-CE, then APGD-T (cheap settings)
        runs.append({
            "eps": eps,
            "ratio": last.ratio,
            "ratio_interval": list(last.ratio_interval),
            "regime": last.regime,
            "early_stopped_epoch": last.early_stopped_epoch,
            "rhat": last.rhat,
            "rhat_stderr": last.rhat_stderr,
            "epoch_losses": [h["train_loss"] for h in history],
            "adv_test_losses": [h["report"].adv_test_loss for h in history],
            "flag_epoch": last.flag_epoch,
            "pgd20_test_loss": robust_loss,
            "pgd20_test_accuracy": robust_acc,
            "fast_suite_robust_accuracy": fast_suite.robust_accuracy,
        })
    grid = E.estimate_from_records(records, bench, seed=seed)
    grid.method = "grid"
    grid.seconds = runs_seconds
    result = {
        "clean_benchmark": bench.header(),
        "clean_test_loss_interval": list(bench.bootstrap_interval(level=grid.level)),
        "eps_star": {"grid": grid.to_dict(), "finetune": finetune.to_dict(), "clean_probe": probe.to_dict()},
        "runs": runs,
        "epochs": epochs,
        "quick": quick,
        "seconds": time.perf_counter() - start,
    }
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    try:
        result["plot"] = str(_plot(result, out / "demo.png"))
    except ImportError as err:
        result["plot"] = None
        say(f"no plot: {err}")
    return result


def _plot(result: dict[str, Any], path: Path) -> Path:
    r_star = result["clean_benchmark"]["clean_test_loss"]
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4.2), dpi=120)
    for run in result["runs"]:
        label = f"ε = {run['eps'] * 255:.3g}/255: {run['regime']}"
        (line,) = left.plot(range(1, len(run["epoch_losses"]) + 1), run["epoch_losses"], label=label)
        low, high = run["ratio_interval"]
        if run["early_stopped_epoch"] and math.isfinite(low):
            epoch = run["early_stopped_epoch"]
            left.errorbar([epoch], [run["rhat"]], yerr=[[run["rhat"] - low * r_star], [high * r_star - run["rhat"]]],
                          fmt="o", color=line.get_color(), capsize=3)
    left.axhline(r_star, color="black", ls="--", label=f"R*(0) = {r_star:.4f}")
    left.axhspan(*result["clean_test_loss_interval"], color="black", alpha=0.1, lw=0)
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel("adversarial training loss (running mean; dot: R̂ of θ̂)")
    left.set_title("digits-mlp, PGD-10 L∞")
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    labels = {"grid": "grid ε*", "finetune": "fine-tune ε*", "clean_probe": "clean-probe\nlower bound"}
    for row, (name, est) in enumerate(result["eps_star"].items()):
        if est["value"] is None:
            continue
        low, high = est["interval"] or (est["value"], est["value"])
        marker = ">" if name == "clean_probe" else "o"  # a lower bound, not an estimate
        right.errorbar([est["value"] * 255], [row], xerr=[[(est["value"] - low) * 255], [(high - est["value"]) * 255]],
                       fmt=marker, capsize=4, label=f"{labels[name]}: {est['value'] * 255:.3g}/255")
    for run in result["runs"]:
        right.axvline(run["eps"] * 255, color="grey", lw=0.8, ls=":")
    right.set_yticks(range(len(result["eps_star"])), [labels[name] for name in result["eps_star"]])
    right.set_xlabel(f"ε* × 255 ({result['eps_star']['grid']['level']:.0%} bands; dotted: the runs' ε)")
    right.set_title("ε* estimates")
    right.grid(alpha=0.3)
    return save_figure(fig, path)


def format_demo_table(result: dict[str, Any]) -> str:
    """The demo's results as aligned text."""
    bench = result["clean_benchmark"]
    est = result["eps_star"]

    def u(v: float | None) -> str:
        return "-" if v is None else format_eps(v)

    def band(e: dict[str, Any]) -> str:
        if e["value"] is None:
            return "-"
        return u(e["value"]) + ("" if e["interval"] is None else
                                f" [{e['interval'][0] * 255:.3g}, {e['interval'][1] * 255:.3g}]/255")

    low, high = result["clean_test_loss_interval"]
    lines = [
        f"clean benchmark: R*(0) = {bench['clean_test_loss']:.4f} [{low:.4f}, {high:.4f}], clean train loss "
        f"{bench['clean_train_loss']:.4f}, gap {bench['generalization_gap']:.4f}, test accuracy "
        f"{bench['clean_test_accuracy']:.3f}",
        f"eps* ({est['grid']['level']:.0%} bands): grid {band(est['grid'])}; fine-tune {band(est['finetune'])}; "
        f"clean-probe lower bound {band(est['clean_probe'])}",
        "",
        f"{'eps':>17}  {'R-hat(theta-hat)':>16}  {'ratio [band]':>22}  {'regime':<12}  {'stopped at':>10}  "
        f"{'PGD-20 test acc':>15}  {'fast-suite acc':>14}",
    ]
    for run in result["runs"]:
        lo, hi = run["ratio_interval"]
        ratio = f"{run['ratio']:.3f} [{lo:.3f}, {hi:.3f}]"
        lines.append(f"{u(run['eps']):>17}  {run['rhat']:>16.4f}  {ratio:>22}  {run['regime']:<12}  "
                     f"{'epoch ' + str(run['early_stopped_epoch']):>10}  {run['pgd20_test_accuracy']:>15.3f}  "
                     f"{run['fast_suite_robust_accuracy']:>14.3f}")
    for name, e in est.items():
        lines += [f"warning ({name.replace('_', '-')}): {w}" for w in e["warnings"]]
    lines.append("")
    lines.append(f"{result['seconds']:.1f} s")
    return "\n".join(lines)
