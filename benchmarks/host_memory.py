"""PGD-10 with and without advhooks.perf.retain_host_memory(), each in a fresh process, side by side.

Prints the median time per PGD-10 call and the minor page faults per call for PreActResNet18
(batch 32) and the MNIST CNN (batch 128), and the ratio retained / default.

    python benchmarks/host_memory.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, statistics, sys, time
import torch
from advhooks import PGD
from advhooks.kit.models import MnistCNN, PreActResNet18
from advhooks.perf import retain_host_memory
retained = retain_host_memory() if sys.argv[1] == "retained" else False
torch.manual_seed(0)
out = {"retained": retained}
configs = (("preact18 b32", PreActResNet18(), (32, 3, 32, 32)), ("mnist-cnn b128", MnistCNN(), (128, 1, 28, 28)))
for name, model, shape in configs:
    x, y = torch.rand(shape), torch.randint(0, 10, (shape[0],))
    attack = PGD(8 / 255, steps=10)
    attack(model, x, y)
    times, faults = [], []
    for _ in range(int(sys.argv[2])):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        attack(model, x, y)
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    out[name] = {"median_s": statistics.median(times), "faults": statistics.median(faults)}
print(json.dumps(out))
"""


def run(mode: str, repeats: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(repeats)], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2, help="alternating default/retained processes")
    args = parser.parse_args()
    results = {"default": [], "retained": []}
    for _ in range(args.rounds):
        for mode in results:
            results[mode].append(run(mode, args.repeats))
    print(f"{'config':<16}{'default s':>11}{'faults':>10}{'retained s':>12}{'faults':>9}{'retained/default':>18}")
    for name in ("preact18 b32", "mnist-cnn b128"):
        d = min(r[name]["median_s"] for r in results["default"])
        k = min(r[name]["median_s"] for r in results["retained"])
        fd = results["default"][0][name]["faults"]
        fk = results["retained"][0][name]["faults"]
        print(f"{name:<16}{d:>11.3f}{fd:>10.0f}{k:>12.3f}{fk:>9.0f}{k / d:>18.3f}")


if __name__ == "__main__":
    main()
