"""Two gloo processes where one rank misbehaves: NaN losses, or a rank that raises and never syncs.

- NaN on one rank: the monitor's reports (and so its decisions) are identical on every rank, and the
  NaN batches are counted, not averaged in.
- A rank that raised before ``epoch_end``: the other rank does not wait forever; ``epoch_end`` raises
  within the monitor's ``sync_timeout`` with a message that says a rank did not arrive.
"""

from __future__ import annotations

import json
import math
import os
import time

import torch
import torch.multiprocessing as mp

from advhooks.monitor import PhaseMonitor

from ._gloo import init_gloo, leave

R_STAR = 0.5


def _nan_worker(rank: int, world: int, out_dir: str) -> None:
    init_gloo(rank, world, out_dir)
    monitor = PhaseMonitor(R_STAR, eps=0.1, warmup_epochs=1, patience=1)
    reports = []
    for epoch in range(3):
        losses = [(0.9 - 0.1 * epoch, 8), (1.0 - 0.1 * epoch, 8)]
        if rank == 1:
            losses.append((math.nan, 4))  # this rank's model blew up on one batch each epoch
        for loss, n in losses:
            monitor.update(torch.tensor(loss), batch_size=n)
        reports.append(monitor.epoch_end().to_dict())
    with open(os.path.join(out_dir, f"nan-{rank}.json"), "w") as fh:
        json.dump(reports, fh)
    leave()


def test_nan_on_one_rank_gives_identical_decisions_on_every_rank(tmp_path):
    mp.spawn(_nan_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (json.loads((tmp_path / f"nan-{r}.json").read_text()) for r in (0, 1))
    assert rank0 == rank1
    for epoch, report in enumerate(rank0):
        assert report["nonfinite_samples"] == 4 and report["samples"] == 32
        assert math.isclose(report["adv_train_loss"], 0.95 - 0.1 * epoch, rel_tol=1e-6)


SYNC_TIMEOUT = 1.0


def _raising_worker(rank: int, world: int, out_dir: str) -> None:
    init_gloo(rank, world, out_dir)
    monitor = PhaseMonitor(R_STAR, eps=0.1, sync_timeout=SYNC_TIMEOUT)
    monitor.update(torch.tensor(1.0), batch_size=8)
    outcome: dict = {}
    if rank == 1:
        try:
            raise RuntimeError("CUDA out of memory (simulated)")  # the user's loop catches and logs it
        except RuntimeError:
            outcome["raised"] = True
            # ... and goes on without reaching epoch_end, alive until rank 0 gave up on it (not a fixed sleep:
            # exiting early would close the connection rank 0 waits on). If rank 0's timeout never fires, this
            # gives up after 30 s and rank 0's `waited` fails the test.
            deadline = time.monotonic() + 30
            while not os.path.exists(os.path.join(out_dir, "raise-0.json")) and time.monotonic() < deadline:
                time.sleep(0.02)
    else:
        start = time.monotonic()
        try:
            monitor.epoch_end()
        except RuntimeError as err:
            outcome["error"] = str(err)
        outcome["waited"] = time.monotonic() - start
    with open(os.path.join(out_dir, f"raise-{rank}.json"), "w") as fh:
        json.dump(outcome, fh)
    leave(barrier=False)  # the point is that a peer can be gone


def test_a_rank_that_raised_does_not_hang_the_others(tmp_path):
    mp.spawn(_raising_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    rank0 = json.loads((tmp_path / "raise-0.json").read_text())
    assert f"not every rank reached epoch_end within {SYNC_TIMEOUT:g} s" in rank0["error"]
    assert rank0["waited"] < 9
    assert json.loads((tmp_path / "raise-1.json").read_text()) == {"raised": True}
