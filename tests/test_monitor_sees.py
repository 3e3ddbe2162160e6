"""What the monitor checks by itself against the benchmark, and a resume while θ̂'s R̂ is still pending."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from advhooks import PGD
from advhooks.benchmark import CleanBenchmark, model_fingerprint
from advhooks.monitor import PhaseMonitor

from .conftest import SmallCNN

R_STAR = 0.5


def _bench(model: nn.Module, n_train: int = 120, batch_size: int = 64) -> CleanBenchmark:
    return CleanBenchmark(R_STAR, 0.1, 0.4, 0.9, 0.95, 0.01, 60, n_train,
                          training={"batch_size": batch_size, "epochs": 4}, model=model_fingerprint(model))


def _data(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_batch_size_it_is_fed_is_compared_without_a_recipe(caplog):
    monitor = PhaseMonitor(_bench(SmallCNN()), eps=0.1, total_epochs=4, warmup_epochs=2)
    with caplog.at_level(logging.WARNING, logger="advhooks.monitor"):
        for _ in range(2):  # two epochs: the difference is named once
            for n in (128, 128, 50):  # a short last batch is not the batch size
                monitor.update(torch.tensor(1.0), batch_size=n)
            monitor.epoch_end()
    (warning,) = _warnings(caplog)
    assert "batch size 128 vs the benchmark's 64" in warning and "batches fed to update()" in warning
    assert monitor.epoch == 2


def test_a_given_recipe_batch_size_wins_over_what_is_seen(caplog):
    # Gradient accumulation: the monitor sees micro-batches of 32, the recipe says the global batch is 64.
    monitor = PhaseMonitor(_bench(SmallCNN()), eps=0.1, total_epochs=4, warmup_epochs=2, recipe={"batch_size": 64})
    with caplog.at_level(logging.WARNING, logger="advhooks.monitor"):
        monitor.update(torch.tensor(1.0), batch_size=32)
        monitor.epoch_end()
    assert not _warnings(caplog)


def test_fingerprints_look_through_wrappers():
    model = SmallCNN()
    compiled = torch.compile(model)  # (wraps; nothing is compiled until it is called)
    assert model_fingerprint(nn.DataParallel(model)) == model_fingerprint(model)
    assert model_fingerprint(compiled) == model_fingerprint(model)
    assert model_fingerprint(nn.DataParallel(compiled))["class"].endswith("SmallCNN")

    class Holder(nn.Module):  # a LightningModule's self.net, a task head around a backbone
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

    assert model_fingerprint(Holder(model)) == model_fingerprint(model)
    assert model_fingerprint(nn.Sequential(model, nn.Linear(10, 2))) != model_fingerprint(model)


def test_a_different_model_or_data_makes_the_ratio_incomparable(caplog):
    bench = _bench(SmallCNN())
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    monitor = PhaseMonitor(bench, eps=0.1, total_epochs=4, warmup_epochs=2)
    with caplog.at_level(logging.WARNING, logger="advhooks.monitor"):
        monitor.evaluate_with(other, _data(90, 1), _data(60, 2), train_subset=32)
    (warning,) = _warnings(caplog)
    assert "compares unlike things" in warning and "n train 90 vs the benchmark's 120" in warning
    monitor.update(torch.tensor(0.6), batch_size=64)
    report = monitor.epoch_end()
    assert not report.comparable and "parameters" in report.unlike
    assert report.metrics()["advhooks/comparable"] == 0.0
    with pytest.raises(ValueError, match="unlike things"):
        PhaseMonitor(bench, eps=0.1, strict=True).evaluate_with(other, _data(120, 1), _data(60, 2))
    same = PhaseMonitor(bench, eps=0.1, strict=True)
    same.evaluate_with(SmallCNN(), _data(120, 1), _data(60, 2), train_subset=32)  # no error: like for like
    same.update(torch.tensor(0.6), batch_size=64)
    assert same.epoch_end().comparable


def _train_and_watch(monitor: PhaseMonitor, model: nn.Module, epochs: range, stop_after: int | None = None):
    reports = []
    for epoch in epochs:
        torch.manual_seed(epoch)
        with torch.no_grad():  # "training": a deterministic change of the weights per epoch
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))
        monitor.update(torch.tensor(0.6 + 0.01 * epoch), batch_size=64)
        reports.append(monitor.epoch_end().to_dict())
        if stop_after is not None and epoch == stop_after:
            break
    return reports


def _watched(model: nn.Module) -> PhaseMonitor:
    monitor = PhaseMonitor(_bench(model), eps=0.1, total_epochs=5, warmup_epochs=4,
                           attack=PGD(0.1, steps=2, random_start=False))
    monitor.evaluate_with(model, _data(120, 1), _data(60, 2), train_subset=48, budget=math.inf)  # every epoch
    return monitor


def test_a_resume_while_rhat_is_pending_gives_the_uninterrupted_reports():
    torch.manual_seed(0)
    reference_model = SmallCNN()
    start = {k: v.clone() for k, v in reference_model.state_dict().items()}
    reference = _train_and_watch(_watched(reference_model), reference_model, range(1, 6))
    assert reference[-1]["rhat_kind"] == "fixed weights"

    model = SmallCNN()
    model.load_state_dict(start)
    first = _watched(model)
    _train_and_watch(first, model, range(1, 6), stop_after=2)
    state = first.state_dict()
    assert "theta_hat_weights" in state  # θ̂ is known, its R̂ is due only after the warm-up
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    resumed_model = SmallCNN()  # a new process: the model's weights come from its own checkpoint
    resumed_model.load_state_dict(weights)
    resumed = _watched(resumed_model)
    resumed.load_state_dict(state)
    assert _train_and_watch(resumed, resumed_model, range(3, 6)) == reference[2:]
    assert "theta_hat_weights" not in resumed.state_dict()  # evaluated: plain values only
