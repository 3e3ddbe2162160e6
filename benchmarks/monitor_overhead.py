"""What watching costs: PhaseMonitor.update() per batch and the ε* probe per epoch, as shares of training.

- update: median time of ``monitor.update(step_output)`` against the median adversarial training step
  (MNIST-style CNN, batch 128, PGD-10); the target is <= 1 %.
- probe: a digits-mlp adversarial training run (PGD-10, 60 epochs) with and without the default probe
  (4 rungs, PGD-5, 256 samples, every 10 epochs); the target is <= 5 % of the training time.

    python benchmarks/monitor_overhead.py
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.data import DataLoader

from advhooks import PGD, AdversarialStep
from advhooks.data import load_digits
from advhooks.models import MLP, MnistCNN
from advhooks.monitor import PhaseMonitor


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def update_overhead(repeats: int = 15) -> tuple[float, float]:
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
    t_step = _median_time(train_step, repeats)
    t_update = _median_time(lambda: [monitor.update(out) for _ in range(100)], repeats) / 100
    return t_step, t_update


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
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    t_step, t_update = update_overhead()
    print(f"update: {1e6 * t_update:.1f} us per batch vs adversarial step {1e3 * t_step:.1f} ms "
          f"-> {100 * t_update / t_step:.3f} % (target <= 1 %)")
    train_time, probe_time, bound = probe_overhead()
    print(f"probe: digits-mlp PGD-10, 60 epochs: training {train_time:.2f} s, default probe {probe_time:.3f} s "
          f"-> {100 * probe_time / train_time:.1f} % (target <= 5 %); lower bound eps* >= {bound:.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"update_s": t_update, "adv_step_s": t_step, "update_share": t_update / t_step,
                       "train_s": train_time, "probe_s": probe_time, "probe_share": probe_time / train_time,
                       "probe_lower_bound": bound}, fh, indent=2)


if __name__ == "__main__":
    main()
