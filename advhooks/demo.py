"""The main job on the embedded default, end to end: ``advhooks demo``.

1. Records the clean benchmark R*(0) on the bundled digits (digits-mlp preset, early stopping).
2. Estimates ε* for free (clean probe) and by fine-tuning + extrapolation.
3. Trains adversarially (PGD-10, L∞) at a few ε below and above ε*, each watched by a PhaseMonitor.
4. Writes ``demo.json`` (everything) and ``demo.png`` (adversarial training loss per epoch against R*(0)
   for each ε; needs the ``plot`` extra) into the output folder, and returns a summary table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from . import estimate as E
from .attacks import PGD
from .benchmark import record_clean_benchmark
from .data import load_digits
from .monitor import PhaseMonitor
from .plotting import pyplot, save_figure
from .presets import get_preset
from .schedules import format_eps
from .training import adversarial_loss, train_adversarially

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
    epochs = 12 if quick else preset.epochs
    eps_list = QUICK_EPS if quick else DEMO_EPS
    train, test = load_digits(seed=0)

    torch.manual_seed(seed)
    say(f"recording the clean benchmark (digits-mlp, {epochs} epochs)")
    bench = record_clean_benchmark(preset.model(), train, test, epochs=epochs, batch_size=preset.batch_size,
                                   lr=preset.lr, weight_decay=preset.weight_decay, seed=seed,
                                   training={"preset": preset.name})
    bench.save(out / "clean.safetensors")
    say(f"R*(0) = {bench.clean_test_loss:.4f}")

    say("estimating eps* (clean probe, fine-tune)")
    probe = E.estimate_clean_probe(bench.load_weights_into(preset.model()), train, bench,
                                   [e / 255 for e in (0.5, 1, 2, 4, 8, 16, 32, 64)])
    finetune = E.estimate_finetune(preset.model, train, bench, E.default_finetune_eps(probe),
                                   epochs=4 if quick else 10, lr=preset.lr, seed=seed,
                                   mean_grad_dual_norm=probe.mean_grad_dual_norm)

    runs = []
    test_loader = DataLoader(test, batch_size=256)
    for eps in eps_list:
        say(f"adversarial training at eps = {format_eps(eps)}")
        torch.manual_seed(seed)
        model = preset.model()
        monitor = PhaseMonitor(bench, eps=eps, total_epochs=epochs)
        loader = DataLoader(train, batch_size=preset.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        history = train_adversarially(model, loader, PGD(eps, steps=10), eps, epochs, preset.lr, decay=True,
                                      monitor=monitor)
        last = history[-1]["report"]
        robust_loss, robust_acc = adversarial_loss(model, test_loader, PGD(eps, steps=20), eps)
        runs.append({
            "eps": eps,
            "epoch_losses": [h["train_loss"] for h in history],
            "ratios": [h["report"].ratio for h in history],
            "final_ratio": last.ratio,
            "best_ratio": last.best_ratio,
            "regime": last.regime,
            "flag_epoch": last.flag_epoch,
            "pgd20_test_loss": robust_loss,
            "pgd20_test_accuracy": robust_acc,
        })
    result = {
        "clean_benchmark": bench.record(),
        "eps_star": {"clean_probe_lower_bound": probe.lower_bound, "first_order": probe.first_order,
                     "finetune": finetune.value, "finetune_fit": finetune.fit, "finetune_warnings": finetune.warnings},
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
    fig, ax = pyplot().subplots(figsize=(7, 4.4), dpi=120)
    for run in result["runs"]:
        label = f"ε = {run['eps'] * 255:.3g}/255: {run['regime']}"
        ax.plot(range(1, len(run["epoch_losses"]) + 1), run["epoch_losses"], label=label)
    ax.axhline(r_star, color="black", ls="--", label=f"R*(0) = {r_star:.4f} (clean benchmark)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("adversarial training loss R̂(θ_t, ε)")
    est = result["eps_star"]["finetune"]
    title = "digits-mlp, PGD-10 L∞" + (f"; fine-tune ε* ≈ {est * 255:.3g}/255" if est else "")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def format_demo_table(result: dict[str, Any]) -> str:
    """The demo's results as aligned text."""
    bench = result["clean_benchmark"]
    est = result["eps_star"]

    def u(v: float | None) -> str:
        return "-" if v is None else format_eps(v)

    lines = [
        f"clean benchmark: R*(0) = {bench['clean_test_loss']:.4f}, clean train loss {bench['clean_train_loss']:.4f}, "
        f"gap {bench['generalization_gap']:.4f}, test accuracy {bench['clean_test_accuracy']:.3f}",
        f"eps*: clean-probe lower bound {u(est['clean_probe_lower_bound'])}, first order {u(est['first_order'])}, "
        f"fine-tune {u(est['finetune'])}",
        "",
        f"{'eps':>17}  {'adv train loss':>14}  {'ratio':>7}  {'regime':<12}  {'flagged at':>10}  "
        f"{'PGD-20 test acc':>15}",
    ]
    for run in result["runs"]:
        flag = "-" if run["flag_epoch"] is None else f"epoch {run['flag_epoch']}"
        lines.append(f"{u(run['eps']):>17}  {run['epoch_losses'][-1]:>14.4f}  {run['final_ratio']:>7.3f}  "
                     f"{run['regime']:<12}  {flag:>10}  {run['pgd20_test_accuracy']:>15.3f}")
    lines.append("")
    lines.append(f"{result['seconds']:.1f} s")
    return "\n".join(lines)
