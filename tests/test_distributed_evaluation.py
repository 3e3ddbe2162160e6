"""The monitor's own evaluation (θ̂ by the adversarial test loss, R̂ at θ̂'s fixed weights) gives the same
numbers on one process and on two gloo processes: the same samples, each rank its share, the sums added, each
sample's random start drawn from (seed, index, ε). Every process also agrees on the epoch when one saw no batch,
and on the open epoch's sums after a mid-epoch resume from one process's state."""

from __future__ import annotations

import json
import math
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


def _run(world: int, rank: int = 0, budget: float = math.inf) -> list[dict]:
    """Three epochs of a fixed model whose weights change between epochs (θ̂ moves, then stays); a global batch of 8
    split between the processes (what the budget is a share of)."""
    torch.manual_seed(0)
    model = SmallCNN()
    wrapped = DDP(model) if world > 1 else model
    # PGD with its random start: each sample's start comes from (seed, index, ε), not from the global generator.
    monitor = PhaseMonitor(0.5, eps=8 / 255, warmup_epochs=0, total_epochs=3, attack=PGD(8 / 255, steps=3))
    monitor.evaluate_with(wrapped, _data(203, seed=1), _data(101, seed=2), train_subset=150, batch_size=16,
                          budget=budget)
    reports = []
    for epoch, scale in enumerate((1.0, 0.5, 3.0)):
        torch.rand(37 + 100 * rank + epoch)  # "training" draws another amount of randomness on each process
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)
        monitor.update(torch.tensor(0.7 + 0.1 * epoch), batch_size=8 // world)
        report = monitor.epoch_end()
        reports.append({k: getattr(report, k) for k in FIELDS} | {"n": monitor.rhat and monitor.rhat["n"]})
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
    return _run(world, rank)


def _run_on_a_budget_as_rank(rank: int, world: int) -> list[dict]:
    return _run(world, rank, budget=42.0)


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


def test_two_processes_skip_and_evaluate_the_same_epochs_on_a_budget(tmp_path):
    # An epoch trains 8 samples × 8 passes (PGD-3 and the update), 42× that is 2,688 passes. A test loss costs
    # 101 × 7, R̂ 150 × 8. Epoch 1 ends the warm-up (0 epochs): its test loss and R̂ are reserved and made (1,907).
    # Epoch 2 cannot afford a test loss with the R̂ it may need beside the last epoch's reserve (5,721 > 5,376);
    # the last epoch evaluates whatever. The counts are sums over the processes, so both decide alike.
    single = _run(1, budget=42.0)
    assert [r["rhat_kind"] for r in single] == ["fixed weights"] * 3
    assert [r["early_stopped_epoch"] for r in single] == [1, 1, 1]
    assert [r["adv_test_loss"] is None for r in single] == [False, True, False]
    ranks = _on_two_processes(tmp_path, _run_on_a_budget_as_rank)
    assert ranks[0] == ranks[1]
    for one, two in zip(single, ranks[0], strict=True):
        assert one["early_stopped_epoch"] == two["early_stopped_epoch"] and one["rhat_kind"] == two["rhat_kind"]
        assert two["rhat"] == pytest.approx(one["rhat"], rel=1e-6)
        assert (one["adv_test_loss"] is None) == (two["adv_test_loss"] is None)
        if one["adv_test_loss"] is not None:
            assert two["adv_test_loss"] == pytest.approx(one["adv_test_loss"], rel=1e-6)


def test_the_evaluation_is_a_function_of_the_weights_not_of_the_random_generator():
    model = SmallCNN()
    monitor = PhaseMonitor(0.5, eps=8 / 255, warmup_epochs=0, attack=PGD(8 / 255, steps=3))
    monitor.evaluate_with(model, _data(64, seed=1), _data(48, seed=2), batch_size=16)
    losses = []
    for draws in (1, 1000):
        torch.manual_seed(draws)
        torch.rand(draws)
        monitor.update(torch.tensor(0.7), batch_size=8)
        losses.append(monitor.epoch_end().adv_test_loss)
    assert losses[0] == losses[1]
    # ... and the starts are random: another evaluation seed gives another loss.
    other = PhaseMonitor(0.5, eps=8 / 255, warmup_epochs=0, attack=PGD(8 / 255, steps=3))
    other.evaluate_with(model, _data(64, seed=1), _data(48, seed=2), batch_size=16, seed=1)
    other.update(torch.tensor(0.7), batch_size=8)
    assert other.epoch_end().adv_test_loss != losses[0]


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


def _one_process_without_batches(rank: int, world: int) -> list:
    """Rank 1 sees no batch in epoch 2 (an uneven last shard): both ranks ask every process and close the epoch."""
    monitor = PhaseMonitor(0.5, eps=8 / 255, warmup_epochs=0, sync_timeout=60)
    closed = []
    for epoch in range(2):
        if not (rank == 1 and epoch == 1):
            monitor.update(torch.tensor(0.6 + rank * 0.2), batch_size=8)
        if monitor.any_process_has_updates():
            closed.append(monitor.epoch_end().samples)
    return closed


def test_a_process_that_saw_no_batch_closes_the_epoch_with_the_others(tmp_path):
    # mp.spawn's join is the bound: a hang would time the gloo group out (init_gloo: 120 s) and fail the test.
    ranks = _on_two_processes(tmp_path, _one_process_without_batches)
    assert ranks[0] == ranks[1] == [16, 8]


def _losses(rank: int) -> list[float]:
    return [0.3 + 0.1 * rank + 0.05 * i for i in range(4)]


def _resumed_mid_epoch(rank: int, world: int) -> list:
    """An epoch of 4 batches per rank, saved after 2 by rank 0 alone (a framework's one checkpoint), resumed by new
    monitors on both ranks: the epoch mean equals the uninterrupted run's."""
    straight = PhaseMonitor(0.5, eps=8 / 255, warmup_epochs=0)
    for loss in _losses(rank):
        straight.update(torch.tensor(loss), batch_size=8)
    expected = straight.epoch_end()
    first = PhaseMonitor(0.5, eps=8 / 255, warmup_epochs=0)
    for loss in _losses(rank)[:2]:
        first.update(torch.tensor(loss), batch_size=8)
    first.share_open_sums()  # every rank, as the adapters' save hooks do
    state = [first.state_dict()]
    dist.broadcast_object_list(state, src=0)  # only rank 0's state survives, as in a one-file checkpoint
    resumed = PhaseMonitor(0.5, eps=8 / 255, warmup_epochs=0)
    resumed.load_state_dict(state[0])
    for loss in _losses(rank)[2:]:
        resumed.update(torch.tensor(loss), batch_size=8)
    report = resumed.epoch_end()
    return [report.adv_train_loss, report.samples, expected.adv_train_loss, expected.samples]


def test_a_mid_epoch_resume_from_one_process_state_gives_the_uninterrupted_epoch(tmp_path):
    ranks = _on_two_processes(tmp_path, _resumed_mid_epoch)
    assert ranks[0] == ranks[1]
    mean, samples, expected_mean, expected_samples = ranks[0]
    assert samples == expected_samples == 64 and mean == pytest.approx(expected_mean, rel=1e-12)
