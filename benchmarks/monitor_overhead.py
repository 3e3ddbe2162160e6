"""What watching costs: the monitor's own evaluation, update() per batch and the ε* probe, as shares of training.

- passes: forward and backward passes over single samples, counted by hooks on the model, in the monitor's
  epoch_end() against the training loop's, with the library defaults (``evaluate_with(model, train, test)``):
  the digits example's run (digits-mlp, 60 epochs, batch 64, PGD-10) at each ε of ``--eps``, and a
  CIFAR-10-shaped run (50,000 training and 10,000 test tensors of 3×32×32, 391 batches of 128, PGD-10; a
  linear stand-in model, since the count does not depend on the architecture and a PreActResNet18 epoch takes an
  hour on 2 CPU cores); the target is <= 5 %. Also its wall-time share on the digits run.
- update: time of ``monitor.update(step_output)`` against the adversarial training step (MNIST-style CNN,
  batch 128, PGD-10), alternated round by round; the target is <= 1 %.
- probe: a digits-mlp adversarial training run (PGD-10, 60 epochs) with and without the default probe
  (4 rungs, PGD-5, 256 samples, every 10 epochs); the target is <= 5 % of the training time.

Each share is the median over repeats with its spread (min-max).

    python benchmarks/monitor_overhead.py [--repeats 3] [--eps 2,8,16,32] [--budget 0.05]
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advhooks import PGD, AdversarialStep
from advhooks.kit.data import load_digits
from advhooks.kit.models import MLP, MnistCNN
from advhooks.kit.presets import get_preset
from advhooks.monitor import PhaseMonitor
from advhooks.schedules import step_decay


class Passes:
    """Per-sample forward and backward passes of a model, counted by hooks, split into the training's and the
    monitor's (``monitor`` True while the monitor's epoch_end runs)."""

    def __init__(self, model: nn.Module) -> None:
        self.counts = {"training": 0, "monitor": 0}
        self.monitor = False
        model.register_forward_hook(lambda m, args, out: self._add(args[0]))
        model.register_full_backward_hook(lambda m, grad_in, grad_out: self._add(grad_out[0]))

    def _add(self, tensor: torch.Tensor) -> None:
        self.counts["monitor" if self.monitor else "training"] += int(tensor.shape[0])

    def share(self) -> float:
        return self.counts["monitor"] / self.counts["training"]


def train_epoch(step: AdversarialStep, opt: torch.optim.Optimizer, loader: DataLoader, monitor: PhaseMonitor) -> None:
    """One adversarial epoch of the loop a user writes, every batch fed to the monitor."""
    for x, y in loader:
        out = step(x, y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        monitor.update(out)


def watched_run(model: nn.Module, train, test, eps: float, epochs: int, batch_size: int, lr: float,
                budget: float | None, seed: int = 0) -> dict:
    """A PGD-10 run watched by a monitor with the library's defaults (``budget=None``: the default budget); passes and
    seconds of the training and of the monitor, the final report's regime, ρ band and θ̂."""
    torch.manual_seed(seed)
    passes = Passes(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: step_decay(e, epochs))
    step = AdversarialStep(model, PGD(eps, steps=10))
    monitor = PhaseMonitor(0.0855, eps=eps, total_epochs=epochs)
    monitor.evaluate_with(model, train, test, **({} if budget is None else {"budget": budget}))
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    seconds = {"training": 0.0, "monitor": 0.0}
    evaluated = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        train_epoch(step, opt, loader, monitor)
        sched.step()
        t1 = time.perf_counter()
        passes.monitor = True
        report = monitor.epoch_end()
        passes.monitor = False
        seconds["training"] += t1 - t0
        seconds["monitor"] += time.perf_counter() - t1
        evaluated.append(report.adv_test_loss is not None)
    return {"passes": dict(passes.counts), "pass_share": passes.share(), "seconds": seconds,
            "wall_share": seconds["monitor"] / seconds["training"], "regime": report.regime,
            "ratio": report.ratio, "ratio_interval": list(report.ratio_interval),
            "early_stopped_epoch": report.early_stopped_epoch, "test_evaluations": sum(evaluated)}


def digits_shares(eps_list: list[float], budget: float | None) -> list[dict]:
    """The digits example's run (digits-mlp, 60 epochs, batch 64) at each ε."""
    train, test = load_digits(seed=0)
    preset = get_preset("digits-mlp")
    rows = []
    for eps in eps_list:
        torch.manual_seed(0)  # the same initial weights at every ε, whatever ran before
        rows.append({"eps": eps, **watched_run(preset.model(), train, test, eps, 60, 64, 0.05, budget)})
    return rows


def cifar_shaped_share(epochs: int, budget: float | None) -> dict:
    """CIFAR-10's shapes and sizes (50,000 / 10,000 of 3×32×32, batch 128: 391 batches), a linear stand-in model."""
    gen = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.rand(50_000, 3, 32, 32, generator=gen), torch.randint(0, 10, (50_000,), generator=gen))
    test = TensorDataset(torch.rand(10_000, 3, 32, 32, generator=gen), torch.randint(0, 10, (10_000,), generator=gen))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    return watched_run(model, train, test, 8 / 255, epochs, 128, 0.01, budget)


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
            train_epoch(step, opt, loader, monitor)
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
    parser.add_argument("--eps", default="2,8,16,32", help="the digits runs' ε, in /255")
    parser.add_argument("--budget", type=float, default=None, help="evaluate_with's budget (default: the library's; "
                        "inf: every epoch, the monitor before its budget)")
    parser.add_argument("--cifar-epochs", type=int, default=20, help="epochs of the CIFAR-10-shaped run")
    parser.add_argument("--skip-timing", action="store_true", help="only the pass counts (not update and probe)")
    args = parser.parse_args()
    digits = digits_shares([float(e) / 255 for e in args.eps.split(",")], args.budget)
    for row in digits:
        print(f"passes: digits-mlp eps {row['eps'] * 255:g}/255: monitor {100 * row['pass_share']:.2f} % of training "
              f"passes (target <= 5 %), wall time {100 * row['wall_share']:.1f} %; test loss evaluated "
              f"{row['test_evaluations']} of 60 epochs; {row['regime']}, rho {row['ratio']:.3f} "
              f"[{row['ratio_interval'][0]:.3f}, {row['ratio_interval'][1]:.3f}], theta-hat epoch "
              f"{row['early_stopped_epoch']}")
    cifar = cifar_shaped_share(args.cifar_epochs, args.budget)
    print(f"passes: CIFAR-10-shaped (391 x 128, PGD-10, {args.cifar_epochs} epochs): monitor "
          f"{100 * cifar['pass_share']:.2f} % of training passes (target <= 5 %); test loss evaluated "
          f"{cifar['test_evaluations']} of {args.cifar_epochs} epochs")
    if args.skip_timing:
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"digits": digits, "cifar_shaped": cifar}, fh, indent=2)
        return
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
            json.dump({"digits": digits, "cifar_shaped": cifar,
                       "update_s": updates, "adv_step_s": steps, "update_percent": update_pct,
                       "probe_runs": [{"train_s": t, "probe_s": p} for t, p, _ in probes],
                       "probe_percent": probe_pct, "probe_lower_bound": probes[0][2]}, fh, indent=2)


if __name__ == "__main__":
    main()
