"""The examples run end to end (shortened)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_train_digits_example_runs_with_a_benchmark(tmp_path):
    pytest.importorskip("sklearn", reason="the digits example needs scikit-learn: pip install 'advhooks[demo]'")
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
                           "--grid", "0", "-q"], capture_output=True, text=True, timeout=300)
    assert conn.returncode == 0, conn.stderr
    assert "straight line: max" in conn.stdout


@pytest.mark.parametrize("script", ["train_digits_lightning.py", "train_digits_hf.py"])
def test_framework_examples_run(tmp_path, script):
    pytest.importorskip("sklearn", reason="the digits examples need scikit-learn: pip install 'advhooks[demo]'")
    pytest.importorskip("lightning" if "lightning" in script else "transformers",
                        reason="pip install 'advhooks[lightning]' / 'advhooks[hf]'")
    bench = tmp_path / "clean.safetensors"
    if "lightning" in script:
        subprocess.run([sys.executable, "-m", "advhooks.cli", "benchmark-clean", "--preset", "digits-mlp",
                        "--epochs", "2", "--out", str(bench), "-q"], check=True, capture_output=True, timeout=300)
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--epochs", "2", "--steps", "2",
                          "--benchmark", str(bench)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "final: ratio" in out.stdout
    if "hf" in script:  # the ViT records its own benchmark first, so the recipes match: no warning
        assert "clean benchmark: R*(0) =" in out.stdout and bench.exists()
        assert "differs from the clean benchmark's recipe" not in out.stderr
    if "lightning" in script:  # one line per epoch
        assert "epoch   1  adv train loss" in out.stdout and "epoch   2  adv train loss" in out.stdout
