"""Mode connectivity (the paper's Figure 4): the curve, the barriers, the contour, the CLI and the run record."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from advhooks import FGM, PGD, PhaseMonitor
from advhooks.benchmark import CleanBenchmark, Recipe
from advhooks.cli import app
from advhooks.evaluation import evaluate_adversarial_loss
from advhooks.kit.connectivity import CurveSettings, bezier_coefficients, connectivity, path_barrier, path_ridge
from advhooks.kit.data import load_digits
from advhooks.kit.estimate import make_attack
from advhooks.kit.presets import get_preset
from advhooks.kit.training import record_clean_benchmark, train_adversarially

runner = CliRunner()


def _train(eps: float, epochs: int, train_set) -> nn.Module:
    """digits-mlp trained from one initialisation (seed 0) at ``eps``: the clean run when ``eps`` is 0."""
    torch.manual_seed(0)
    model = get_preset("digits-mlp").model()
    loader = DataLoader(train_set, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    train_adversarially(model, loader, make_attack(PGD, eps, "linf"), eps, Recipe(epochs=epochs, lr=0.05))
    return model


@pytest.fixture(scope="module")
def digits_runs():
    """A clean digits-mlp and two adversarial runs from its initialisation: eps 1/255 (well below eps*, which
    is about 7-20/255 on this preset) and 64/255 (well above)."""
    train, _ = load_digits()
    return train, {eps: _train(eps, 15, train) for eps in (0.0, 1 / 255, 64 / 255)}


def _loaders(train):
    return (DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(1)),
            DataLoader(train, batch_size=512))


def test_bezier_coefficients_are_the_bernstein_weights():
    for bends in (1, 2, 3):
        for t in (0.0, 0.3, 1.0):
            coeffs = bezier_coefficients(t, bends)
            assert len(coeffs) == bends + 2 and math.isclose(sum(coeffs), 1.0)
        assert bezier_coefficients(0.0, bends)[0] == 1.0 and bezier_coefficients(1.0, bends)[-1] == 1.0
    assert bezier_coefficients(0.25, 1) == pytest.approx([0.5625, 0.375, 0.0625])
    assert path_barrier([0.2, 0.9, 0.4]) == pytest.approx(0.6)
    assert path_barrier([0.2, 0.3, 0.4]) == pytest.approx(0.1)  # the largest loss is an end point's
    assert path_ridge([0, 0.5, 1], [0.2, 0.3, 0.4]) == pytest.approx(0.0)  # ... and there is no ridge
    assert path_ridge([0, 0.5, 1], [0.2, 0.9, 0.4]) == pytest.approx(0.6)
    assert path_ridge([0, 0.5, 1], [0.2, 0.1, 0.4]) == 0.0
    with pytest.raises(ValueError, match="two end points"):
        path_barrier([0.1])


def test_the_straight_line_barrier_grows_from_eps_well_below_eps_star_to_well_above(digits_runs):
    train, runs = digits_runs
    loader, evaluation = _loaders(train)
    below = connectivity(runs[0.0], runs[1 / 255], loader, CurveSettings(epochs=5), eval_loader=evaluation)
    above = connectivity(runs[0.0], runs[64 / 255], loader, CurveSettings(epochs=5), eval_loader=evaluation)
    assert below.line_barrier < 0.02, below.line_loss
    assert above.line_barrier > 0.2 and above.line_barrier > 10 * below.line_barrier, (below.line_loss,
                                                                                       above.line_loss)
    assert above.distance > 3 * below.distance
    # The barrier grows because the adversarial end leaves the clean basin; no ridge rises above the ends' chord.
    assert 0 <= above.line_ridge < 0.5 * above.line_barrier
    # The trained curve runs below the straight line between the ends, where there is room to.
    middle = len(above.t) // 2
    assert above.curve_loss[middle] < above.line_loss[middle]


def test_the_ends_of_both_paths_are_the_two_models_and_neither_model_changes(digits_runs):
    train, runs = digits_runs
    clean, adv = runs[0.0], runs[64 / 255]
    clean.train()
    adv.eval()
    before = [copy.deepcopy(m.state_dict()) for m in (clean, adv)]
    loader, evaluation = _loaders(train)
    result = connectivity(clean, adv, loader, CurveSettings(epochs=1, points=5), eval_loader=evaluation)
    for model, state in zip((clean, adv), before, strict=True):
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert clean.training and not adv.training  # modes untouched
    expected = [evaluate_adversarial_loss(m, train, None, batch_size=512)[0].mean for m in (clean, adv)]
    assert result.line_loss[0] == pytest.approx(expected[0], rel=1e-5)
    assert result.line_loss[-1] == pytest.approx(expected[1], rel=1e-5)
    assert result.curve_loss[0] == pytest.approx(result.line_loss[0]) and result.t == [0, 0.25, 0.5, 0.75, 1]
    json.loads(result.to_json())


def test_batchnorm_statistics_are_recomputed_at_every_point(trained_digits_cnn):
    trained, test = trained_digits_cnn
    model = copy.deepcopy(trained)
    images = DataLoader(test, batch_size=256)
    with torch.no_grad():  # statistics that belong to no weights on the path
        model.bn.running_mean.add_(1.0)
        model.bn.running_var.mul_(4.0)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.fc.bias.add_(0.01)
    result = connectivity(model, other, images, CurveSettings(epochs=1, points=2))
    fresh = copy.deepcopy(model)
    fresh.bn.reset_running_stats()
    fresh.bn.momentum = None
    fresh.train()
    with torch.no_grad():
        for x, _ in images:
            fresh(x)
    recomputed = evaluate_adversarial_loss(fresh, images, None)[0].mean
    stale = evaluate_adversarial_loss(model, images, None)[0].mean
    assert result.line_loss[0] == pytest.approx(recomputed, rel=1e-5)
    assert abs(stale - recomputed) > 0.1
    assert torch.equal(model.bn.running_mean, trained.bn.running_mean + 1.0)  # the caller's model is untouched


def test_the_contour_lies_in_the_plane_of_the_three_points(digits_runs):
    train, runs = digits_runs
    loader, evaluation = _loaders(train)
    result = connectivity(runs[0.0], runs[64 / 255], loader, CurveSettings(epochs=3, resolution=5, points=5),
                          eval_loader=evaluation)
    contour = result.contour
    assert len(contour["x"]) == len(contour["y"]) == 5 and all(len(row) == 5 for row in contour["loss"])
    assert contour["points"]["clean"] == pytest.approx([0.0, 0.0], abs=1e-4)
    assert contour["points"]["adversarial"] == pytest.approx([result.distance, 0.0], abs=1e-3)
    assert contour["points"]["middle"][1] > 0
    # The curve starts and ends at the end points, and the plane's loss is low by the clean model.
    assert contour["curve"][0] == pytest.approx([0.0, 0.0], abs=1e-4)
    assert contour["curve"][-1] == pytest.approx([result.distance, 0.0], abs=1e-3)
    column = lambda x: min(range(5), key=lambda j: abs(contour["x"][j] - x))  # noqa: E731
    row = min(range(5), key=lambda i: abs(contour["y"][i]))
    assert contour["loss"][row][column(0.0)] < contour["loss"][row][column(result.distance)]


def test_connectivity_refuses_models_of_two_architectures_and_bad_settings():
    small, wide = get_preset("digits-mlp").model(), get_preset("digits-mlp").model(32)
    data = [(torch.rand(4, 64), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(ValueError, match="not of one architecture"):
        connectivity(small, wide, data, CurveSettings(epochs=1))
    with pytest.raises(ValueError, match="resolution must be 0"):
        connectivity(small, small, data, CurveSettings(resolution=1))
    with pytest.raises(ValueError, match="points must be"):
        connectivity(small, small, data, CurveSettings(points=1))
    with pytest.raises(ValueError, match="the same weights"):
        connectivity(small, small, data, CurveSettings(epochs=1))


def test_save_record_with_weights_writes_the_early_stopped_weights_beside_the_record(tmp_path):
    train, test = load_digits()
    bench = CleanBenchmark(1.0, 0.1, 0.9, 0.9, 0.95, test_loss_stderr=0.02, n_test=450, n_train=1347)
    torch.manual_seed(0)
    model = get_preset("digits-mlp").model()
    monitor = PhaseMonitor(bench, eps=2 / 255, total_epochs=2, verbose=False)
    with pytest.raises(ValueError, match="evaluate_with"):
        monitor.save_record(tmp_path / "none.json", weights=True)
    monitor.evaluate_with(model, train, test, train_subset=128)
    loader = DataLoader(train, batch_size=128, shuffle=True)
    train_adversarially(model, loader, PGD(2 / 255, steps=2), 2 / 255, Recipe(epochs=2, lr=0.05), monitor=monitor)
    path = monitor.save_record(tmp_path / "run.json", weights=True)
    record = json.loads(path.read_text())
    assert record["checkpoint"] == "run.safetensors" and (tmp_path / "run.safetensors").exists()
    from advhooks.kit.checkpoints import read_checkpoint

    state, source = read_checkpoint(path)
    assert source.endswith("run.safetensors") and set(state) == set(model.state_dict())


def test_the_connectivity_command_from_a_benchmark_and_a_checkpoint_or_run_record(tmp_path):
    train, test = load_digits()
    torch.manual_seed(0)
    bench = record_clean_benchmark(get_preset("digits-mlp").model(), train, test, recipe=Recipe(epochs=3),
                                   training={"preset": "digits-mlp", "split_seed": 0, "lr": 0.05, "batch_size": 64})
    bench.save(tmp_path / "clean.safetensors")
    adv = bench.load_weights_into(get_preset("digits-mlp").model())
    train_adversarially(adv, DataLoader(train, batch_size=64), make_attack(FGM, 16 / 255, "linf"), 16 / 255,
                        Recipe(epochs=1, lr=0.05))
    from safetensors.torch import save_file

    save_file(adv.state_dict(), str(tmp_path / "adv.safetensors"))
    common = ["connectivity", "--benchmark", str(tmp_path / "clean.safetensors"), "--epochs", "1", "--points", "3",
              "--device", "cpu", "-q"]
    res = runner.invoke(app, [*common, "--checkpoint", str(tmp_path / "adv.safetensors"), "--resolution", "3",
                              "--json", str(tmp_path / "c.json"), "--plot", str(tmp_path / "c.png")])
    assert res.exit_code == 0, res.output
    assert "straight line: max" in res.output and "barrier" in res.output and "ridge" in res.output
    saved = json.loads((tmp_path / "c.json").read_text())
    assert len(saved["contour"]["loss"]) == 3 and saved["settings"]["checkpoint"].endswith("adv.safetensors")
    assert (tmp_path / "c.png").stat().st_size > 0
    # A run record naming its weights is a checkpoint too; one naming none is refused in one line.
    (tmp_path / "run.json").write_text(json.dumps({"schema": "advhooks.run/1", "checkpoint": "adv.safetensors"}))
    res = runner.invoke(app, [*common, "--checkpoint", str(tmp_path / "run.json"), "--resolution", "0"])
    assert res.exit_code == 0, res.output
    (tmp_path / "bare.json").write_text(json.dumps({"schema": "advhooks.run/1"}))
    res = runner.invoke(app, [*common, "--checkpoint", str(tmp_path / "bare.json")])
    assert res.exit_code == 2 and "names no weights" in res.output
    res = runner.invoke(app, [*common, "--checkpoint", str(tmp_path / "adv.safetensors"), "--width", "32"])
    assert res.exit_code == 2 and "does not match" in res.output
