"""SIGKILL a training process mid-epoch, resume from its last Accelerate checkpoint, get the same reports.

Runs examples/resumable_training.py three times on the CPU with the same seed: once uninterrupted,
once killed (SIGKILL, no chance to clean up) partway through an epoch, and once more in the killed
run's folder, which resumes from the newest complete checkpoint. The resumed run's monitor history
and reports must equal the uninterrupted run's exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate", reason="install the hf extra: pip install -e '.[hf]'")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "resumable_training.py"
ARGS = ["--epochs", "4", "--checkpoint-every", "8"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(out: Path) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *ARGS], capture_output=True, text=True,
                          timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "final.json").read_text())


def test_killed_run_resumes_to_the_same_reports(tmp_path):
    reference = _run(tmp_path / "uninterrupted")
    assert reference["resumed_from"] is None and len(reference["reports"]) == 4

    crashed = tmp_path / "crashed"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(crashed), *ARGS], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        for line in proc.stdout:
            if line.startswith("step ") and int(line.split()[1]) >= 30:  # epoch 2 of 4 (22 steps per epoch)
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (crashed / "final.json").exists(), "the kill came too late to interrupt training"
    assert list((crashed / "checkpoints").glob("step_*"))

    resumed = _run(crashed)
    assert resumed["resumed_from"] is not None
    assert resumed["monitor"] == reference["monitor"]  # history, flag, open sums: bit for bit
    by_epoch = {r["epoch"]: r for r in reference["reports"]}
    assert resumed["reports"], "the resumed run closed no epoch"
    for report in resumed["reports"]:
        assert report == by_epoch[report["epoch"]]
