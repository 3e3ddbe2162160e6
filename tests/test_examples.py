"""The examples run end to end (shortened)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from advhooks.monitor import REGIMES

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_train_digits_example_runs_with_a_benchmark(tmp_path):
    bench = tmp_path / "clean.safetensors"
    subprocess.run([sys.executable, "-m", "advhooks.cli", "benchmark-clean", "--preset", "digits-mlp",
                    "--epochs", "3", "--out", str(bench), "-q"], check=True, capture_output=True, timeout=300)
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_digits.py"), "--epochs", "3",
                          "--objective", "trades", "--steps", "3", "--benchmark", str(bench),
                          "--save-record", str(tmp_path / "runs" / "run.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "R*(0) =" in out.stderr and "regime" in out.stderr and "PGD-20 test loss" in out.stderr
    # The docstring's next step: the paper's Figure 4 from the record and its early-stopped weights.
    assert (tmp_path / "runs" / "run.safetensors").exists()
    conn = subprocess.run([sys.executable, "-m", "advhooks.cli", "connectivity", "--benchmark", str(bench),
                           "--checkpoint", str(tmp_path / "runs" / "run.json"), "--epochs", "1", "--points", "3",
                           "--resolution", "0", "-q"], capture_output=True, text=True, timeout=300)
    assert conn.returncode == 0, conn.stderr
    assert "straight line: max" in conn.stdout


@pytest.mark.parametrize("script", ["train_digits_lightning.py", "train_digits_hf.py"])
def test_framework_examples_end_with_the_papers_verdict(tmp_path, script):
    pytest.importorskip("lightning" if "lightning" in script else "transformers",
                        reason="pip install 'advhooks[lightning]' / 'advhooks[hf]'")
    bench = tmp_path / "clean.safetensors"
    if "lightning" in script:  # the preset's recipe, at the run's length
        subprocess.run([sys.executable, "-m", "advhooks.cli", "benchmark-clean", "--preset", "digits-mlp",
                        "--epochs", "12", "--out", str(bench), "-q"], check=True, capture_output=True, timeout=300)
    # 12 epochs: the default warm-up (12 // 2 + 5) ends before the run does, so the verdict is final.
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--epochs", "12", "--steps", "3",
                          "--benchmark", str(bench)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (final,) = [line for line in out.stdout.splitlines() if line.startswith("final: R-hat")]
    assert "(fixed weights, theta-hat = epoch" in final and "provisional" not in final, final
    assert "differs from the clean benchmark" not in out.stderr  # the same recipe as the benchmark's
    if "hf" in script:  # the model records its own benchmark first
        assert "clean benchmark: R*(0) =" in out.stdout and bench.exists()
    if "lightning" in script:  # one line per epoch
        assert "epoch   1  adv train loss" in out.stdout and "epoch  12  adv train loss" in out.stdout


@pytest.mark.parametrize("script", ["train_digits_lightning.py", "train_digits_hf.py"])
def test_framework_examples_on_two_processes_end_with_the_papers_verdict(tmp_path, script):
    pytest.importorskip("lightning" if "lightning" in script else "transformers",
                        reason="pip install 'advhooks[lightning]' / 'advhooks[hf]'")
    from ._gloo import accelerate_launch_command

    bench = tmp_path / "clean.safetensors"
    args = [str(ROOT / "examples" / script), "--epochs", "12", "--steps", "3", "--benchmark", str(bench)]
    if "lightning" in script:  # Lightning starts its own processes; the global batch stays the benchmark's 64
        subprocess.run([sys.executable, "-m", "advhooks.cli", "benchmark-clean", "--preset", "digits-mlp",
                        "--epochs", "12", "--out", str(bench), "-q"], check=True, capture_output=True, timeout=300)
        command = [sys.executable, *args, "--devices", "2"]
    else:  # the Trainer under accelerate launch, its clean benchmark recorded on the same 2 processes
        command = accelerate_launch_command(*args, processes=2)
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (final,) = [line for line in out.stdout.splitlines() if line.startswith("final: R-hat")]  # main process only
    assert "(fixed weights, theta-hat = epoch" in final and "provisional" not in final, final
    assert "differs from the clean benchmark" not in out.stderr


def test_an_example_refuses_bad_input_in_one_line():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_digits.py"), "--eps", "8", "--epochs", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: eps=8 is larger") and "8/255" in lines[0], out.stderr


@pytest.mark.slow
def test_every_path_benchmark_runs_each_path_and_reads_their_reports(tmp_path):
    # Two epochs: every path warns that its recipe differs (2 vs 60 epochs), and the table says so.
    out = tmp_path / "every-path"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "every_path.py"), "--epochs", "2", "--eps",
                           "8/255", "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads((out / "every_path.json").read_text())["runs"]
    assert sorted(r["path"] for r in runs) == ["accelerate-1", "accelerate-2", "hf", "lightning", "plain"]
    assert all(r["report"] is not None and r["report"]["regime"] in REGIMES for r in runs)
    assert all(r["recipe_warning"] for r in runs) and "recipe warning" in (out / "every_path.md").read_text()
