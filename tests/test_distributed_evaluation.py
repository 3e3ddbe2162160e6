"""The monitor's own evaluation (θ̂ by the adversarial test loss, R̂ at θ̂'s fixed weights) gives the same
numbers on one process and on two gloo processes: the same samples, each rank its share, the sums added."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import TensorDataset

from advhooks import PGD
from advhooks.monitor import PhaseMonitor

from ._gloo import init_gloo, leave
from .conftest import SmallCNN

FIELDS = ("adv_test_loss", "rhat", "rhat_stderr", "early_stopped_epoch", "rhat_kind")


def _data(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen))


def _run(world: int) -> list[dict]:
    """Three epochs of a fixed model whose weights change between epochs (θ̂ moves, then stays)."""
    torch.manual_seed(0)
    model = SmallCNN()
    wrapped = DDP(model) if world > 1 else model
    # Deterministic attack: with a random start each rank would draw other starts than one process does.
    monitor = PhaseMonitor(0.5, eps=8 / 255, warmup_epochs=0, total_epochs=3,
                           attack=PGD(8 / 255, steps=3, random_start=False))
    monitor.evaluate_with(wrapped, _data(203, seed=1), _data(101, seed=2), train_subset=150, batch_size=16)
    reports = []
    for epoch, scale in enumerate((1.0, 0.5, 3.0)):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)
        monitor.update(torch.tensor(0.7 + 0.1 * epoch), batch_size=8)
        report = monitor.epoch_end()
        reports.append({k: getattr(report, k) for k in FIELDS} | {"n": monitor.rhat["n"]})
    return reports


def _worker(rank: int, world: int, out_dir: str, job) -> None:
    """Run ``job(rank, world)`` in a gloo group and write what it returns to ``rank<r>.json``."""
    init_gloo(rank, world, out_dir)
    result = job(rank, world)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump(result, fh)
    leave()


def _on_two_processes(tmp_path, job) -> list:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    mp.spawn(_worker, args=(2, str(tmp_path), job), nprocs=2, join=True)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def _run_as_rank(rank: int, world: int) -> list[dict]:
    return _run(world)


def test_two_processes_evaluate_theta_hat_and_rhat_like_one(tmp_path):
    single = _run(1)
    assert [r["early_stopped_epoch"] for r in single] == [1, 2, 2]  # θ̂ moves once, then stays
    assert all(r["rhat_kind"] == "fixed weights" for r in single) and single[0]["n"] == 150
    ranks = _on_two_processes(tmp_path, _run_as_rank)
    assert ranks[0] == ranks[1]  # every rank decided θ̂ identically and holds the same R̂
    for one, two in zip(single, ranks[0], strict=True):
        assert one["early_stopped_epoch"] == two["early_stopped_epoch"] and one["n"] == two["n"]
        for key in ("adv_test_loss", "rhat", "rhat_stderr"):
            assert two[key] == pytest.approx(one[key], rel=1e-6), key


def _own_losses(rank: int, world: int) -> list:
    """Each rank passes its own adversarial test loss (its share of the test set): the monitor uses their mean,
    so every rank picks the same θ̂ and evaluates R̂ together (a rank that did alone would deadlock)."""
    torch.manual_seed(0)
    model = SmallCNN()
    monitor = PhaseMonitor(0.5, eps=8 / 255, warmup_epochs=0, total_epochs=2,
                           attack=PGD(8 / 255, steps=2, random_start=False))
    monitor.evaluate_with(DDP(model), _data(64, seed=1), train_subset=32, batch_size=16)
    reports = []
    for own in ((0.9, 1.1), (1.0, 0.95)):  # epoch 2: rank 0 sees a worse loss, rank 1 a better one
        monitor.update(torch.tensor(0.7), batch_size=8)
        report = monitor.epoch_end(adv_test_loss=own[rank])
        reports.append([report.adv_test_loss, report.early_stopped_epoch, report.rhat])
    return reports


def test_per_rank_test_losses_are_averaged_so_every_rank_decides_alike(tmp_path):
    ranks = _on_two_processes(tmp_path, _own_losses)
    assert ranks[0] == ranks[1]
    assert [r[0] for r in ranks[0]] == pytest.approx([1.0, 0.975]) and [r[1] for r in ranks[0]] == [1, 2]
