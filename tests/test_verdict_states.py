"""A verdict that cannot lie: a diverged run (NaN/inf, from its own evaluation or given by the loop) and a run at
chance level have their own states, never θ̂ and never an ε regime; estimators and the check of an estimate refuse
or flag them; per-sample random starts make an evaluation a function of the weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from advhooks import PGD, AdversarialStep
from advhooks.attacks import SampleNoise
from advhooks.benchmark import CleanBenchmark
from advhooks.kit.estimate import estimate_from_records
from advhooks.monitor import PhaseMonitor
from advhooks.monitor.report import DIVERGED, EPS_REGIMES, NO_VERDICT, NOT_LEARNING, REGIMES, judge

R_STAR = 0.2


def _data(n: int, seed: int, classes: int = 4) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 6, generator=gen)
    return TensorDataset(x, (x[:, :classes].argmax(1)))


def _benchmark(classes: int = 4) -> CleanBenchmark:
    """A benchmark that knows its classes (from its test labels), as every recorded one does."""
    return CleanBenchmark(R_STAR, 0.1, 0.1, 0.9, 0.95, test_loss_stderr=0.01, n_test=400, n_train=1000,
                          dataset={"num_classes": classes})


def _run(model: nn.Module, monitor: PhaseMonitor, epochs: int, *, poison_from: int | None = None,
         given: dict[int, float] | None = None) -> list:
    """Train ``model`` adversarially on a small set; weights turn NaN from epoch ``poison_from``; ``given``
    passes a loop's own adversarial test loss at some epochs."""
    train = _data(64, seed=1)
    step = AdversarialStep(model, PGD(0.05, steps=2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    reports = []
    for epoch in range(1, epochs + 1):
        if poison_from == epoch:
            with torch.no_grad():
                next(model.parameters()).fill_(math.nan)
        for i in range(0, 64, 16):
            out = step(*train[i : i + 16])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            monitor.update(out)
        reports.append(monitor.epoch_end(adv_test_loss=(given or {}).get(epoch)))
    return reports


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))


def _monitor(**settings) -> PhaseMonitor:
    return PhaseMonitor(_benchmark(), eps=0.05, warmup_epochs=0, total_epochs=6, **settings)


@pytest.mark.parametrize("poison_from", [1, 4])
def test_weights_that_turn_nan_give_the_diverged_state_and_never_theta_hat(poison_from):
    model, monitor = _model(), _monitor()
    monitor.evaluate_with(model, _data(64, seed=1), _data(32, seed=2), train_subset=None)
    reports = _run(model, monitor, 6, poison_from=poison_from)
    for report in reports[poison_from - 1 :]:
        assert report.regime == DIVERGED and report.diverged_epoch == poison_from and report.should_stop
        assert "since epoch" in report.explanation
    assert all(r.regime in EPS_REGIMES for r in reports[: poison_from - 1])
    theta_hat = monitor.rhat["epoch"] if monitor.rhat else None
    assert theta_hat is None or theta_hat < poison_from  # a NaN epoch never becomes θ̂
    assert all(t is None or math.isfinite(t) for t in [r.adv_test_loss for r in reports[: poison_from - 1]])
    record = monitor.record()
    assert record["diverged_epoch"] == poison_from


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_given_nan_or_inf_test_loss_is_recorded_not_raised(bad):
    monitor = _monitor()
    reports = _run(_model(), monitor, 4, given={1: 0.5, 2: 0.4, 3: bad, 4: 0.45})
    assert [r.early_stopped_epoch for r in reports] == [1, 2, 2, 2]  # epoch 3 never becomes θ̂
    assert reports[2].regime == DIVERGED and reports[2].diverged_epoch == 3 and reports[2].should_stop
    assert reports[3].regime != DIVERGED and reports[3].diverged_epoch == 3  # the next finite epoch is judged again
    monitor.update(torch.tensor(0.3), batch_size=8)
    with pytest.raises(ValueError, match="adv_test_loss must be a loss"):
        monitor.epoch_end(adv_test_loss=-1.0)


def test_a_collapsed_run_at_chance_level_is_not_learning_not_above_eps_star(caplog):
    model = _model()
    with torch.no_grad():  # a collapsed model: the same output for every input, the loss of a uniform guess
        for p in model.parameters():
            p.zero_()
    monitor = _monitor()
    monitor.update(torch.tensor(math.log(4)), batch_size=64)
    monitor.evaluate_with(model, _data(64, seed=1), _data(32, seed=2), train_subset=None, budget=math.inf)
    with caplog.at_level("WARNING", logger="advhooks"):
        report = monitor.epoch_end()
    assert report.regime == NOT_LEARNING and not report.should_stop and report.ratio > 1.5
    assert report.chance_loss == pytest.approx(math.log(4))
    assert "ln 4" in report.explanation and "uniform guess" in report.explanation
    assert any("not learning" in r.getMessage() for r in caplog.records)
    assert report.metrics()["advhooks/regime"] == REGIMES.index(NOT_LEARNING)


def test_no_finite_band_is_no_verdict_not_near_eps_star():
    assert judge(math.nan, math.nan, 1.5, True, True)[0] == NO_VERDICT
    assert judge(0.5, 0.9, 1.5, True, True, not_learning="at chance")[0] == NOT_LEARNING
    assert judge(0.5, 0.9, 1.5, True, True, diverged=3, not_learning="at chance")[0] == DIVERGED


def _record(eps: float, mean: float, clean: float = 0.1, **extra) -> dict:
    """A run record at ``eps`` whose R̂ is ``mean`` and whose clean loss at θ̂ is ``clean``."""
    bench = _benchmark()
    monitor = PhaseMonitor(bench, eps=eps, warmup_epochs=0)
    monitor.update(torch.tensor(mean), batch_size=10)
    monitor.epoch_end(adv_test_loss=mean)
    record = monitor.record()
    record["rhat"].update(kind="fixed weights", stderr=0.001, n=100, population=100, clean_mean=clean,
                          clean_stderr=0.001)
    return {**record, **extra}


def test_the_records_estimator_refuses_running_means_and_leaves_out_unhealthy_runs():
    bench = _benchmark()
    healthy = [_record(0.01, 0.15), _record(0.03, 0.25)]
    running = _record(0.02, 0.2)
    running["rhat"]["kind"] = "running mean"
    with pytest.raises(ValueError, match="running mean R-hat.*evaluate_with"):
        estimate_from_records([*healthy, running], bench)
    diverged = _record(0.02, 0.18, diverged_epoch=7)
    chance = math.log(4) + 0.01
    collapsed = _record(0.025, chance, clean=chance)  # at chance between ε that learn: a collapse, not ε
    too_strong = _record(0.05, chance, clean=chance)  # at chance above every ε that learns: R̂ measured, kept
    broken = _record(0.04, chance)  # R̂ at chance but the clean loss low: it learned, a strong attack breaks it
    est = estimate_from_records([*healthy, diverged, collapsed, too_strong, broken], bench, include_clean=False)
    failed = {p["eps"]: p["failed"] for p in est.points if p.get("failed")}
    assert failed == {0.02: failed[0.02], 0.025: failed[0.025]}
    assert failed[0.02].startswith("diverged") and failed[0.025].startswith("not learning")
    assert sum("left out" in w for w in est.warnings) == 2 and any("kept as a point above" in w for w in est.warnings)
    assert [p.get("state", "")[:12] for p in est.points if p["eps"] == 0.05] == ["not learning"]
    assert [p.get("state") for p in est.points if p["eps"] == 0.04] == [None]
    assert est.value == pytest.approx(0.02)  # the crossing of the healthy points


def test_each_state_without_an_eps_verdict_tells_the_check_of_an_estimate_it_says_nothing():
    # (tests/test_estimate.py runs the check into a diverged run: it does not confirm)
    from advhooks.kit.estimate.verify import MEANING

    assert all(state in MEANING and "says nothing" in MEANING[state] for state in (NO_VERDICT, DIVERGED,
                                                                                  NOT_LEARNING))


def test_sample_noise_is_keyed_by_the_sample_and_uniform():
    a = SampleNoise(torch.arange(4000), seed=3, eps=0.1).rand((4000, 8))
    assert 0 < float(a.min()) and float(a.max()) < 1
    assert float(a.mean()) == pytest.approx(0.5, abs=0.01) and float(a.var()) == pytest.approx(1 / 12, rel=0.03)
    part = SampleNoise([17, 3999], seed=3, eps=0.1).rand((2, 8))
    assert torch.equal(part, a[[17, 3999]])  # the same sample draws the same start in any batch
    again = SampleNoise(torch.arange(4000), seed=3, eps=0.1)
    first, second = again.rand((4000, 8)), again.rand((4000, 8))
    assert torch.equal(first, a) and not torch.equal(first, second)  # restarts draw anew
    assert not torch.equal(SampleNoise([17], seed=3, eps=0.2).rand((1, 8)), part[:1])  # another ε, another start
    corr = torch.corrcoef(torch.stack([first.flatten(), second.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.02
    normal = SampleNoise(torch.arange(4000), seed=0, eps=0.1).randn((4000, 4))
    assert float(normal.mean()) == pytest.approx(0.0, abs=0.03) and float(normal.std()) == pytest.approx(1, abs=0.03)


def test_a_resumed_monitor_carries_the_diverged_state_and_the_classes():
    def bench() -> CleanBenchmark:  # a benchmark that does not know its classes: K comes from the logits fed
        return CleanBenchmark(R_STAR, 0.1, 0.1, 0.9, 0.95, test_loss_stderr=0.01, n_test=400, n_train=1000)

    monitor = PhaseMonitor(bench(), eps=0.05, warmup_epochs=0)
    step = AdversarialStep(_model(), PGD(0.05, steps=1))
    for given in (0.5, math.nan):
        monitor.update(step(*_data(8, seed=3)[:]))
        monitor.epoch_end(adv_test_loss=given)
    resumed = PhaseMonitor(bench(), eps=0.05, warmup_epochs=0)
    resumed.load_state_dict(monitor.state_dict())
    resumed.update(torch.tensor(0.4), batch_size=10)  # a bare loss: no logits to learn K from
    report = resumed.epoch_end(adv_test_loss=0.45)
    assert report.diverged_epoch == 2 and report.regime != DIVERGED  # the latest epoch is finite again
    assert report.chance_loss == pytest.approx(math.log(4))  # K came back with the state


def test_plain_batchnorm_is_told_apart_from_sync_batchnorm():
    from advhooks._distributed import BATCHNORM_NOTE, unsynced_batchnorm

    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert unsynced_batchnorm(plain) and not unsynced_batchnorm(nn.SyncBatchNorm.convert_sync_batchnorm(plain))
    assert not unsynced_batchnorm(_model())
    assert "SyncBatchNorm" in BATCHNORM_NOTE.format(n=2, how="torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)")
