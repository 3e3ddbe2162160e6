"""Robust evaluation speed against the physical limit and against torchattacks, in one run.

Per configuration (MNIST CNN b128, PreActResNet18 b32; the labels are the model's own clean predictions,
so every sample starts robust and every attack runs on the whole batch), medians of shuffled paired
rounds as in attack_speed.py:

- ``apgd/100U``: advhooks APGD-100 / (100 × one forward + input-gradient pass)             goal <= 1.05
- ``ta apgd/apgd``: torchattacks' APGD-100 time / advhooks'                                goal >= 1.0
- ``AA/suite``: torchattacks' standard AutoAttack time / advhooks' ``apgd`` suite         goal >= 1.5
  (with the robust accuracy each reaches on the batch)

    python benchmarks/evaluate_speed.py [--quick] [--device cuda] [--only mnist] [--json out.json]

On 2 CPU cores torchattacks' AutoAttack on PreActResNet18 takes many minutes per round (FAB-T's 9 targets
and Square's 5000 queries); run that configuration on a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
import torch.nn.functional as F
from _timing import paired_times

from advhooks import APGD
from advhooks.kit.models import MnistCNN, PreActResNet18
from advhooks.robustness import attack_batch

EPS, STEPS = 8 / 255, 100


def _ratio(r: torch.Tensor) -> str:
    return f"{float(r.median()):.3f} [{float(r.min()):.2f}–{float(r.max()):.2f}]"


def run(name: str, model: torch.nn.Module, shape: tuple[int, ...], repeats: int, warmup: int,
        device: torch.device) -> dict:
    import torchattacks

    torch.manual_seed(0)
    model.eval().to(device)
    x = torch.rand(shape, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)

    def unit() -> None:
        xi = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xi), y, reduction="none").sum(), xi)

    apgd = APGD(EPS, steps=STEPS)
    ta_apgd = torchattacks.APGD(model, norm="Linf", eps=EPS, steps=STEPS, n_restarts=1, loss="ce", seed=0)
    autoattack = torchattacks.AutoAttack(model, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=0)
    accuracy = {}

    def suite() -> None:
        _, masks = attack_batch(model, x, y, EPS, suite="apgd")
        accuracy["advhooks apgd suite"] = float(masks["apgd-t"].float().mean())

    def aa() -> None:
        with torch.no_grad():
            accuracy["torchattacks AutoAttack"] = float((model(autoattack(x, y)).argmax(1) == y).float().mean())

    t = paired_times({"unit": unit, "apgd": lambda: apgd(model, x, y), "ta apgd": lambda: ta_apgd(x, y),
                      "suite": suite, "AutoAttack": aa}, device, repeats, warmup)
    row = {"config": name, "device": str(device), "median_s": {k: float(v.median()) for k, v in t.items()},
           "apgd/100U": _ratio(t["apgd"] / (STEPS * t["unit"])), "ta apgd/apgd": _ratio(t["ta apgd"] / t["apgd"]),
           "AA/suite": _ratio(t["AutoAttack"] / t["suite"]), "robust_accuracy": accuracy}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round after 0 warm-ups, tiny batches")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--only", default=None, help="run only the configurations whose name contains this")
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats, warmup = (1, 0) if args.quick else (args.repeats, 1)
    configs = [("mnist-cnn b128", MnistCNN(hidden=128), (8 if args.quick else 128, 1, 28, 28)),
               ("preact18 b32", PreActResNet18(), (4 if args.quick else 32, 3, 32, 32))]
    rows = [run(name, model, shape, repeats, warmup, device) for name, model, shape in configs
            if args.only is None or args.only in name]
    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__, "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    for r in rows:
        print(f"{r['config']}: APGD-100/100U {r['apgd/100U']}, torchattacks APGD/advhooks {r['ta apgd/apgd']}, "
              f"AutoAttack/suite {r['AA/suite']}, robust accuracy {r['robust_accuracy']}")


if __name__ == "__main__":
    main()
