"""Attack speed against the physical limit and against torchattacks and ART, in one run.

For each configuration it times (median over repeats, after warm-up; each round runs every row once
in a shuffled order and the ratios are medians of the per-round ratios, so that drift in a shared
machine's speed cancels out):

- ``clean step``: forward + cross-entropy + backward + SGD step in training mode;
- ``unit``: one forward + input-gradient pass in eval mode, the cost of one PGD iteration;
- ``pgd``: advhooks PGD-k generation, ``ta pgd``: torchattacks' PGD-k on the same batch, and ``art pgd``:
  the Adversarial Robustness Toolbox's ProjectedGradientDescentPyTorch (numpy in and out, as its users
  call it; only when ``adversarial-robustness-toolbox`` is installed: ``pip install -e '.[peers]'``);
- ``adv step``: AdversarialStep + backward + SGD step, and ``ta adv step`` the same loop with torchattacks.

and prints the ratios the core issue sets targets for: PGD-k / (k × unit) (target <= 1.05),
torchattacks / advhooks and ART / advhooks (target >= 1.0) and adv step / (k units + clean step)
(target <= 1.05), each as the median [min-max] of the per-round ratios.

    python benchmarks/attack_speed.py            # CPU, and CUDA when present
    python benchmarks/attack_speed.py --quick    # fewer repeats, for a smoke run
    python benchmarks/attack_speed.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _timing import paired_times

from advhooks import PGD, AdversarialStep
from advhooks.kit.models import MnistCNN, PreActResNet18

STEPS = 10
EPS = 8 / 255


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
    art_pgd = _art_pgd(model, cfg["shape"], device)
    if art_pgd is not None:
        x_np, y_np = x.cpu().numpy(), y.cpu().numpy()

        def art() -> None:
            model.train()
            art_pgd.generate(x_np, y_np)

        fns["art pgd"] = art
    t = paired_times(fns, device, repeats, warmup)

    def paired(ratio: torch.Tensor) -> dict[str, float]:
        return {"median": float(ratio.median()), "min": float(ratio.min()), "max": float(ratio.max())}

    ratios = {
        "pgd_over_k_units": paired(t["pgd"] / (STEPS * t["unit"])),
        "torchattacks_over_advhooks": paired(t["ta pgd"] / t["pgd"]),
        "adv_step_over_k_units_plus_clean": paired(t["adv step"] / (STEPS * t["unit"] + t["clean step"])),
        "ta_adv_step_over_adv_step": paired(t["ta adv step"] / t["adv step"]),
    }
    if "art pgd" in t:
        ratios["art_over_advhooks"] = paired(t["art pgd"] / t["pgd"])
    medians = {k: float(v.median()) for k, v in t.items()}
    return {"config": cfg["name"], "device": str(device), "median_s": medians, **ratios}


def _art_pgd(model: torch.nn.Module, shape: tuple[int, ...], device: torch.device):
    """ART's PGD-k on ``model`` (same ε, step, random start), or None when ART is not installed."""
    try:
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return None
    classifier = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=shape[1:],
                                   nb_classes=10, clip_values=(0.0, 1.0),
                                   device_type="gpu" if device.type == "cuda" else "cpu")
    return ProjectedGradientDescentPyTorch(classifier, norm=np.inf, eps=EPS, eps_step=2.5 * EPS / STEPS,
                                           max_iter=STEPS, num_random_init=1, batch_size=shape[0], verbose=False)


def _ratio_cell(ratio: dict[str, float] | None) -> str:
    if ratio is None:
        return f"{'-':>20}"
    return f"{ratio['median']:.3f} [{ratio['min']:.2f}-{ratio['max']:.2f}]".rjust(20)


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
    columns = (("pgd_over_k_units", "pgd/kU"), ("torchattacks_over_advhooks", "ta/pgd"),
               ("art_over_advhooks", "art/pgd"), ("adv_step_over_k_units_plus_clean", "adv/(kU+C)"),
               ("ta_adv_step_over_adv_step", "ta adv/adv"))
    header = (f"{'config':<18}{'dev':<6}{'clean':>8}{'unit':>8}{'pgd':>8}{'ta pgd':>8}{'art pgd':>8}{'adv':>8}"
              f"{'ta adv':>8}" + "".join(f"{label:>20}" for _, label in columns))
    print(header + "\n" + "-" * len(header))
    results = []
    for dev in devices:
        device = torch.device(dev)
        for cfg in _configs(device):
            r = _bench_config(cfg, device, repeats, warmup)
            results.append(r)
            m = r["median_s"]
            print(f"{r['config']:<18}{dev:<6}"
                  + "".join(f"{1e3 * m[k]:>8.1f}" if k in m else f"{'-':>8}"
                            for k in ("clean step", "unit", "pgd", "ta pgd", "art pgd", "adv step", "ta adv step"))
                  + "".join(_ratio_cell(r.get(key)) for key, _ in columns), flush=True)
    print("\ntimes in ms (medians); ratios are median [min-max] of per-round ratios; "
          "targets: pgd/kU <= 1.05, ta/pgd and art/pgd >= 1.0, adv/(kU+C) <= 1.05")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"torch": torch.__version__, "steps": STEPS, "eps": EPS, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
