"""What watching costs: PhaseMonitor.update() per batch and the ε* probe per epoch, as shares of training.

- update: time of ``monitor.update(step_output)`` against the adversarial training step (MNIST-style CNN,
  batch 128, PGD-10), alternated round by round; the target is <= 1 %.
- probe: a digits-mlp adversarial training run (PGD-10, 60 epochs) with and without the default probe
  (4 rungs, PGD-5, 256 samples, every 10 epochs); the target is <= 5 % of the training time.

Each share is the median over repeats with its spread (min-max).

    python benchmarks/monitor_overhead.py [--repeats 3]
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.data import DataLoader

from advhooks import PGD, AdversarialStep
from advhooks.kit.data import load_digits
from advhooks.kit.models import MLP, MnistCNN
from advhooks.monitor import PhaseMonitor


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} [{min(values):.3g}-{max(values):.3g}]"


def update_overhead(repeats: int = 15) -> tuple[list[float], list[float]]:
    """Per round: the adversarial step's time and one ``update()``'s time (mean of 100)."""
    torch.manual_seed(0)
    model = MnistCNN()
    x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    step = AdversarialStep(model, PGD(8 / 255, steps=10))
    monitor = PhaseMonitor(0.2, eps=8 / 255)
    out = step(x, y)

    def train_step() -> None:
        o = step(x, y)
        opt.zero_grad()
        o.loss.backward()
        opt.step()

    train_step()
    steps, updates = [], []
    for _ in range(repeats):
        steps.append(_time(train_step))
        updates.append(_time(lambda: [monitor.update(out) for _ in range(100)]) / 100)
    return steps, updates


def probe_overhead(epochs: int = 60) -> tuple[float, float, float]:
    """Training time, time spent in epoch_end() with the probe on, and the probe's lower bound.

    Wall-clock totals of two whole runs differ by more than the probe costs on a shared CPU, so the
    probe is timed where it runs: inside epoch_end().
    """
    train, _ = load_digits()
    results = []
    for probe in (False, True):
        torch.manual_seed(0)
        model = MLP(64, hidden=64)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        step = AdversarialStep(model, PGD(8 / 255, steps=10))
        monitor = PhaseMonitor(0.0855, eps=8 / 255, total_epochs=epochs)
        if probe:
            idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:256]
            monitor.enable_probe(model, train.tensors[0][idx], train.tensors[1][idx])
        loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
        t_train = t_epoch_end = 0.0
        for _ in range(epochs):
            t0 = time.perf_counter()
            for xb, yb in loader:
                out = step(xb, yb)
                opt.zero_grad()
                out.loss.backward()
                opt.step()
                monitor.update(out)
            t1 = time.perf_counter()
            report = monitor.epoch_end()
            t_train += t1 - t0
            t_epoch_end += time.perf_counter() - t1
        results.append((t_train, t_epoch_end, report.eps_star_lower_bound))
    (train_time, plain_end, _), (_, probed_end, bound) = results
    return train_time, probed_end - plain_end, bound


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="probe runs (the update is timed 15 rounds)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    steps, updates = update_overhead()
    update_pct = [100 * u / s for u, s in zip(updates, steps, strict=True)]
    print(f"update: {1e6 * statistics.median(updates):.1f} us per batch vs adversarial step "
          f"{1e3 * statistics.median(steps):.1f} ms -> {_spread(update_pct)} % (target <= 1 %)")
    probes = [probe_overhead() for _ in range(args.repeats)]
    probe_pct = [100 * p / t for t, p, _ in probes]
    print(f"probe: digits-mlp PGD-10, 60 epochs: training {statistics.median(t for t, _, _ in probes):.2f} s, "
          f"default probe {statistics.median(p for _, p, _ in probes):.3f} s -> {_spread(probe_pct)} % "
          f"(target <= 5 %); lower bound eps* >= {probes[0][2]:.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"update_s": updates, "adv_step_s": steps, "update_percent": update_pct,
                       "probe_runs": [{"train_s": t, "probe_s": p} for t, p, _ in probes],
                       "probe_percent": probe_pct, "probe_lower_bound": probes[0][2]}, fh, indent=2)


if __name__ == "__main__":
    main()
