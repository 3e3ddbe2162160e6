"""benchmarks/gpu_check.py keeps working between device sessions: its smoke run on the CPU, every path."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_gpu_check_smoke_run_covers_every_path_on_the_cpu(tmp_path):
    pytest.importorskip("torchattacks", reason="the check compares with torchattacks: pip install 'advhooks[dev]'")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--smoke",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["config"] for r in results["speed"]] == ["mnist-cnn b4", "preact18 b2"]
    for row in results["speed"]:
        for key in ("pgd/10U", "ta/pgd", "bf16/pgd", "cl/pgd", "step/(10U+C)"):
            assert row[key]["median"] > 0, key
        assert row["monitor_us"] > 0
    assert "compile/pgd" in results["speed"][0]
    assert results["host_syncs"]["syncs"] == 0  # counted by the dispatcher on the CPU
    assert results["label_check"]["refused"] and "class index outside [0, 10)" in results["label_check"]["message"]
    assert "| mnist-cnn b4 |" in (tmp_path / "gpu_check.md").read_text()
