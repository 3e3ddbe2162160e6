"""All ε* estimators on the digits preset (L∞), with their bands and wall times, in one reproducible run.

Per seed: records the digits-mlp clean benchmark (60 epochs), then runs the clean probe, the fine-tune
estimate (defaults: PGD-10, 10 epochs, points from the clean probe; R̂ of the fine-tuned weights on a fixed
512-sample training subset) and the grid (adversarial training from scratch at 4, 8, 12, 16, 24 /255,
60 epochs, θ̂ by adversarial test loss, R̂ at θ̂'s weights), each with its 80 % band. Prints per seed and
over the seeds: fine-tune value / grid value, whether their bands overlap, their time ratio (goal: the
bands overlap on every seed, at <= 10 % of the grid's time), and the cost of the monitor's fixed-weights
R̂ evaluation in % of the grid's training time (goal <= 5 %).

    python benchmarks/eps_star_digits.py [--seeds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from advhooks.kit import estimate as E
from advhooks.kit.data import load_digits
from advhooks.kit.presets import get_preset
from advhooks.kit.training import record_clean_benchmark

GRID = tuple(e / 255 for e in (4, 8, 12, 16, 24))


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def _band(est: E.EpsStarEstimate) -> str:
    if est.value is None:
        return "-"
    band = "" if est.interval is None else f" [{255 * est.interval[0]:.2f}, {255 * est.interval[1]:.2f}]"
    return f"{255 * est.value:.2f}/255{band}"


def _overlap(a: E.EpsStarEstimate, b: E.EpsStarEstimate) -> bool | None:
    if a.interval is None or b.interval is None:
        return None
    return a.interval[0] <= b.interval[1] and b.interval[0] <= a.interval[1]


def run(seed: int) -> dict:
    """One side-by-side run of every estimator from a clean benchmark recorded with ``seed``."""
    preset = get_preset("digits-mlp")
    train, test = load_digits(seed=0)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    bench = record_clean_benchmark(preset.model(), train, test, recipe=preset.recipe, seed=seed)
    low, high = bench.bootstrap_interval(level=0.8)
    print(f"seed {seed}: R*(0) = {bench.clean_test_loss:.4f} [{low:.4f}, {high:.4f}] (80 % bootstrap), "
          f"Δ = {bench.generalization_gap:.4f}, best epoch {bench.best_epoch} ({time.perf_counter() - t0:.1f} s)")

    probe = E.estimate_clean_probe(bench.load_weights_into(preset.model()), train, bench, list(E.DEFAULT_LADDER))
    points = E.default_finetune_eps(probe)
    # Both train with the benchmark's recipe (the preset's).
    ft = E.estimate_finetune(preset.model, train, bench, points, mean_grad_dual_norm=probe.mean_grad_dual_norm,
                             seed=seed)
    grid = E.estimate_grid(preset.model, train, test, bench, list(GRID), seed=seed)
    rhat_seconds = sum(p.get("rhat_seconds") or 0.0 for p in grid.points)

    print(f"{'estimator':<26}{'eps* [80 % band]':>28}{'time':>11}")
    for name, est in (("clean probe (lower bound)", probe), ("finetune (PGD-10)", ft), ("grid (PGD-10, 60 ep.)", grid)):
        print(f"{name:<26}{_band(est):>28}{est.seconds:>9.1f} s")
    if probe.first_order:
        print(f"{'first order Δ/E‖∇ℓ‖₁':<26}{255 * probe.first_order:>22.2f}/255")
    print(f"fixed-weights R̂ evaluation: {rhat_seconds:.2f} s = {100 * rhat_seconds / grid.seconds:.2f} % of the "
          "grid's time\n")
    return {"probe": probe, "finetune": ft, "grid": grid, "rhat_seconds": rhat_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write all estimates here")
    parser.add_argument("--seeds", type=int, default=3, help="independent runs (seeds 0..N-1)")
    args = parser.parse_args()
    runs = [run(seed) for seed in range(args.seeds)]
    print(f"over {args.seeds} seed(s): median [min-max]")
    pairs = [(r["finetune"], r["grid"]) for r in runs if r["finetune"].value and r["grid"].value]
    if pairs:
        print(f"finetune / grid: value {_spread([f.value / g.value for f, g in pairs])}, "
              f"time {_spread([f.seconds / g.seconds for f, g in pairs])}; bands overlap on "
              f"{sum(bool(_overlap(f, g)) for f, g in pairs)} of {len(pairs)} seeds")
    print(f"clean probe / grid time: {_spread([r['probe'].seconds / r['grid'].seconds for r in runs])}")
    print(f"fixed-weights R̂ evaluation, % of grid time: "
          f"{_spread([100 * r['rhat_seconds'] / r['grid'].seconds for r in runs])}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in r.items()} for r in runs], fh,
                      indent=2)


if __name__ == "__main__":
    main()
