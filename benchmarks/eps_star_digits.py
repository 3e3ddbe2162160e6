"""All ε* estimators on the digits preset (L∞), with their wall times, in one reproducible run.

Records the digits-mlp clean benchmark (60 epochs, seed 0), then runs the clean probe, the fine-tune
estimate (defaults: FGM, 10 epochs, points from the clean probe; once and with 3 runs) and the grid
(adversarial training from scratch at 4, 8, 12, 16, 24 /255, 60 epochs, early-stopped), and prints each
estimate, its time, and finetune / grid ratios of time and value. Target: fine-tune within ±20 % of the
grid at no more than 10 % of its wall time.

    python benchmarks/eps_star_digits.py [--seeds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from advhooks import estimate as E
from advhooks.benchmark import record_clean_benchmark
from advhooks.data import load_digits
from advhooks.presets import get_preset


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def run(seed: int) -> dict[str, E.EpsStarEstimate]:
    """One side-by-side run of every estimator from a clean benchmark recorded with ``seed``."""
    preset = get_preset("digits-mlp")
    train, test = load_digits(seed=0)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    bench = record_clean_benchmark(preset.model(), train, test, epochs=preset.epochs, batch_size=preset.batch_size,
                                   lr=preset.lr, weight_decay=preset.weight_decay, seed=seed)
    print(f"seed {seed}: clean benchmark R*(0) = {bench.clean_test_loss:.4f} ± {bench.test_loss_stderr:.4f}, "
          f"Δ = {bench.generalization_gap:.4f}, best epoch {bench.best_epoch} ({time.perf_counter() - t0:.1f} s)")

    probe = E.estimate_clean_probe(bench.load_weights_into(preset.model()), train, bench,
                                   [e / 255 for e in (0.5, 1, 2, 4, 8, 16, 32, 64)])
    points = E.default_finetune_eps(probe)
    common = dict(lr=preset.lr, batch_size=preset.batch_size, seed=seed)
    ft1 = E.estimate_finetune(preset.model, train, bench, points, runs=1, mean_grad_dual_norm=probe.mean_grad_dual_norm,
                              **common)
    ft3 = E.estimate_finetune(preset.model, train, bench, points, runs=3, mean_grad_dual_norm=probe.mean_grad_dual_norm,
                              **common)
    grid = E.estimate_grid(preset.model, train, test, bench, [e / 255 for e in (4, 8, 12, 16, 24)],
                           epochs=preset.epochs, **common)

    def show(name: str, est: E.EpsStarEstimate, value: float | None) -> None:
        band = f" ± {255 * est.spread:.2f}" if est.spread else ""
        v = "-" if value is None else f"{255 * value:.2f}/255{band}"
        print(f"{name:<26}{v:>18}{est.seconds:>9.2f} s{est.train_set_passes:>8.0f} passes")

    print(f"\n{'estimator':<26}{'eps*':>18}{'time':>11}{'cost':>15}")
    show("clean probe lower bound", probe, probe.lower_bound)
    show("first order Δ/E‖∇ℓ‖₁", probe, probe.first_order)
    show("finetune (FGM, 1 run)", ft1, ft1.value)
    show("finetune (FGM, 3 runs)", ft3, ft3.value)
    show("grid (PGD-10, 60 epochs)", grid, grid.value)
    print()
    return {"probe": probe, "finetune1": ft1, "finetune3": ft3, "grid": grid}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write all estimates here")
    parser.add_argument("--seeds", type=int, default=3, help="independent runs (seeds 0..N-1)")
    args = parser.parse_args()
    runs = [run(seed) for seed in range(args.seeds)]
    print(f"over {args.seeds} seed(s): median [min-max]")
    for key, name in (("finetune1", "1 run"), ("finetune3", "3 runs")):
        pairs = [(r[key], r["grid"]) for r in runs if r[key].value is not None and r["grid"].value is not None]
        if pairs:
            print(f"finetune {name}: value / grid = {_spread([f.value / g.value for f, g in pairs])}, "
                  f"time / grid = {_spread([f.seconds / g.seconds for f, g in pairs])}, "
                  f"slope / mean grad norm = {_spread([f.consistency for f, _ in pairs if f.consistency])}")
    probe_t = [r["probe"].seconds / r["grid"].seconds for r in runs]
    print(f"clean probe: time / grid = {_spread(probe_t)}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{k: v.to_dict() for k, v in r.items()} for r in runs], fh, indent=2)


if __name__ == "__main__":
    main()
