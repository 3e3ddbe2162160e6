"""SIGKILL a training process mid-epoch, resume from its last Accelerate checkpoint, get the same reports.

Runs examples/resumable_training.py (whose monitor evaluates theta-hat and R-hat itself) three times on
the CPU with the same seed, on one process and on two (gloo, through accelerate launch): once
uninterrupted, once killed (SIGKILL to every process, no chance to clean up) partway through an epoch, and
once more in the killed run's folder, which resumes from the newest complete checkpoint. The resumed run's
monitor history and reports must equal the uninterrupted run's exactly; on two processes that needs each
rank's open-epoch sums back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._gloo import accelerate_launch_command

pytest.importorskip("accelerate", reason="install the hf extra: pip install -e '.[hf]'")
psutil = pytest.importorskip("psutil", reason="needs psutil (a dependency of accelerate)")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "resumable_training.py"
PAUSED = Path(__file__).resolve().parent / "scripts" / "paused_resumable.py"  # waits after one checkpoint
ARGS = ["--epochs", "4", "--checkpoint-every", "8", "--eval-budget", "inf"]  # (θ̂ from epoch 1: a pending R̂ to resume)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _command(out: Path, processes: int, pause_at: int | None = None) -> list[str]:
    args = [str(SCRIPT), "--out", str(out), *ARGS]
    if pause_at is not None:
        args = [str(PAUSED), str(pause_at), *args[1:]]
    return [sys.executable, *args] if processes == 1 else accelerate_launch_command(*args, processes=processes)


def _run(out: Path, processes: int) -> dict:
    proc = subprocess.run(_command(out, processes), capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "final.json").read_text())


def _kill_tree(pid: int) -> None:
    """SIGKILL the process ``pid`` and all its descendants (the launcher starts its workers in new sessions,
    so a process-group kill would miss them). It is stopped first, so it can start no process in between;
    processes that are already gone are skipped (psutil, unlike a scan of /proc, tolerates them)."""
    try:
        root = psutil.Process(pid)
        root.suspend()  # (a zombie, not yet waited for, takes the signals and has no children)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.parametrize("processes,kill_at", [(1, 24), (2, 16)], ids=["1-process", "2-processes"])
def test_killed_run_resumes_to_the_same_reports(tmp_path, processes, kill_at):
    # 21 steps per epoch on one process, 10 on two: the checkpoint at kill_at lies inside epoch 2 of 4, where
    # the two ranks hold different open-epoch sums.
    reference = _run(tmp_path / "uninterrupted", processes)
    assert reference["resumed_from"] is None and len(reference["reports"]) == 4

    crashed = tmp_path / "crashed"
    # Every process stops right after the checkpoint of step kill_at and waits there to be killed.
    proc = subprocess.Popen(_command(crashed, processes, pause_at=kill_at), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    marks = [crashed / "checkpoints" / f"paused-{rank}" for rank in range(processes)]
    try:
        deadline = time.monotonic() + 240
        while not all(m.exists() for m in marks) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(m.exists() for m in marks), "the run never reached the checkpoint to be killed at"
        _kill_tree(proc.pid)  # (watching files, not stdout: the launcher buffers it)
    finally:
        _kill_tree(proc.pid)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (crashed / "final.json").exists(), "the kill came too late to interrupt training"
    assert list((crashed / "checkpoints").glob("step_*"))
    # The kill fell between theta-hat's epoch and its R-hat evaluation (due after the warm-up, at epoch 4):
    # theta-hat's weights are in the checkpoint the resume reads.
    assert list((crashed / "checkpoints").glob("step_*/advhooks_theta_hat.safetensors"))

    resumed = _run(crashed, processes)
    assert resumed["resumed_from"] is not None
    assert resumed["monitor"] == reference["monitor"]  # history, flag, open sums, theta-hat's R-hat: bit for bit
    assert reference["reports"][-1]["rhat_kind"] == "fixed weights"
    by_epoch = {r["epoch"]: r for r in reference["reports"]}
    assert resumed["reports"], "the resumed run closed no epoch"
    for report in resumed["reports"]:
        assert report == by_epoch[report["epoch"]]
