"""Attack speed against the physical limit and against torchattacks, in one run.

For each configuration it times (median over repeats, after warm-up; each round runs every row once
in a shuffled order and the ratios are medians of the per-round ratios, so that drift in a shared
machine's speed cancels out):

- ``clean step``: forward + cross-entropy + backward + SGD step in training mode;
- ``unit``: one forward + input-gradient pass in eval mode, the cost of one PGD iteration;
- ``pgd``: advhooks PGD-k generation, and ``ta pgd``: torchattacks' PGD-k on the same batch;
- ``adv step``: AdversarialStep + backward + SGD step, and ``ta adv step`` the same loop with torchattacks.

and prints the ratios the core issue sets targets for: PGD-k / (k × unit) (target <= 1.05),
torchattacks / advhooks (target >= 1.0) and adv step / (k units + clean step) (target <= 1.05).

    python benchmarks/attack_speed.py            # CPU, and CUDA when present
    python benchmarks/attack_speed.py --quick    # fewer repeats, for a smoke run
    python benchmarks/attack_speed.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from advhooks import PGD, AdversarialStep
from advhooks.models import MnistCNN, PreActResNet18

STEPS = 10
EPS = 8 / 255


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _configs(device: torch.device) -> list[dict]:
    return [
        dict(name="mnist-cnn b128", model=lambda: MnistCNN(hidden=128), shape=(128, 1, 28, 28), channels_last=False),
        dict(name="preact18 b32", model=lambda: PreActResNet18(), shape=(32, 3, 32, 32), channels_last=False),
        dict(name="preact18 b32 cl", model=lambda: PreActResNet18(), shape=(32, 3, 32, 32), channels_last=True),
    ]


def _bench_config(cfg: dict, device: torch.device, repeats: int, warmup: int) -> dict:
    import torchattacks

    torch.manual_seed(0)
    fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    model = cfg["model"]().to(device).to(memory_format=fmt)
    x = torch.rand(cfg["shape"], device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (cfg["shape"][0],), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    attack = PGD(eps=EPS, steps=STEPS)
    step = AdversarialStep(model, attack)
    ta = torchattacks.PGD(model, eps=EPS, alpha=2.5 * EPS / STEPS, steps=STEPS, random_start=True)

    def clean_step() -> None:
        model.train()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def unit() -> None:
        model.eval()
        xi = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xi), y, reduction="none").sum()
        torch.autograd.grad(loss, xi)
        model.train()

    def pgd() -> None:
        model.train()
        attack(model, x, y)

    def ta_pgd() -> None:
        model.train()
        ta(x, y)

    def adv_step() -> None:
        model.train()
        out = step(x, y)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    def ta_adv_step() -> None:
        model.train()
        adv = ta(x, y)
        loss = F.cross_entropy(model(adv), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    fns: dict[str, Callable[[], None]] = {
        "clean step": clean_step, "unit": unit, "pgd": pgd, "ta pgd": ta_pgd,
        "adv step": adv_step, "ta adv step": ta_adv_step,
    }
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for k in order:
            _sync(device)
            t0 = time.perf_counter()
            fns[k]()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in times.items()}

    def paired(ratio: torch.Tensor) -> float:
        return float(ratio.median())

    return {
        "config": cfg["name"],
        "device": str(device),
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "pgd_over_k_units": paired(t["pgd"] / (STEPS * t["unit"])),
        "torchattacks_over_advhooks": paired(t["ta pgd"] / t["pgd"]),
        "adv_step_over_k_units_plus_clean": paired(t["adv step"] / (STEPS * t["unit"] + t["clean step"])),
        "ta_adv_step_over_adv_step": paired(t["ta adv step"] / t["adv step"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up")
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, and cuda if present)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    repeats, warmup = (3, 1) if args.quick else (args.repeats, args.warmup)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(f"PGD-{STEPS}, eps {EPS:.4f}, median of {repeats} after {warmup} warm-up\n")
    header = (f"{'config':<18}{'dev':<6}{'clean':>8}{'unit':>8}{'pgd':>8}{'ta pgd':>8}{'adv':>8}{'ta adv':>8}"
              f"{'pgd/kU':>8}{'ta/pgd':>8}{'adv/(kU+C)':>11}{'ta adv/adv':>11}")
    print(header + "\n" + "-" * len(header))
    results = []
    for dev in devices:
        device = torch.device(dev)
        for cfg in _configs(device):
            r = _bench_config(cfg, device, repeats, warmup)
            results.append(r)
            m = r["median_s"]
            print(f"{r['config']:<18}{dev:<6}"
                  + "".join(f"{1e3 * m[k]:>8.1f}" for k in ("clean step", "unit", "pgd", "ta pgd", "adv step",
                                                          "ta adv step"))
                  + f"{r['pgd_over_k_units']:>8.3f}{r['torchattacks_over_advhooks']:>8.3f}"
                  + f"{r['adv_step_over_k_units_plus_clean']:>11.3f}{r['ta_adv_step_over_adv_step']:>11.3f}",
                  flush=True)
    print("\ntimes in ms (medians); ratios are medians of per-round ratios; "
          "targets: pgd/kU <= 1.05, ta/pgd >= 1.0, adv/(kU+C) <= 1.05")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"torch": torch.__version__, "steps": STEPS, "eps": EPS, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
