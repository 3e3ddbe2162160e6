"""What moves ρ back toward 1 when ε ≫ ε*: the paper's section 7 levers and AWP, measured side by side.

On the bundled digits (digits-mlp) and MNIST-1D (mnist1d-mlp, ``pip install -e '.[bench]'``), at ε*/2, ε* and 4 ε*
(ε* the fine-tune's estimate on the baseline's first seed), over ``--seeds`` seeds, each lever is one monitored
adversarial run (PGD-10 L∞, the preset's recipe at ``--epochs``):

- ``AT``, ``TRADES``, ``MART``: the objectives, on the baseline (width 64, half of the training pool);
- ``AT+AWP``, ``TRADES+AWP``: with adversarial weight perturbation (γ = 0.01 and 0.005, the reference's);
- ``wider x4``: AT at width 256; ``more data x2``: AT on the whole training pool; each against its own clean
  benchmark R*(0), so ρ is that setting's;
- ``eps curriculum``: AT with ε growing linearly from 0 over the first half of the epochs (an attack-side remedy).

Per run: ρ = R̂(θ̂)/R*(0) with its band and regime (the PhaseMonitor's, θ̂ by adversarial test loss), robust test
accuracy by ``--suite`` (MNIST-1D's signals: ``apgd``, Square needs images) at the weights of the best validation
epoch (PGD-10 robust accuracy on a validation split held out of the training pool, never the test set), the
robust-overfitting gap (PGD-20 test accuracy at the best validation epoch minus at the last) and the wall time.
Prints one table per dataset and ε.

    python benchmarks/remedies.py [--seeds 3] [--epochs 30] [--suite standard] [--json out.json] [--plot rho.png]

About 15 minutes on 2 CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import time
from collections import Counter

import torch
from torch.utils.data import DataLoader, Subset

from advhooks import AWP, PGD, AdversarialStep, PhaseMonitor, linear_warmup, parse_eps, robust_accuracy
from advhooks.benchmark import Recipe
from advhooks.kit.data import load_dataset
from advhooks.kit.estimate import EstimationData, estimate_eps_star
from advhooks.kit.presets import get_preset
from advhooks.kit.training import adversarial_loss, record_clean_benchmark
from advhooks.schedules import step_decay

DATASETS = {"digits": "digits-mlp", "mnist1d": "mnist1d-mlp"}
WIDTH = 64
# lever -> (objective, AWP gamma or None, width factor, data: "half" or "all", curriculum)
LEVERS = {
    "AT": ("at", None, 1, "half", False),
    "TRADES": ("trades", None, 1, "half", False),
    "MART": ("mart", None, 1, "half", False),
    "AT+AWP": ("at", 0.01, 1, "half", False),
    "TRADES+AWP": ("trades", 0.005, 1, "half", False),
    "wider x4": ("at", None, 4, "half", False),
    "more data x2": ("at", None, 1, "all", False),
    "eps curriculum": ("at", None, 1, "half", True),
}
QUIET = logging.Logger("remedies", logging.ERROR)


def splits(train, seed: int = 0):
    """Validation (10 % of the training set, never trained on), half the rest and all of it."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = len(train) // 10
    pool = order[n_val:]
    return Subset(train, order[:n_val]), {"half": Subset(train, pool[: len(pool) // 2]), "all": Subset(train, pool)}


def run_lever(lever, eps, seed, preset, recipe, data, benches, suite):
    """One monitored run of ``lever`` at ``eps``: its ρ, band, regime, robust accuracies and time."""
    objective, gamma, factor, part, curriculum = LEVERS[lever]
    val, train_sets, test = data
    train = train_sets[part]
    torch.manual_seed(seed)
    model = preset.model(WIDTH * factor)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: step_decay(e, recipe.epochs))
    loader = DataLoader(train, batch_size=recipe.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    schedule = linear_warmup(eps, len(loader) * recipe.epochs // 2) if curriculum else eps
    attack = PGD(schedule, steps=10, random_start=True)
    step = AdversarialStep(model, attack, objective=objective, awp=AWP(opt, gamma=gamma) if gamma else None)
    monitor = PhaseMonitor(benches[(factor, part, seed)], eps=eps, total_epochs=recipe.epochs,
                           attack=PGD(eps, steps=10), logger=QUIET)
    monitor.evaluate_with(model, train, test, train_subset=512, seed=seed)
    val_loader, test_loader = DataLoader(val, batch_size=256), DataLoader(test, batch_size=256)
    best, best_state, started = -1.0, None, time.perf_counter()
    for _ in range(recipe.epochs):
        model.train()
        for x, y in loader:
            out = step(x, y)
            monitor.update(out)  # (the curriculum's running mean is at the growing eps; rho's R-hat is at eps)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        sched.step()
        report = monitor.epoch_end()
        _, val_acc = adversarial_loss(model, val_loader, PGD(eps, steps=10), eps, "cpu")
        if val_acc > best:
            best, best_state = val_acc, copy.deepcopy(model.state_dict())
    seconds = time.perf_counter() - started
    pgd20 = PGD(eps, steps=20)
    last_acc = adversarial_loss(model, test_loader, pgd20, eps, "cpu")[1]
    model.load_state_dict(best_state)
    best_acc = adversarial_loss(model, test_loader, pgd20, eps, "cpu")[1]
    robust = robust_accuracy(model, test, eps, suite=suite, seed=seed).robust_accuracy
    return {"lever": lever, "eps": eps, "seed": seed, "ratio": report.ratio, "band": list(report.ratio_interval),
            "regime": report.regime, "robust": robust, "gap": best_acc - last_acc, "seconds": seconds}


def table(results: list[dict], levels: list[float]) -> str:
    lines = []
    for eps in levels:
        lines.append(f"eps {255 * eps:.3g}/255: {'lever':<15} {'rho (median) [bands]':<30} {'regimes':<28} "
                     f"{'robust acc':>10} {'RO gap':>7} {'time s':>7}")
        for lever in LEVERS:
            rows = [r for r in results if r["lever"] == lever and r["eps"] == eps]
            if not rows:
                continue
            rho = statistics.median(r["ratio"] for r in rows)
            band = f"[{min(r['band'][0] for r in rows):.2f}, {max(r['band'][1] for r in rows):.2f}]"
            regimes = ", ".join(f"{k} x{v}" for k, v in Counter(r["regime"] for r in rows).most_common())
            lines.append(f"{'':>15} {lever:<15} {rho:>6.2f} {band:<23} {regimes:<28} "
                         f"{100 * statistics.fmean(r['robust'] for r in rows):>9.1f}% "
                         f"{100 * statistics.fmean(r['gap'] for r in rows):>6.1f} "
                         f"{statistics.fmean(r['seconds'] for r in rows):>7.1f}")
    return "\n".join(lines)


def plot(out: dict, path: str) -> str:
    """ρ (median over seeds, with the span of their bands) per lever, one panel per dataset, one colour per ε."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(out), figsize=(6 * len(out), 4), squeeze=False)
    for ax, (name, data) in zip(axes[0], out.items(), strict=True):
        for k, (eps, label) in enumerate(zip(data["levels"], ("eps*/2", "eps*", "4 eps*"), strict=True)):
            for i, lever in enumerate(LEVERS):
                rows = [r for r in data["results"] if r["lever"] == lever and r["eps"] == eps]
                rho = statistics.median(r["ratio"] for r in rows)
                low, high = min(r["band"][0] for r in rows), max(r["band"][1] for r in rows)
                ax.errorbar(i + 0.2 * (k - 1), rho, yerr=[[rho - low], [high - rho]], fmt="o", color=f"C{k}",
                            label=label if i == 0 else None, capsize=2)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.axhline(1.5, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(LEVERS)), list(LEVERS), rotation=35, ha="right")
        ax.set_title(f"{name} (eps* {255 * data['eps_star']:.3g}/255)")
        ax.set_ylabel("rho = R-hat(theta-hat) / R*(0)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--suite", default="standard",
                        help="robust-accuracy suite for image data (signals: 'apgd', Square needs images)")
    parser.add_argument("--datasets", default="digits,mnist1d")
    parser.add_argument("--eps-star", help="use this eps* (e.g. 8/255) instead of the fine-tune's estimate")
    parser.add_argument("--json")
    parser.add_argument("--plot", help="draw rho per lever, dataset and eps here (needs the plot extra)")
    args = parser.parse_args()
    out, started = {}, time.perf_counter()
    for name in args.datasets.split(","):
        preset = get_preset(DATASETS[name])
        recipe = Recipe(**{**preset.recipe.to_dict(), "epochs": args.epochs})
        train, test = load_dataset(preset.dataset)
        val, train_sets = splits(train)
        benches = {}
        for factor, part in {(LEVERS[k][2], LEVERS[k][3]) for k in LEVERS}:
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                benches[(factor, part, seed)] = record_clean_benchmark(
                    preset.model(WIDTH * factor), train_sets[part], test, recipe=recipe, seed=seed,
                    training={"preset": preset.name, "width": WIDTH * factor, "part": part})
        base = benches[(1, "half", 0)]
        eps_star = parse_eps(args.eps_star) if args.eps_star else estimate_eps_star(
            "finetune", base, lambda p=preset: p.model(WIDTH), EstimationData(train_sets["half"], test)).value
        levels = [eps_star / 2, eps_star, 4 * eps_star]
        print(f"== {name}: eps* (fine-tune, baseline seed 0) {255 * eps_star:.3g}/255; eps at "
              f"{', '.join(f'{255 * e:.3g}' for e in levels)}/255", flush=True)
        suite = args.suite if test[0][0].dim() == 3 else "apgd"
        results = [run_lever(lever, eps, seed, preset, recipe, (val, train_sets, test), benches, suite)
                   for eps in levels for lever in LEVERS for seed in range(args.seeds)]
        print(f"robust accuracy by the {suite} suite", flush=True)
        print(table(results, levels), flush=True)
        out[name] = {"eps_star": eps_star, "levels": levels, "suite": suite, "results": results}
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=2)
    print(f"whole run: {time.perf_counter() - started:.0f} s")
    if args.plot:
        print(f"wrote {plot(out, args.plot)}")


if __name__ == "__main__":
    main()
