"""ε* estimators: interpolation, extrapolation, the clean probe, failures, JSON, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from advhooks import parse_eps_list
from advhooks.benchmark import CleanBenchmark, Recipe
from advhooks.cli import app
from advhooks.kit import estimate as E
from advhooks.kit.data import load_digits
from advhooks.kit.estimate.crossing import interpolate_crossing
from advhooks.kit.presets import get_preset
from advhooks.kit.training import record_clean_benchmark

PRESET = get_preset("digits-mlp")


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


@pytest.fixture(scope="module")
def bench(digits):
    torch.manual_seed(0)
    train, test = digits
    return record_clean_benchmark(PRESET.model(), train, test, recipe=Recipe(epochs=12),
                                  training={"preset": "digits-mlp"})


@pytest.mark.parametrize("bad,match", [([], "must not be empty"), ([0.1, 0.05], "sorted"),
                                       ([0.1, 0.1], "duplicates"), ([-0.1, 0.1], ">= 0"),
                                       ([float("nan")], "finite")])
def test_eps_grid_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        E.check_eps_grid(bad)


def test_eps_lists_are_written_naturally():
    assert parse_eps_list("0.5/255,1/255, 2/255") == pytest.approx([0.5 / 255, 1 / 255, 2 / 255])
    with pytest.raises(ValueError, match="8/255"):
        parse_eps_list("8/255,abc")
    with pytest.raises(ValueError, match="empty"):
        parse_eps_list("1/255,,2/255")


def test_interpolation_of_the_crossing():
    value, bracket = interpolate_crossing([0.0, 1.0, 2.0], [0.1, 0.3, 0.7], 0.5)
    assert value == pytest.approx(1.5) and bracket == (1.0, 2.0)
    assert interpolate_crossing([0.0, 1.0], [0.6, 0.7], 0.5) == (None, None)


def test_clean_probe_bounds_and_first_order(bench, digits):
    train, _ = digits
    ladder = [e / 255 for e in (1, 2, 4, 8, 16, 32)]
    est = E.estimate_clean_probe(bench.load_weights_into(PRESET.model()), train, bench, ladder)
    losses = [p["loss"] for p in est.points]
    assert losses == sorted(losses)
    passing = [p["eps"] for p in est.points if p["loss"] <= bench.clean_test_loss]
    assert est.lower_bound == (max(passing) if passing else None)
    assert est.first_order == pytest.approx(bench.generalization_gap / est.mean_grad_dual_norm)
    assert est.forward_samples > 0 and est.backward_samples > 0 and est.seconds > 0
    json.loads(est.to_json())


def test_finetune_brackets_the_crossing_and_is_reproducible(bench, digits):
    train, _ = digits
    settings = E.FinetuneSettings(epochs=2, runs=2, seed=3)
    a = E.estimate_finetune(PRESET.model, E.EstimationData(train), bench, [2 / 255], settings, mean_grad_dual_norm=2.0)
    b = E.estimate_finetune(PRESET.model, E.EstimationData(train), bench, [2 / 255], settings, mean_grad_dual_norm=2.0)
    assert a.value is not None and a.value == b.value and a.points == b.points and a.interval == b.interval
    means = {}
    for p in a.points:
        means.setdefault(p["eps"], []).append(p["loss"])
    means = {e: sum(v) / len(v) for e, v in means.items()}
    # The ladder moved by factors of 1.5 from 2/255 until the mean R-hats lay on both sides of R*(0), then stopped:
    # one bracket one step wide, interpolated.
    ladder = sorted(means)
    assert 2 / 255 in ladder and ladder == pytest.approx([ladder[0] * 1.5 ** k for k in range(len(ladder))])
    below = [e for e in ladder if means[e] <= bench.clean_test_loss]
    above = [e for e in ladder if means[e] > bench.clean_test_loss]
    assert below and above and min(above) / max(below) == pytest.approx(1.5)
    assert a.bracket == (max(below), min(above)) and a.bracket[0] < a.value <= a.bracket[1] and not a.extrapolated
    assert len(a.per_run) == 2 and a.spread is not None and len(a.points) == 2 * len(ladder)
    if len(ladder) > 1:  # the slope between the two smallest strengths, against the mean gradient norm given
        slope = (means[ladder[1]] - means[ladder[0]]) / (ladder[1] - ladder[0])
        assert a.consistency == pytest.approx(slope / 2.0)
    assert json.loads(a.to_json())["settings"]["growth"] == 1.5


def test_grid_interpolates_or_says_it_does_not_bracket(bench, digits):
    train, test = digits
    data = E.EstimationData(train, test)
    est = E.estimate_grid(PRESET.model, data, bench, [1 / 255, 64 / 255], E.GridSettings(recipe=Recipe(epochs=3)))
    losses = [p["loss"] for p in est.points]
    assert all(p["epoch"] in (1, 2, 3) for p in est.points)
    if est.value is not None:
        assert est.bracket[0] < est.value < est.bracket[1]
    else:
        assert est.warnings and "does not bracket" in est.warnings[0]
    assert losses[1] > losses[0]
    high = E.estimate_grid(PRESET.model, data, bench, [128 / 255, 160 / 255],
                           E.GridSettings(recipe=Recipe(epochs=1), include_clean=False))
    assert high.value is None and any("eps* < " in w for w in high.warnings) and high.bracket == (None, 128 / 255)
    # (1 epoch at 128/255 leaves the model at chance: those runs are said to be not learning, and kept as points
    # above every eps where a run learned, the clean run at 0)
    assert all(p.get("state", "").startswith("not learning") for p in high.points)


def test_non_finite_losses_mark_the_run_failed(bench, digits):
    train, test = digits
    est = E.estimate_finetune(PRESET.model, E.EstimationData(train), bench, [1 / 255, 2 / 255],
                              E.FinetuneSettings(epochs=2, recipe=Recipe(lr=1e30)))
    assert all(p.get("failed") == "non-finite losses" for p in est.points) and len(est.points) == 2
    assert est.value is None and any("failed" in w for w in est.warnings)
    assert any("no usable point" in w for w in est.warnings)


def test_verify_is_one_grid_run_at_the_estimate(bench, digits):
    train, test = digits
    data = E.EstimationData(train, test)
    est = E.estimate_eps_star("finetune", bench, PRESET.model, data, E.FinetuneSettings(epochs=2, seed=1),
                              eps=[2 / 255], verify=True)
    check = est.verification
    assert check["eps"] == est.value and check["regime"] in ("clean-like", "near eps*", "above eps*", "eps >> eps*")
    assert check["confirms"] == (check["regime"] == "near eps*") and check["seconds"] > 0
    low, high = check["ratio_interval"]
    assert low <= check["ratio"] <= high
    assert "check: run from scratch" in est.summary()
    # Exactly the grid's point at that strength: same seed, same recipe, same R-hat.
    grid = E.estimate_grid(PRESET.model, data, bench, [est.value], E.GridSettings(seed=1))
    assert grid.points[0]["loss"] == pytest.approx(check["rhat"])
    assert check["ratio"] == pytest.approx(check["rhat"] / bench.clean_test_loss)


def test_finetune_refuses_what_it_cannot_use(bench, digits, tmp_path):
    train, _ = digits
    path = bench.save(tmp_path / "b.safetensors")
    with pytest.raises(ValueError, match="has no weights"):
        E.estimate_finetune(PRESET.model, E.EstimationData(train), CleanBenchmark.read(path), [0.01, 0.02])
    with pytest.raises(ValueError, match="growth must be > 1"):
        E.FinetuneSettings(growth=1.0)
    with pytest.raises(ValueError, match="max_points"):
        E.estimate_finetune(PRESET.model, E.EstimationData(train), bench, [0.01, 0.02, 0.03],
                            E.FinetuneSettings(max_points=2))
    with pytest.raises(ValueError, match="verify checks a fine-tune"):
        E.estimate_eps_star("grid", bench, PRESET.model, E.EstimationData(train, train), verify=True)
    with pytest.raises(TypeError, match="method 'grid' takes GridSettings"):
        E.estimate_eps_star("grid", bench, PRESET.model, E.EstimationData(train, train), E.FinetuneSettings())
    with pytest.raises(ValueError, match="the grid needs test_set"):
        E.estimate_eps_star("grid", bench, PRESET.model, E.EstimationData(train))


runner = CliRunner()


def test_cli_estimate_with_json_and_plot(bench, tmp_path):
    path = bench.save(tmp_path / "clean.safetensors")
    result = runner.invoke(app, ["estimate-eps-star", "--benchmark", str(path), "--method", "finetune",
                                 "--eps", "2/255,4/255,6/255", "--epochs", "2", "--json", str(tmp_path / "e.json"),
                                 "--plot", str(tmp_path / "e.png"), "-q"])
    assert result.exit_code == 0, result.output
    assert "eps*" in result.output and "slope / mean grad dual norm" in result.output
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["method"] == "finetune" and data["settings"]["eps"] == pytest.approx([2 / 255, 4 / 255, 6 / 255])
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    probe = runner.invoke(app, ["estimate-eps-star", "--benchmark", str(path), "--method", "clean-probe", "-q"])
    assert probe.exit_code == 0 and "clean-probe lower bound" in probe.output


def test_cli_says_when_the_probe_disagrees_with_the_fine_tune(bench, tmp_path):
    """Without --eps the clean probe starts the ladder and gives its two figures: the CLI prints the disagreement
    exactly when the first-order value lies outside the fine-tune's band or the lower bound above it."""
    path = bench.save(tmp_path / "clean.safetensors")
    result = runner.invoke(app, ["estimate-eps-star", "--benchmark", str(path), "--method", "finetune", "--epochs", "2",
                                 "--json", str(tmp_path / "e.json"), "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "e.json").read_text())
    low, high = data["interval"]
    disagrees = not low <= data["first_order"] <= high or data["lower_bound"] > high
    assert (data["disagreement"] is not None) == disagrees
    assert ("DISAGREEMENT" in result.output) == disagrees


def test_cli_fingerprint_mismatch_warns_or_fails(bench, tmp_path):
    path = bench.save(tmp_path / "clean.safetensors")
    args = ["estimate-eps-star", "--benchmark", str(path), "--preset", "digits-mlp", "--width", "16",
            "--method", "clean-probe", "--eps", "1/255,2/255", "-q"]
    strict = runner.invoke(app, args + ["--strict"])
    assert strict.exit_code == 2 and "recorded on something else" in strict.output
    loose = runner.invoke(app, args)
    assert "warning: the benchmark was recorded on something else" in loose.output


@pytest.mark.parametrize("args,match", [
    (["--method", "magic"], "--method must be"),
    (["--eps", "2/255,1/255"], "sorted"),
    (["--eps", "1/255,1/255"], "duplicates"),
    (["--eps", ""], "empty"),
    (["--norm", "l1"], "--norm must be"),
    (["--runs", "0"], "--runs must be >= 1"),
])
def test_cli_bad_input(bench, tmp_path, args, match):
    path = bench.save(tmp_path / "clean.safetensors")
    result = runner.invoke(app, ["estimate-eps-star", "--benchmark", str(path)] + args)
    assert result.exit_code == 2 and match in result.output, result.output


@pytest.mark.slow
def test_finetune_tracks_the_grid_on_digits(digits):
    """The full comparison (about a minute): fine-tune within 35 % of the grid on the digits preset."""
    train, test = digits
    torch.manual_seed(0)
    full = record_clean_benchmark(PRESET.model(), train, test, recipe=PRESET.recipe)
    probe = E.estimate_clean_probe(full.load_weights_into(PRESET.model()), train, full,
                                   [e / 255 for e in (0.5, 1, 2, 4, 8, 16, 32, 64)])
    ft = E.estimate_finetune(PRESET.model, E.EstimationData(train), full, E.finetune_start(probe))
    grid = E.estimate_grid(PRESET.model, E.EstimationData(train, test), full, [e / 255 for e in (4, 8, 12, 16, 24)],
                           E.GridSettings(recipe=PRESET.recipe))
    assert grid.value is not None and ft.value is not None
    assert probe.lower_bound <= grid.value * 1.1
    assert abs(ft.value / grid.value - 1) < 0.35


def test_verify_never_confirms_a_run_that_diverged(bench, digits):
    from advhooks.kit.estimate.verify import verify_estimate

    train, test = digits
    est = E.EpsStarEstimate("finetune", 4 / 255, bench.clean_test_loss, "linf")
    verify_estimate(est, PRESET.model, E.EstimationData(train, test), bench,
                    E.GridSettings(recipe=Recipe(epochs=2, lr=1e30), steps=2))
    check = est.verification
    assert check["regime"] == "diverged" and not check["confirms"] and "says nothing" in check["meaning"]
    assert any("reads diverged" in w for w in est.warnings)
