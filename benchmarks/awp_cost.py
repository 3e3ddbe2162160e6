"""What AWP adds to an adversarial training step, measured side by side in one run.

One step = ``AdversarialStep`` (AT, PGD-10 L∞) + backward + ``optimizer.step()``, with and without
``awp=AWP(optimizer)``, alternating, on two models: the MNIST CNN (the paper's, batch 128) and PreActResNet18 on
CIFAR-10-shaped tensors (batch 32). AWP adds one forward and one weight-gradient backward on the adversarial batch
(the reference: about +9 % per step on a GPU with PGD-10), and two passes over the perturbed weights.

    python benchmarks/awp_cost.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from advhooks import AWP, PGD, AdversarialStep
from advhooks.kit.models import MnistCNN, PreActResNet18

SETTINGS = {"MNIST CNN b128": (lambda: MnistCNN(), (128, 1, 28, 28)),
            "PreActResNet18 b32": (lambda: PreActResNet18(), (32, 3, 32, 32))}


def time_steps(make_model, shape, awp: bool, steps: int) -> float:
    """Seconds per training step (after one warm-up step)."""
    torch.manual_seed(0)
    model = make_model().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = AdversarialStep(model, PGD(8 / 255, steps=10), awp=AWP(opt) if awp else None)
    x, y = torch.rand(shape), torch.randint(0, 10, (shape[0],))

    def one() -> None:
        out = step(x, y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()

    one()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = {}
    for name, (make, shape) in SETTINGS.items():
        ratios = []
        for _ in range(args.repeats):  # alternate, so that drift in the machine's speed hits both alike
            plain = time_steps(make, shape, False, args.steps)
            with_awp = time_steps(make, shape, True, args.steps)
            ratios.append(with_awp / plain)
        out[name] = {"ratio_median": statistics.median(ratios), "ratios": ratios}
        print(f"{name}: step with AWP / without {statistics.median(ratios):.3f} "
              f"[{min(ratios):.3f}-{max(ratios):.3f}] over {args.repeats} alternating repeats", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
