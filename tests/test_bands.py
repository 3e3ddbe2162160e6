"""Bands: ρ's interval in the monitor, ε*'s interval from run records, and their coverage on a known truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from advhooks import PGD, PhaseMonitor
from advhooks.benchmark import CleanBenchmark
from advhooks.cli import app
from advhooks.kit import estimate as E
from advhooks.monitor import RUN_RECORD_SCHEMA
from advhooks.uncertainty import MeanEstimate, ratio_interval


def _benchmark(r_star=0.2, stderr=0.01, n=400, seed=0):
    rng = np.random.default_rng(seed)
    losses = torch.tensor(rng.normal(r_star, stderr * math.sqrt(n), n)).float()
    losses += r_star - losses.mean()  # the stored per-sample losses have exactly this mean
    return CleanBenchmark(float(losses.double().mean()), 0.1, 0.1, 0.9, 0.95, test_loss_stderr=stderr, n_test=n,
                          n_train=1000, created="2026-01-01T00:00:00+00:00", test_losses=losses,
                          model={"hash": "abc"}, dataset={"test_labels_hash": "def"})


def _record(bench, eps, loss, stderr, run=0, norm="linf", recipe=None):
    return {"schema": RUN_RECORD_SCHEMA, "eps": eps, "norm": norm, "attack": "PGD", "epochs": [],
            "early_stopped_epoch": 5, "rhat": {"epoch": 5, "mean": loss, "stderr": stderr, "n": 512,
                                               "population": 1000, "kind": "fixed weights"},
            "recipe": {"batch_size": 64, "run": run, **(recipe or {})},
            "benchmark": {"clean_test_loss": bench.clean_test_loss, "created": bench.created, "model_hash": "abc",
                          "test_labels_hash": "def"}, "level": 0.8}


def test_the_80_percent_band_covers_a_known_crossing_about_80_percent_of_the_time():
    # Truth: R̂(ε) = 0.1 + 10 ε crosses R*(0) = 0.2 at ε* = 0.01. Each draw observes R*(0) (s.e. 0.01, plus another
    # clean run's spread) and one run at each of five ε: its sampling error (s.e. 0.01) and the run-to-run spread
    # the records estimator assumes (RUN_SPREAD, relative), with noise of exactly that size; the 80 % band covers.
    from advhooks.kit.estimate import spread

    grid, true_eps_star, covered = [0.004, 0.008, 0.012, 0.016, 0.02], 0.01, 0
    rng = np.random.default_rng(123)
    run_sd = spread.RUN_SPREAD["records"]
    for draw in range(200):
        bench = _benchmark(r_star=0.2 + rng.normal(0, 0.01 * math.sqrt(1 + spread.BENCHMARK_SPREAD ** 2)),
                           stderr=0.01, seed=draw)
        records = [_record(bench, e, (0.1 + 10 * e) * (1 + run_sd * rng.standard_normal()) + rng.normal(0, 0.01),
                           0.01) for e in grid]
        est = E.estimate_from_records(records, bench, include_clean=False, draws=400, seed=draw)
        assert est.interval is not None
        # (a draw whose largest point fell to R*(0) has eps* beyond the grid: no value, and a band that says so)
        assert est.value is None or est.interval[0] <= est.value <= est.interval[1]
        covered += est.interval[0] <= true_eps_star <= est.interval[1]
    assert 0.70 <= covered / 200 <= 0.92, covered


def test_records_of_another_benchmark_norm_or_recipe_are_refused():
    bench, other = _benchmark(), _benchmark(r_star=0.3)
    good = [_record(bench, e, 0.15 + 10 * e, 0.005) for e in (0.002, 0.006, 0.01)]
    assert E.estimate_from_records(good, bench).value is not None
    with pytest.raises(ValueError, match="another benchmark: clean_test_loss"):
        E.estimate_from_records(good + [_record(other, 0.02, 0.4, 0.01)], bench)
    with pytest.raises(ValueError, match="mix norms"):
        E.estimate_from_records(good + [_record(bench, 0.02, 0.4, 0.01, norm="l2")], bench)
    with pytest.raises(ValueError, match="different recipes"):
        E.estimate_from_records(good + [_record(bench, 0.02, 0.4, 0.01, recipe={"batch_size": 128})], bench)
    with pytest.raises(ValueError, match="not an advhooks run record"):
        E.estimate_from_records([{"eps": 0.1}], bench)


def test_runs_from_the_cli_and_a_refused_record(tmp_path):
    bench = _benchmark()
    path = bench.save(tmp_path / "clean.safetensors")
    bench = CleanBenchmark.load(path)
    for i, e in enumerate((0.002, 0.006, 0.01, 0.014)):
        (tmp_path / f"r{i}.json").write_text(json.dumps(_record(bench, e, 0.15 + 10 * e, 0.005)))
    out = CliRunner().invoke(app, ["estimate-eps-star", "--benchmark", str(path), "--method", "records",
                                   "--records", str(tmp_path / "r*.json"), "--json", str(tmp_path / "e.json")])
    assert out.exit_code == 0, out.output
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["method"] == "records" and data["value"] == pytest.approx(0.005, rel=1e-6)
    low, high = data["interval"]
    assert low < data["value"] < high and data["level"] == 0.8 and "80% band" in out.output
    (tmp_path / "r9.json").write_text(json.dumps(_record(bench, 0.02, 0.4, 0.01, norm="l2")))
    refused = CliRunner().invoke(app, ["estimate-eps-star", "--benchmark", str(path), "--method", "records",
                                       "--records", str(tmp_path / "r*.json")])
    assert refused.exit_code == 2 and "mix norms" in refused.output


def test_ratio_interval_is_the_delta_method_on_the_log_scale():
    rho, low, high = ratio_interval(MeanEstimate(0.3, 0.015, 500, 1000), MeanEstimate(0.2, 0.01, 400, 400), 0.8)
    half = 1.2815515655446004 * math.sqrt(0.05 ** 2 + 0.05 ** 2)
    assert rho == pytest.approx(1.5) and low == pytest.approx(1.5 * math.exp(-half))
    assert high == pytest.approx(1.5 * math.exp(half))


def test_the_monitor_evaluates_the_early_stopped_model_at_fixed_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(200, 1, 4, 4, generator=g), torch.randint(0, 4, (200,), generator=g)
    train = torch.utils.data.TensorDataset(x, y)
    attack = PGD(0.05, steps=2, random_start=False)
    monitor = PhaseMonitor(1.0, eps=0.05, warmup_epochs=0, attack=attack)
    monitor.evaluate_with(model, train, train_subset=64)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    snapshots = []
    for test_loss in (0.9, 0.7, 0.8):  # the loop's own adversarial test losses: epoch 2 is θ̂
        for x, y in torch.utils.data.DataLoader(train, batch_size=50):
            loss = nn.functional.cross_entropy(model(attack(model, x, y)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            monitor.update(loss.detach(), batch_size=50)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        report = monitor.epoch_end(adv_test_loss=test_loss)
    assert report.early_stopped_epoch == 2 and report.rhat_kind == "fixed weights"
    theta_hat = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    theta_hat.load_state_dict(snapshots[1])
    from advhooks.evaluation import evaluate_adversarial_loss

    expected, _ = evaluate_adversarial_loss(theta_hat, train, attack, subset=64)
    assert report.rhat == pytest.approx(expected.mean) and report.rhat_stderr == pytest.approx(expected.stderr)
    assert report.ratio == pytest.approx(expected.mean / 1.0)
    assert all(torch.equal(v, snapshots[2][k]) for k, v in model.state_dict().items())  # weights put back
    record = monitor.record()
    assert record["early_stopped_epoch"] == 2 and record["rhat"]["kind"] == "fixed weights"
    assert [e["adv_test_loss"] for e in record["epochs"]] == [0.9, 0.7, 0.8]


def test_a_monitored_run_is_drawn_with_both_bands(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'advhooks[plot]'")
    monitor = PhaseMonitor(_benchmark(), eps=8 / 255, warmup_epochs=1)
    for loss, test_loss in ((0.5, 0.6), (0.3, 0.45), (0.25, 0.5)):
        monitor.update(torch.tensor(loss), batch_size=10)
        monitor.epoch_end(adv_test_loss=test_loss)
    path = monitor.plot(tmp_path / "run.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and monitor.record()["early_stopped_epoch"] == 2
