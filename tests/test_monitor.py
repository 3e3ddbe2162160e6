"""PhaseMonitor: regimes on synthetic loss sequences, the flag, the probe, resume, distributed sums."""

from __future__ import annotations

import logging
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from advhooks import PGD, AdversarialStep
from advhooks.monitor import PhaseMonitor, decide_regime

from ._gloo import init_gloo, leave

R_STAR = 0.2


@pytest.mark.parametrize(
    "ratios,expected",
    [
        ([5.0, 3.0, 1.2, 0.95], "clean-like"),  # reaching below R*(0) proves eps < eps*
        ([5.0, 0.9, 1.4, 1.6], "clean-like"),  # the best epoch counts
        ([5.0, 4.0, 3.0, 2.5, 2.2], "above eps*"),  # still improving: no >> verdict yet
        ([3.0] + [2.5] * 12, "eps >> eps*"),  # plateau far above
        ([3.0] + [1.3] * 12, "above eps*"),  # plateau above R*(0), below the threshold
        ([2.5] * 4, "above eps*"),  # plateau, but inside the warm-up
        ([3.0] + [2.5] * 6 + [2.0] * 3, "above eps*"),  # the plateau broke (e.g. a learning-rate decay)
    ],
)
def test_regimes_of_provisional_runs(ratios, expected):
    monitor = PhaseMonitor(R_STAR, threshold=1.5, patience=3, warmup_epochs=5)
    report = _feed(monitor, [[r * R_STAR] for r in ratios])[-1]
    assert report.regime == expected, report.explanation
    assert report.provisional and report.rhat_kind == "provisional" and "provisional" in report.explanation


def test_the_benchmarks_error_widens_the_band():
    from advhooks.benchmark import CleanBenchmark

    bench = CleanBenchmark(R_STAR, 0.1, 0.1, 0.9, 0.95, test_loss_stderr=0.02, n_test=400, n_train=1000)
    report = _feed(PhaseMonitor(bench, warmup_epochs=1), [[1.05 * R_STAR]])[-1]
    low, high = report.ratio_interval
    assert low < 1.0 < high and report.regime == "near eps*"  # 5 % above R*(0), but R*(0) is known to 10 %
    assert high / report.ratio == pytest.approx(report.ratio / low)  # symmetric on the log scale


@pytest.mark.parametrize(
    "band,far_allowed,expected",
    [((0.8, 0.95), True, "clean-like"), ((0.9, 1.1), True, "near eps*"), ((1.0, 1.2), True, "near eps*"),
     ((1.1, 1.6), True, "above eps*"), ((1.5, 2.0), True, "eps >> eps*"), ((1.5, 2.0), False, "above eps*")],
)
def test_the_band_decides_the_regime(band, far_allowed, expected):
    assert decide_regime(*band, threshold=1.5, far_allowed=far_allowed)[0] == expected


def _feed(monitor, losses_per_epoch, batch=10):
    reports = []
    for losses in losses_per_epoch:
        for v in losses:
            monitor.update(torch.tensor(v), batch_size=batch)
        reports.append(monitor.epoch_end())
    return reports


def test_epoch_mean_is_the_per_sample_mean():
    monitor = PhaseMonitor(R_STAR, eps=0.1)
    monitor.update(torch.tensor(0.5), batch_size=30)
    monitor.update(torch.tensor(1.0), batch_size=10)
    report = monitor.epoch_end()
    assert report.adv_train_loss == pytest.approx((0.5 * 30 + 1.0 * 10) / 40)
    assert report.ratio == pytest.approx(report.adv_train_loss / R_STAR)
    assert report.samples == 40


def test_flag_fires_once_with_logging_and_callback(caplog):
    fired = []
    monitor = PhaseMonitor(R_STAR, eps=8 / 255, warmup_epochs=4, patience=2, on_flag=fired.append)
    with caplog.at_level(logging.INFO, logger="advhooks.monitor"):
        reports = _feed(monitor, [[1.0]] + [[0.6]] * 8)
    flagged = [r.epoch for r in reports if r.flagged]
    assert flagged == [4] and [r.epoch for r in fired] == [4]
    assert all(r.regime == "eps >> eps*" for r in reports[3:])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "smaller eps" in warnings[0].getMessage()


def test_the_flag_says_how_many_times_a_given_eps_star_the_run_is(caplog, tmp_path):
    """An eps* estimate handed to the monitor (its JSON file, as estimate-eps-star --json writes it, or a tuple):
    the flag names eps / eps* with the band's range; one without a band is refused."""
    from advhooks.kit.estimate import EpsStarEstimate

    est = EpsStarEstimate("finetune", 8 / 255, R_STAR, "linf", interval=(6 / 255, 10 / 255))
    (tmp_path / "eps_star.json").write_text(est.to_json())
    for given in (tmp_path / "eps_star.json", (8 / 255, (6 / 255, 10 / 255)), est):
        monitor = PhaseMonitor(R_STAR, eps=32 / 255, warmup_epochs=4, patience=2, eps_star=given)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="advhooks.monitor"):
            reports = _feed(monitor, [[1.0]] + [[0.6]] * 8)
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert "is 4.0x the eps* estimate 8/255" in warning and "(3.2x to 5.3x)" in warning, warning
        (flagged,) = [r for r in reports if r.flagged]  # the report carries it too, only where the flag fires
        assert flagged.advice in warning and "smaller eps" in flagged.advice
        assert all(r.advice == "" for r in reports if not r.flagged)
    with pytest.raises(ValueError, match="eps_star must be an eps\\* estimate with a value and a band"):
        PhaseMonitor(R_STAR, eps_star=EpsStarEstimate("finetune", 8 / 255, R_STAR, "linf"))


def test_update_accepts_step_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    step = AdversarialStep(model, PGD(0.1, steps=2))
    monitor = PhaseMonitor(R_STAR)
    outs = [step(torch.rand(n, 1, 2, 2), torch.randint(0, 3, (n,))) for n in (8, 4)]
    for out in outs:
        monitor.update(out)
    report = monitor.epoch_end()
    expected = (outs[0].adv_loss * 8 + outs[1].adv_loss * 4) / 12
    assert report.adv_train_loss == pytest.approx(float(expected))
    assert report.eps == pytest.approx(0.1)


def test_resume_mid_epoch_gives_the_same_reports():
    epochs = [[1.0, 0.9], [0.8, 0.7], [0.7, 0.69], [0.69, 0.69], [0.7, 0.68], [0.69, 0.69], [0.7, 0.7]]
    kwargs = dict(eps=0.05, warmup_epochs=3, patience=2)
    straight = [r.to_dict() for r in _feed(PhaseMonitor(R_STAR, **kwargs), epochs)]

    first = PhaseMonitor(R_STAR, **kwargs)
    reports = _feed(first, epochs[:3])
    first.update(torch.tensor(epochs[3][0]), batch_size=10)  # stop in the middle of epoch 4
    state = first.state_dict()
    assert all(isinstance(v, (int, float, list, dict, type(None))) for v in state.values())
    second = PhaseMonitor(R_STAR, **kwargs)
    second.load_state_dict(state)
    second.update(torch.tensor(epochs[3][1]), batch_size=10)
    reports.append(second.epoch_end())
    reports += _feed(second, epochs[4:])
    assert [r.to_dict() for r in reports] == straight


def test_probe_reports_a_lower_bound_from_the_ladder():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x, y = torch.rand(64, 1, 4, 4), torch.randint(0, 4, (64,))
    attack = PGD(0.1, steps=3, random_start=False)
    ladder = [0.0, 0.02, 0.05, 0.1, 0.2]
    with torch.no_grad():
        clean_loss = nn.functional.cross_entropy(model(x), y).item()
    losses = []
    for e in ladder:
        adv = attack(model, x, y, eps=e)
        with torch.no_grad():
            losses.append(nn.functional.cross_entropy(model(adv), y).item())
    assert losses == sorted(losses)  # stronger attacks, higher loss
    r_star = (losses[2] + losses[3]) / 2  # between the 0.05 and 0.1 rungs
    monitor = PhaseMonitor(r_star, eps=0.2)
    monitor.enable_probe(model, x, y, attack=attack, ladder=ladder, every=2, batch_size=32)
    report = _feed(monitor, [[clean_loss]])[0]
    assert report.eps_star_lower_bound == pytest.approx(0.05)
    assert report.probe == pytest.approx({f"{e:.6g}": v for e, v in zip(ladder, losses, strict=True)}, rel=1e-5)
    assert "eps* >= 12.8/255 (0.05)" in report.explanation
    assert _feed(monitor, [[clean_loss]])[0].probe is None  # every=2: not at epoch 2


def test_monitor_errors(tmp_path):
    with pytest.raises(ValueError, match="threshold must be > 1"):
        PhaseMonitor(R_STAR, threshold=1.0)
    with pytest.raises(ValueError, match=r"R\*\(0\)"):
        PhaseMonitor(0.0)
    with pytest.raises(TypeError, match="benchmark must be"):
        PhaseMonitor([0.2])
    with pytest.raises(FileNotFoundError):
        PhaseMonitor(tmp_path / "missing.safetensors")
    monitor = PhaseMonitor(R_STAR)
    with pytest.raises(ValueError, match="before any update"):
        monitor.epoch_end()
    with pytest.raises(ValueError, match="batch_size"):
        monitor.update(torch.tensor(1.0))
    other = PhaseMonitor(0.3)
    other.update(torch.tensor(1.0), batch_size=1)
    other.epoch_end()
    with pytest.raises(ValueError, match=r"recorded against R\*\(0\)"):
        monitor.load_state_dict(other.state_dict())


def _dist_worker(rank: int, world: int, out_dir: str) -> None:
    init_gloo(rank, world, out_dir)
    monitor = PhaseMonitor(R_STAR, eps=0.1)
    # Rank 0 sees 3 batches, rank 1 sees 1 batch of another size: the mean is over samples.
    batches = [(0.4, 10), (0.6, 10), (0.8, 5)] if rank == 0 else [(1.2, 7)]
    for loss, n in batches:
        monitor.update(torch.tensor(loss), batch_size=n)
    report = monitor.epoch_end()
    torch.save({"loss": report.adv_train_loss, "samples": report.samples}, os.path.join(out_dir, f"{rank}.pt"))
    leave()  # (no try/finally: a rank that failed must not leave the other waiting in a barrier)


def test_distributed_epoch_mean_equals_the_single_process_mean(tmp_path):
    mp.spawn(_dist_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    expected = (0.4 * 10 + 0.6 * 10 + 0.8 * 5 + 1.2 * 7) / 32
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert got["samples"] == 32 and got["loss"] == pytest.approx(expected)


def _resume_worker(rank: int, world: int, out_dir: str) -> None:
    init_gloo(rank, world, out_dir)
    before = PhaseMonitor(R_STAR)
    before.update(torch.tensor(1.0 + rank), batch_size=10)  # mid-epoch: the ranks hold different sums
    states = [None] * world
    dist.all_gather_object(states, before.state_dict())
    results = {}
    for name, state in (("own", states[rank]), ("rank 0's", states[0])):  # per-rank files / one file from rank 0
        monitor = PhaseMonitor(R_STAR)
        monitor.load_state_dict(state)
        monitor.update(torch.tensor(3.0), batch_size=10)
        report = monitor.epoch_end()
        results[name] = (report.adv_train_loss, report.samples)
    torch.save(results, os.path.join(out_dir, f"resume{rank}.pt"))
    leave()


def test_a_mid_epoch_resume_never_counts_a_rank_twice(tmp_path):
    mp.spawn(_resume_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"resume{rank}.pt", weights_only=True)
        assert got["own"] == (pytest.approx((1.0 * 10 + 2.0 * 10 + 3.0 * 20) / 40), 40)
        # One checkpoint from rank 0 loaded everywhere: rank 0's open sums enter once, rank 1's are lost.
        assert got["rank 0's"] == (pytest.approx((1.0 * 10 + 3.0 * 20) / 30), 30)


def test_warnings_show_without_logging_configuration_and_verbose_prints_each_epoch(tmp_path):
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from advhooks import PhaseMonitor\n"
        "m = PhaseMonitor(0.2, eps=0.1, total_epochs=6, verbose=True)\n"
        "m.update(torch.tensor(0.5), batch_size=4)\n"
        "m.epoch_end()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "shorter than the monitor's warm-up (8 epochs)" in out.stderr and "can never fire" in out.stderr
    assert "epoch 1: R-hat" in out.stderr and "provisional" in out.stderr


def test_the_recipe_check_names_each_difference(caplog):
    from advhooks.benchmark import CleanBenchmark, model_fingerprint

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    bench = CleanBenchmark(R_STAR, 0.1, 0.1, 0.9, 0.95, 0.01, 100, 400, training={"batch_size": 64, "epochs": 60},
                           model=model_fingerprint(nn.Sequential(nn.Flatten(), nn.Linear(8, 3))))
    with caplog.at_level(logging.WARNING, logger="advhooks.monitor"):
        PhaseMonitor(bench, total_epochs=60, recipe={"batch_size": 128, "model": model})
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "batch size 128 vs the benchmark's 64" in warning and "model" in warning and "parameters" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="advhooks.monitor"):
        PhaseMonitor(bench, total_epochs=60, recipe={"batch_size": 64})
    assert not caplog.records


def _row(width, fraction, n_train, eps_star, spread=1.05):
    return {"width": width, "fraction": fraction, "n_train": n_train, "eps_star": eps_star / 255,
            "interval": [eps_star / 255 / spread, eps_star / 255 * spread]}


def test_the_flag_reads_a_study_s_width_and_data_trends(caplog, tmp_path):
    """eps* = 4/255 · (width / 16)^0.5 reaches 32/255 at width 1024; half the data raises eps* here (the paper's
    'more data, smaller eps*'); a flat, noisy trend is said not to resolve anything."""
    import json

    rows = [_row(w, 1.0, 1000, 4 * (w / 16) ** 0.5) for w in (16, 64, 256)]
    rows += [_row(w, 0.5, 500, 1.3 * 4 * (w / 16) ** 0.5) for w in (16, 64, 256)]
    (tmp_path / "study.json").write_text(json.dumps({"rows": rows}))
    monitor = PhaseMonitor(R_STAR, eps=32 / 255, warmup_epochs=4, patience=2, study=tmp_path / "study.json")
    said = monitor.advice.sentence(32 / 255)
    width = said[said.index("at width ") + 9:].split(" ")
    assert float(width[0]) < 1024 < float(width[2]) and float(width[2]) / float(width[0]) < 1.6, said
    assert "eps* shrinks with more data" in said, said
    with caplog.at_level(logging.WARNING, logger="advhooks.monitor"):
        _feed(monitor, [[1.0]] + [[0.6]] * 8)
    assert "reaches eps* = 32/255" in caplog.records[-1].getMessage()
    # two rows whose slope is resolved but barely (MNIST-1D's MLP): far beyond them the band is wide, not an error
    two = [_row(64, 1.0, 4000, 1.81, 1.23), _row(256, 1.0, 4000, 2.85, 1.27)]
    assert "reaches eps* = 12/255" in PhaseMonitor(R_STAR, study={"rows": two}).advice.sentence(12 / 255)
    flat = [_row(16, 1.0, 1000, 8, 1.6), _row(64, 1.0, 1000, 7, 1.6), _row(256, 1.0, 1000, 8.5, 1.6)]
    assert "width trend does not resolve" in PhaseMonitor(R_STAR, study={"rows": flat}).advice.sentence(32 / 255)
    with pytest.raises(ValueError, match="study must be an advhooks study"):
        PhaseMonitor(R_STAR, study={"units": {}})
