"""examples/own_loop.py end to end (shortened): record R*(0) with the script's own clean loop, then train
adversarially with the same recipe under the PhaseMonitor; a run with another recipe is named."""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import subprocess
import sys

from advhooks.benchmark import read_header
from advhooks.monitor import REGIMES

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "own_loop.py"
SMALL = ["--epochs", "4", "--max-train-samples", "384", "--steps", "3"]
RECIPE_WARNING = "differs from the clean benchmark's recipe"
FINAL = re.compile(r"final: ratio (\S+) \[(\S+), (\S+)\] .*regime (.+), early-stopped epoch (\d+)")


def run(tmp_path: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    # One thread: on a small shared CPU, torch's OpenMP threads slow these tiny convolutions many times over.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(SCRIPT), *SMALL, *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def test_own_loop_records_its_benchmark_then_monitors_the_adversarial_run(tmp_path):
    bench_path, record_path = tmp_path / "clean.safetensors", tmp_path / "run.json"

    clean = run(tmp_path, "--eps", "0", "--benchmark", str(bench_path))
    assert bench_path.exists() and "R*(0) = " in clean.stdout
    bench = read_header(bench_path)
    training = bench["training"]
    assert training["batch_size"] == 128 and training["epochs"] == 4 and training["schedule"] == "step_decay"
    assert training["augmentation"] == "crop" and training["optimizer"] == "sgd"
    norm = training["normalization"]
    assert len(norm["mean"]) == len(norm["std"]) == 3 and all(s > 0 for s in norm["std"])
    assert bench["n_train"] == 384 and 1 <= bench["best_epoch"] <= 4

    adv = run(tmp_path, "--eps", "8/255", "--benchmark", str(bench_path), "--save-record", str(record_path))
    assert RECIPE_WARNING not in adv.stderr, adv.stderr
    record = json.loads(record_path.read_text())
    assert record["benchmark"]["clean_test_loss"] == bench["clean_test_loss"]
    assert record["benchmark"]["created"] == bench["created"]
    assert record["benchmark"]["model_hash"] == bench["model"]["hash"]
    assert math.isclose(record["eps"], 8 / 255) and len(record["epochs"]) == 4
    assert record["recipe"]["normalization"] == norm and record["recipe"]["batch_size"] == 128

    match = FINAL.search(adv.stdout)
    assert match, adv.stdout
    ratio, low, high = (float(v) for v in match.group(1, 2, 3))
    regime, stopped = match.group(4), int(match.group(5))
    last = record["epochs"][-1]["ratio"]
    assert abs(ratio - last) <= 5e-7 + 1e-9 * abs(last)  # printed with 6 decimals
    rhat = record["rhat"]
    assert rhat["kind"] == "fixed weights" and rhat["n"] == 384  # θ̂ evaluated at its weights, whole train set
    assert math.isclose(last, rhat["mean"] / bench["clean_test_loss"], rel_tol=1e-9)
    assert low < ratio < high
    assert stopped == record["early_stopped_epoch"] == rhat["epoch"]
    assert regime in REGIMES  # (4 epochs on 384 random-like images may leave the model at chance: "not learning")

    other = run(tmp_path, "--eps", "8/255", "--benchmark", str(bench_path), "--batch-size", "64")
    assert RECIPE_WARNING in other.stderr and "batch size 64 vs the benchmark's 128" in other.stderr, other.stderr
