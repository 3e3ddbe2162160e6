"""The eps* study (Table 3) and the FGSM instability probe (Table 2): fractions, units, bands, CLI."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from advhooks.benchmark import Recipe
from advhooks.cli import app
from advhooks.kit.data import load_digits, train_fraction
from advhooks.kit.presets import get_preset
from advhooks.kit.study import (
    StudyRow,
    StudySettings,
    compare,
    fgsm_threshold,
    format_study,
    run_study,
)
from advhooks.kit.study import run as study_run
from advhooks.kit.study import summary as study_summary

runner = CliRunner()


def test_train_fractions_are_nested_and_drawn_with_the_split_seed_only():
    train, _ = load_digits()
    assert train_fraction(train, 1.0) is train
    torch.manual_seed(1)
    half = train_fraction(train, 0.5, split_seed=3)
    torch.manual_seed(2)  # the runs' seed does not move the draw
    again = train_fraction(train, 0.5, split_seed=3)
    quarter = train_fraction(train, 0.25, split_seed=3)
    assert half.indices == again.indices and len(half) == round(0.5 * len(train))
    assert set(quarter.indices) <= set(half.indices)
    assert train_fraction(train, 0.5, split_seed=4).indices != half.indices
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        train_fraction(train, 1.5)


def test_study_settings_refuse_what_cannot_run():
    with pytest.raises(ValueError, match="at least one width"):
        StudySettings(widths=(), fractions=(1.0,), seeds=(0,))
    with pytest.raises(ValueError, match="train fractions"):
        StudySettings(widths=(8,), fractions=(0.0,), seeds=(0,))
    with pytest.raises(ValueError, match="method must be"):
        StudySettings(widths=(8,), fractions=(1.0,), seeds=(0,), method="runs")
    with pytest.raises(ValueError, match="seeds must be distinct"):
        StudySettings(widths=(8,), fractions=(1.0,), seeds=(0, 0))
    with pytest.raises(ValueError, match="widths must be distinct"):
        StudySettings(widths=(8, 8), fractions=(1.0,), seeds=(0,))
    with pytest.raises(ValueError, match="L-inf"):
        StudySettings(widths=(8,), fractions=(1.0,), seeds=(0,), norm="l2", fgsm_eps=(0.1,))
    with pytest.raises(ValueError, match="level"):
        StudySettings(widths=(8,), fractions=(1.0,), seeds=(0,), level=1.5)
    settings = StudySettings(widths=(8, 16), fractions=(1.0, 0.5), seeds=(0, 1), fgsm_eps=(0.1,))
    assert len(settings.units()) == 2 * 2 * 2 + 2 * 2


def test_the_band_of_the_mean_over_seeds():
    # One seed: its own band, around its value.
    mean, band = study_summary._combined_band([0.03], [(0.02, 0.05)], 0.8)
    assert mean == pytest.approx(0.03) and band == pytest.approx((0.02, 0.05))
    # Seeds that disagree more than their bands say: the spread of ln eps* sets the band (Student's t, k - 1 = 2),
    # around the geometric mean.
    values = [0.02, 0.03, 0.04]
    logs = np.log(values)
    half = stats.t.ppf(0.9, 2) * np.std(logs, ddof=1) / math.sqrt(3)
    mean, band = study_summary._combined_band(values, [(v - 1e-4, v + 1e-4) for v in values], 0.8)
    centre = math.exp(logs.mean())
    assert mean == pytest.approx(centre) and band == pytest.approx((centre * math.exp(-half), centre * math.exp(half)))
    # Seeds that agree: their own bands are the floor, not narrowed by sqrt(k) (R*(0)'s test-set error is shared).
    agree = [0.03, 0.03 * math.exp(1e-6), 0.03 * math.exp(-1e-6)]
    _, (low, high) = study_summary._combined_band(agree, [(v / 1.5, v * 2) for v in agree], 0.8)
    assert low == pytest.approx(0.03 / 1.5) and high == pytest.approx(0.03 * 2)


def _row(width, fraction, value, band):
    return StudyRow(width, fraction, 100, [0], 0.1, 0.01, 0.05, value, band, [value])


def test_compare_says_which_differences_the_bands_resolve():
    rows = [_row(16, 1.0, 0.02, (0.018, 0.022)), _row(16, 0.5, 0.025, (0.023, 0.027)),
            _row(64, 1.0, 0.03, (0.028, 0.032)), _row(64, 0.5, 0.031, (0.029, 0.033))]
    out = {(c["from"], c["to"]): c["overlap"] for c in compare(rows)}
    assert out[("width 16, fraction 1", "width 64, fraction 1")] is False
    assert out[("width 16, fraction 0.5", "width 64, fraction 0.5")] is False
    assert out[("width 16, fraction 1", "width 16, fraction 0.5")] is False
    assert out[("width 64, fraction 1", "width 64, fraction 0.5")] is True
    assert len(out) == 4


def test_a_tiny_study_runs_resumes_from_its_units_and_combines_shards(tmp_path, monkeypatch):
    train, test = load_digits()
    preset = get_preset("digits-mlp")
    settings = StudySettings(widths=(8, 32), fractions=(1.0, 0.5), seeds=(0, 1), recipe=Recipe(epochs=4),
                             finetune_epochs=2, customary_eps=8 / 255)
    first = run_study(settings, preset.model, train, test, units_dir=tmp_path / "a", shard=(0, 2))
    assert not first["complete"] and len(first["units"]) == 4 and "rows" not in first
    second = run_study(settings, preset.model, train, test, units_dir=tmp_path / "a", shard=(1, 2))
    assert second["complete"] and len(list((tmp_path / "a").glob("*.json"))) == 8
    rows = second["rows"]
    assert [(r["width"], r["fraction"]) for r in rows] == [(8, 1.0), (8, 0.5), (32, 1.0), (32, 0.5)]
    assert [r["n_train"] for r in rows] == [len(train), round(len(train) / 2)] * 2
    units = second["units"]
    seeds = [units[f"run-width32-fraction0.5-seed{s}.json"] for s in (0, 1)]
    assert rows[3]["clean_test_loss"] == pytest.approx(np.mean([u["benchmark"]["clean_test_loss"] for u in seeds]))
    assert rows[3]["per_seed"] == [u["estimate"]["value"] for u in seeds]
    assert all(u["estimate"]["method"] == "finetune" for u in seeds)
    # The seeds differ (their benchmarks do); the fractions share their samples across seeds.
    assert seeds[0]["benchmark"]["clean_test_loss"] != seeds[1]["benchmark"]["clean_test_loss"]
    row = rows[3]
    if row["eps_star"] is not None:
        assert row["customary_ratio"] == pytest.approx((8 / 255) / row["eps_star"])
    # Rerunning over the gathered units only combines: nothing is trained again, the answer is the same.
    monkeypatch.setattr(study_run, "run_unit", lambda *args, **kwargs: pytest.fail("a stored unit was rerun"))
    again = run_study(settings, preset.model, train, test, units_dir=tmp_path / "a")
    assert again["rows"] == rows
    assert "width 8, fraction 1 -> width 32, fraction 1" in format_study(again)
    monkeypatch.undo()
    other = StudySettings(**{**settings.__dict__, "recipe": Recipe(epochs=5)})
    with pytest.raises(ValueError, match="other settings"):
        run_study(other, preset.model, train, test, units_dir=tmp_path / "a")
    # Another architecture under the same flags is not silently given the stored answers.
    with pytest.raises(ValueError, match="other model or data"):
        run_study(settings, lambda w: get_preset("digits-cnn").model(w), train, test, units_dir=tmp_path / "a")
    # Adding the FGSM probe to a finished study reuses its runs: only the probe's units are new.
    probed = StudySettings(**{**settings.__dict__, "fgsm_eps": (2 / 255,), "widths": (8,), "fractions": (0.5,)})
    added = run_study(probed, preset.model, train, test, units_dir=tmp_path / "a")
    assert added["complete"] and added["units"]["run-width8-fraction0.5-seed0.json"] == units[
        "run-width8-fraction0.5-seed0.json"]


def test_the_fgsm_probe_fires_where_plain_fgsm_overfits_catastrophically():
    # digits-cnn at 0.3 (constant lr 0.05): PGD accuracy collapses while FGSM accuracy stays high.
    train, test = load_digits()
    preset = get_preset("digits-cnn")
    out = fgsm_threshold(preset.model, train, test, [0.3], epochs=25, lr=0.05, batch_size=64, seed=0)
    assert out["threshold"] == 0.3 and out["stable_below"] is None
    run = out["runs"][0]
    assert run["flag_epoch"] is not None and run["epochs_run"] == run["flag_epoch"]  # the run stops at the flag
    assert run["fgsm_accuracy"] - run["pgd_accuracy"] > 0.3


def test_the_study_command_prints_the_table_and_writes_json_and_plot(tmp_path):
    res = runner.invoke(app, ["study", "--preset", "digits-mlp", "--widths", "8,16", "--train-fraction", "1,0.5",
                              "--seeds", "1", "--method", "clean-probe", "--epochs", "3", "--fgsm-threshold",
                              "--fgsm-eps", "2/255", "--device", "cpu", "-q", "--json", str(tmp_path / "s.json"),
                              "--plot", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    assert "R*(0) (s.e.)" in res.output and "8/255 / eps*" in res.output and "FGSM unstable" in res.output
    assert "> 2 (none fired)" in res.output
    saved = json.loads((tmp_path / "s.json").read_text())
    assert len(saved["rows"]) == 4 and saved["settings"]["customary_eps"] == pytest.approx(8 / 255)
    assert (tmp_path / "s.png").stat().st_size > 0
    bad = runner.invoke(app, ["study", "--preset", "digits-mlp", "--shard", "1/2"])
    assert bad.exit_code == 2 and "--shard needs --units" in bad.output


def test_the_grid_check_keeps_its_run_records_with_their_weights(tmp_path):
    train, test = load_digits()
    settings = StudySettings(widths=(8,), fractions=(0.5,), seeds=(0,), recipe=Recipe(epochs=2), finetune_epochs=1,
                             method="clean-probe", check_grid=True)
    out = run_study(settings, get_preset("digits-mlp").model, train, test, units_dir=tmp_path)
    unit = out["units"]["run-width8-fraction0.5-seed0.json"]
    assert unit["grid"]["method"] == "grid" and out["rows"][0]["grid"] == unit["grid"]["value"]
    records = sorted((tmp_path / "grid-width8-fraction0.5-seed0").glob("*.json"))
    assert len(records) == len(unit["grid"]["settings"]["eps"])
    from advhooks.kit.checkpoints import read_checkpoint

    state, _ = read_checkpoint(records[-1])  # the early-stopped weights, for `advhooks connectivity`
    assert set(state) == set(get_preset("digits-mlp").model(8).state_dict())
    # ... which pairs them with the clean benchmark the study saved beside them (its width and fraction too).
    folder = tmp_path / "grid-width8-fraction0.5-seed0"
    res = runner.invoke(app, ["connectivity", "--benchmark", str(folder / "clean.safetensors"), "--checkpoint",
                              str(records[-1]), "--preset", "digits-mlp", "--epochs", "1", "--points", "3",
                              "--resolution", "0", "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    assert "straight line: max" in res.output


def test_the_study_command_with_a_users_model_and_data_factories(tmp_path, monkeypatch):
    # --model/--data are imported from the working directory, like `python -m`: the checkout's tests package.
    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])
    res = runner.invoke(app, ["study", "--model", "tests.cli_factories:mlp_of_width", "--data",
                              "tests.cli_factories:digits", "--widths", "4,12", "--seeds", "1", "--method",
                              "clean-probe", "--epochs", "2", "--lr", "0.05", "--weight-decay", "0", "--batch-size",
                              "32", "--customary-eps", "4/255", "--device", "cpu", "-q",
                              "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    assert "recipe: 2 epochs, lr 0.05, batch size 32, weight decay 0 (as given, else the defaults)" in res.output
    saved = json.loads((tmp_path / "s.json").read_text())
    assert [r["width"] for r in saved["rows"]] == [4, 12] and saved["settings"]["customary_eps"] == 4 / 255
    unit = saved["units"]["run-width12-fraction1-seed0.json"]
    assert unit["benchmark"]["clean_test_loss"] > 0 and "4/255 / eps*" in res.output


def test_a_unit_whose_estimate_cannot_be_made_says_why_instead_of_ending_the_study():
    from advhooks.benchmark import CleanBenchmark
    from advhooks.kit.estimate import EstimationData
    from advhooks.kit.study.store import estimate_as_json

    train, test = load_digits()
    weightless = CleanBenchmark(0.1, 0.05, 0.05, 0.9, 0.95, 0.01, len(test), len(train))  # a record, no weights
    out = estimate_as_json("clean-probe", weightless, get_preset("digits-mlp").model, EstimationData(train))
    assert out["value"] is None and out["interval"] is None
    assert out["warnings"][0].startswith("no clean-probe estimate: this benchmark was read without its weights")
    settings = StudySettings(widths=(8,), fractions=(1.0,), seeds=(0,))
    unit = {"seed": 0, "n_train": 10, "benchmark": {"clean_test_loss": 0.1, "test_loss_stderr": 0.01,
                                                   "generalization_gap": 0.05}, "estimate": out}
    row = study_summary.row_of(settings, 8, 1.0, [unit], None)
    assert row.eps_star is None and "1 of 1 seeds gave no estimate" in row.warnings
    assert any("no clean-probe estimate" in w for w in row.warnings)


def test_the_grid_check_on_every_seed_gives_bands_over_seeds_and_its_own_comparisons():
    train, test = load_digits()
    settings = StudySettings(widths=(8,), fractions=(1.0, 0.5), seeds=(0, 1), recipe=Recipe(epochs=2),
                             method="clean-probe", check_grid="all")
    out = run_study(settings, get_preset("digits-mlp").model, train, test)
    for row in out["rows"]:
        grids = [out["units"][f"run-width8-fraction{row['fraction']:g}-seed{s}.json"]["grid"] for s in (0, 1)]
        assert row["grid_per_seed"] == [g["value"] for g in grids]
        values = [g["value"] for g in grids if g["value"] is not None]
        if values:
            assert row["grid"] == pytest.approx(math.exp(np.mean(np.log(values))))  # the geometric mean
    grid_pairs = [c for c in out["comparisons"] if c["estimator"] == "grid"]
    assert [(c["from"], c["to"]) for c in grid_pairs] == [("width 8, fraction 1", "width 8, fraction 0.5")]
    text = format_study(out)
    assert "grid eps* x255 (2 seeds)" in text and "grid: width 8, fraction 1 -> width 8, fraction 0.5" in text
    with pytest.raises(ValueError, match="check_grid must be"):
        StudySettings(widths=(8,), fractions=(1.0,), seeds=(0,), check_grid="some")
    both = runner.invoke(app, ["study", "--preset", "digits-mlp", "--check-grid", "--check-grid-all"])
    assert both.exit_code == 2 and "not both" in both.output
