"""The fused attack paths against the eager fp32 limit: channels_last, compile, bf16, retained host memory.

For each model it measures, side by side in one fresh process per malloc setting:

- ``10 units``: ten eager fp32 forward + input-gradient passes in eval mode (the eager limit of PGD-10);
- PGD-10 eager; with a channels_last model (``cl``); with ``compile=True``; with both; with the attack in
  bf16 (``precision="bf16"``) on the channels_last model; and with all three;

once with the default malloc and once after :func:`advhooks.perf.retain_host_memory` (a process-wide
switch, hence the separate processes). Each figure is the median over rounds of the per-round ratio to
the default-malloc eager limit, with the spread (min–max over rounds); retained-malloc rounds are scaled
by that process's own limit times the ratio of the two processes' limits.

The bf16 rows also give the attack strength they keep: (fp32 loss at the bf16 attack's points − clean
loss) / (fp32 loss at the fp32 attack's points − clean loss), on a model briefly trained on random
labels so that the loss surface is not flat.

    python benchmarks/fused_path.py [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, random, statistics, sys, time
import torch
import torch.nn.functional as F
from advhooks import PGD
from advhooks.kit.models import MnistCNN, PreActResNet18
from advhooks.perf import retain_host_memory
retained = retain_host_memory() if sys.argv[1] == "retained" else False
repeats = int(sys.argv[2])
configs = (("preact18 b32", PreActResNet18, (32, 3, 32, 32)), ("mnist-cnn b128", MnistCNN, (128, 1, 28, 28)))
out = {"retained": retained}
for name, make, shape in configs:
    torch.manual_seed(0)
    model = make()
    x, y = torch.rand(shape), torch.randint(0, 10, (shape[0],))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):  # a few steps so that the loss has gradients worth following
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    model_cl = make().to(memory_format=torch.channels_last)
    model_cl.load_state_dict(model.state_dict())
    x_cl = x.contiguous(memory_format=torch.channels_last)
    eager, compiled = PGD(8 / 255, steps=10), PGD(8 / 255, steps=10, compile=True)
    bf16, fused = PGD(8 / 255, steps=10, precision="bf16"), PGD(8 / 255, steps=10, compile=True, precision="bf16")

    def units():
        model.eval()
        for _ in range(10):
            xi = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xi), y, reduction="none").sum(), xi)
        model.train()

    fns = {"10 units": units, "eager": lambda: eager(model, x, y),
           "cl": lambda: eager(model_cl, x_cl, y), "compile": lambda: compiled(model, x, y),
           "cl+compile": lambda: compiled(model_cl, x_cl, y), "cl+bf16": lambda: bf16(model_cl, x_cl, y),
           "cl+compile+bf16": lambda: fused(model_cl, x_cl, y)}
    for fn in fns.values():  # warm-up; the compiled ones compile here
        fn(); fn()
    times = {k: [] for k in fns}
    order, rng = list(fns), random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for k in order:
            t0 = time.perf_counter(); fns[k](); times[k].append(time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        def fp32_loss(adv):
            return F.cross_entropy(model(adv), y).item()
        clean = fp32_loss(x)
        gain = fp32_loss(eager(model, x, y)) - clean
        strength = {"cl+bf16": (fp32_loss(bf16(model_cl, x_cl, y)) - clean) / gain,
                    "cl+compile+bf16": (fp32_loss(fused(model_cl, x_cl, y)) - clean) / gain}
    out[name] = {"times": times, "strength": strength}
print(json.dumps(out))
"""

VARIANTS = ("eager", "cl", "compile", "cl+compile", "cl+bf16", "cl+compile+bf16")
CONFIGS = ("preact18 b32", "mnist-cnn b128")


def run(mode: str, repeats: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(repeats)], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def summarise(times: dict[str, list[float]], scale: float = 1.0) -> dict[str, dict[str, float]]:
    """Per variant: median, min and max over rounds of (variant time / the round's 10-unit time) × scale."""
    rows = {}
    for variant in VARIANTS:
        ratios = sorted(scale * t / u for t, u in zip(times[variant], times["10 units"], strict=True))
        rows[variant] = {"median": _median(ratios), "min": ratios[0], "max": ratios[-1],
                         "median_s": _median(times[variant])}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    results = {mode: run(mode, repeats) for mode in ("default", "retained")}
    report = {}
    print(f"PGD-10 time / eager fp32 limit (10 forward+input-gradient passes, default malloc); "
          f"median [min-max] of {repeats} rounds\n")
    print(f"{'config':<16}{'malloc':<10}" + "".join(f"{v:>20}" for v in VARIANTS))
    for name in CONFIGS:
        base_limit = _median(results["default"][name]["times"]["10 units"])
        for mode, result in results.items():
            scale = _median(result[name]["times"]["10 units"]) / base_limit
            rows = summarise(result[name]["times"], scale)
            report[f"{name} / {mode}"] = {"ratios": rows, "bf16_strength": result[name]["strength"]}
            cells = "".join(f"{r['median']:.3f} [{r['min']:.2f}-{r['max']:.2f}]".rjust(20) for r in rows.values())
            print(f"{name:<16}{mode:<10}{cells}", flush=True)
    print("\nattack strength kept by bf16 (fp32 loss gain relative to the fp32 attack's), default malloc:")
    for name in CONFIGS:
        strength = results["default"][name]["strength"]
        print(f"{name:<16}" + ", ".join(f"{k} {v:.3f}" for k, v in strength.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
