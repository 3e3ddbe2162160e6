"""Robust evaluation against the physical limit and against torchattacks, in one run: speed and agreement.

Speed (MNIST CNN b128, PreActResNet18 b32, untrained; the labels are the model's own clean predictions, so every
sample starts robust; medians of shuffled paired rounds as in attack_speed.py):

- ``apgd/100U``: advhooks APGD-100 / (100 × one forward + input-gradient pass)             goal <= 1.05
- ``ta apgd/apgd``: torchattacks' APGD-100 time / advhooks'                                goal >= 1.0
- ``AA/standard``: torchattacks' ``AutoAttack(version="standard")`` time / advhooks' ``standard`` suite
  (goal >= 1.5 where the accuracies agree); ``easy`` is the same model at ε = 0.3, a batch the first attack
  breaks whole (goal >= 1.0)

Agreement (``--agreement``; trained models, 200 digits test samples, one round each): robust accuracy of the
``standard`` suite vs torchattacks' ``AutoAttack`` (goal: within 0.5 points, never higher by more) and vs the
same chain with FAB-T at AutoAttack's own 100 steps (torchattacks' FAB defaults to 10), Square alone vs
torchattacks' Square at 5,000 queries (equal or lower), the gradient-masking case (the digits CNN behind a
quantising input layer), with the time ratios.

    python benchmarks/evaluate_speed.py [--quick] [--device cuda] [--only mnist] [--agreement] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F
from _timing import paired_times
from torch import nn

from advhooks import APGD
from advhooks.attacks.square import square_perturb
from advhooks.kit.models import MnistCNN, PreActResNet18
from advhooks.robustness import attack_batch, robust_accuracy

EPS, STEPS = 8 / 255, 100


def _ratio(r: torch.Tensor) -> str:
    return f"{float(r.median()):.3f} [{float(r.min()):.2f}–{float(r.max()):.2f}]"


def _autoattack(model: nn.Module, eps: float, fab_steps: int | None = None):
    """torchattacks' AutoAttack as shipped, or its chain with FAB-T at ``fab_steps`` (AutoAttack's own: 100)."""
    import torchattacks

    if fab_steps is None:
        return torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    return torchattacks.MultiAttack([
        torchattacks.APGD(model, norm="Linf", eps=eps, seed=0, loss="ce", n_restarts=1),
        torchattacks.APGDT(model, norm="Linf", eps=eps, seed=0, n_classes=10, n_restarts=1),
        torchattacks.FAB(model, norm="Linf", eps=eps, seed=0, multi_targeted=True, n_classes=10, n_restarts=1,
                         steps=fab_steps),
        torchattacks.Square(model, norm="Linf", eps=eps, seed=0, n_queries=5000, n_restarts=1)])


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def speed(name: str, model: nn.Module, shape: tuple[int, ...], eps: float, repeats: int, warmup: int,
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

    apgd = APGD(eps, steps=STEPS)
    ta_apgd = torchattacks.APGD(model, norm="Linf", eps=eps, steps=STEPS, n_restarts=1, loss="ce", seed=0)
    autoattack = _autoattack(model, eps)
    accuracy = {}

    def standard() -> None:
        _, masks = attack_batch(model, x, y, eps, suite="standard")
        accuracy["advhooks standard"] = float(masks["square"].float().mean())

    def aa() -> None:
        accuracy["torchattacks AutoAttack"] = _accuracy(model, autoattack(x, y), y)

    t = paired_times({"unit": unit, "apgd": lambda: apgd(model, x, y), "ta apgd": lambda: ta_apgd(x, y),
                      "standard": standard, "AutoAttack": aa}, device, repeats, warmup)
    row = {"config": name, "eps": eps, "device": str(device), "median_s": {k: float(v.median()) for k, v in t.items()},
           "apgd/100U": _ratio(t["apgd"] / (STEPS * t["unit"])), "ta apgd/apgd": _ratio(t["ta apgd"] / t["apgd"]),
           "AA/standard": _ratio(t["AutoAttack"] / t["standard"]), "robust_accuracy": accuracy}
    print(json.dumps(row), flush=True)
    return row


def _train(model: nn.Module, train: torch.utils.data.Dataset, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for xb, yb in torch.utils.data.DataLoader(train, batch_size=64, shuffle=True):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    return model.eval()


class Quantise(nn.Module):
    """Rounds inputs to 16 grey levels: zero gradient almost everywhere (the masking case)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 16) / 16


def _timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def agreement(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict:
    """One round per row: robust accuracy and seconds of each evaluation on the same samples."""
    import torchattacks

    data = torch.utils.data.TensorDataset(x, y)
    rows = {}
    for suite in ("apgd", "standard"):
        report, seconds = _timed(lambda s=suite: robust_accuracy(model, data, eps, suite=s, batch_size=len(x)))
        rows[f"advhooks {suite}"] = (report.robust_accuracy, seconds)
        if suite == "standard":
            rows["advhooks standard: broken by"] = {k: round(v, 4) for k, v in report.broken_by.items()}
    for label, fab_steps in (("torchattacks AutoAttack", None), ("torchattacks chain, FAB-T 100 steps", 100)):
        adv, seconds = _timed(lambda f=fab_steps: _autoattack(model, eps, f)(x, y))
        rows[label] = (_accuracy(model, adv, y), seconds)
    (adv, _), seconds = _timed(lambda: square_perturb(model, x, y, eps=eps, n_queries=5000,
                                                      generator=torch.Generator().manual_seed(0)))
    rows["advhooks Square alone"] = (_accuracy(model, adv, y), seconds)
    adv, seconds = _timed(lambda: torchattacks.Square(model, norm="Linf", eps=eps, n_queries=5000, seed=0)(x, y))
    rows["torchattacks Square alone"] = (_accuracy(model, adv, y), seconds)
    ours, aa = rows["advhooks standard"], rows["torchattacks AutoAttack"]
    out = {"config": name, "eps": eps, "n": len(x), "rows": rows,
           "AA/standard": aa[1] / ours[1], "AA(FAB 100)/standard": rows["torchattacks chain, FAB-T 100 steps"][1] /
           ours[1], "standard - AA (points)": 100 * (ours[0] - aa[0])}
    print(json.dumps(out), flush=True)
    return out


def agreement_rows(n: int) -> list[dict]:
    from advhooks.kit.data import load_digits
    from advhooks.kit.presets import get_preset

    train, test = load_digits()
    digits = _train(get_preset("digits-cnn").model(None), train, 10)
    x, y = test.tensors[0][:n], test.tensors[1][:n]

    def big(t: torch.Tensor) -> torch.Tensor:  # 8×8 grey → 32×32×3, CIFAR's shape
        return F.interpolate(t, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1).clamp(0, 1)

    train32 = torch.utils.data.TensorDataset(big(train.tensors[0]), train.tensors[1])
    cnn32 = _train(MnistCNN(in_channels=3, image_size=32), train32, 5)
    return [agreement("digits CNN (8×8)", digits, x, y, 0.1),
            agreement("CNN on 32×32×3 upsampled digits", cnn32, big(x), y, 32 / 255),
            agreement("digits CNN behind a quantising input layer", nn.Sequential(Quantise(), digits).eval(), x, y,
                      0.1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round after 0 warm-ups, tiny batches")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--only", default=None, help="run only the speed configurations whose name contains this")
    parser.add_argument("--agreement", action="store_true", help="also the agreement rows on trained models (CPU)")
    parser.add_argument("--n", type=int, default=200, help="test samples of the agreement rows")
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats, warmup = (1, 0) if args.quick else (args.repeats, 1)
    mnist_shape = (8 if args.quick else 128, 1, 28, 28)
    configs = [("mnist-cnn b128", MnistCNN(hidden=128), mnist_shape, EPS),
               ("mnist-cnn b128 easy", MnistCNN(hidden=128), mnist_shape, 0.3),
               ("preact18 b32", PreActResNet18(), (4 if args.quick else 32, 3, 32, 32), EPS)]
    rows = [speed(name, model, shape, eps, repeats, warmup, device) for name, model, shape, eps in configs
            if args.only is None or args.only in name]
    checks = agreement_rows(args.n) if args.agreement else []
    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__, "rows": rows,
              "agreement": checks}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    for r in rows:
        print(f"{r['config']} (eps {r['eps']:.4g}): APGD-100/100U {r['apgd/100U']}, torchattacks APGD/advhooks "
              f"{r['ta apgd/apgd']}, AutoAttack/standard {r['AA/standard']}, robust accuracy {r['robust_accuracy']}")
    for c in checks:
        print(f"{c['config']}: standard - AutoAttack {c['standard - AA (points)']:+.2f} points, AutoAttack/standard "
              f"{c['AA/standard']:.2f}, chain with FAB-T 100 / standard {c['AA(FAB 100)/standard']:.2f}")
        for label, value in c["rows"].items():
            print(f"    {label}: {value}")


if __name__ == "__main__":
    main()
