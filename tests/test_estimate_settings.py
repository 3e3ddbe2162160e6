"""What an estimator is asked, declared once: the settings objects, their validation, and the CLI's options mapped
onto them by the one function the CLI calls."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import TensorDataset

from advhooks.attacks import FGM, PGD
from advhooks.benchmark import CleanBenchmark, Recipe
from advhooks.kit import estimate as E
from advhooks.kit.estimate.settings import SETTINGS, attack_name, check_settings


def _bench(**training) -> CleanBenchmark:
    return CleanBenchmark(0.1, 0.05, 0.05, 0.9, 0.95, 0.01, 100, 400, training=training)


def test_the_cli_options_land_in_the_methods_own_settings():
    bench = _bench(**Recipe(epochs=40, lr=0.1, batch_size=32).to_dict())
    given = dict(norm="l2", attack="pgd", steps=5, runs=2, epochs=7, lr=0.02, batch_size=None, seed=3, level=0.9)
    grid = E.settings_for("grid", bench, given)
    assert type(grid) is E.GridSettings and grid.attack is PGD and (grid.norm, grid.steps, grid.runs) == ("l2", 5, 2)
    # the grid's epochs are its runs' (the recipe's); lr replaces the benchmark's, the batch size stays its own
    assert grid.recipe == Recipe(epochs=7, lr=0.02, batch_size=32)
    finetune = E.settings_for("finetune", bench, {**given, "attack": None})
    assert finetune.epochs == 7 and finetune.recipe == Recipe(epochs=40, lr=0.02, batch_size=32)
    assert finetune.attack is FGM  # the fine-tune's own default when no attack is given
    probe = E.settings_for("clean-probe", bench, {**given, "batch_size": 16})  # the recipe's, not the probe's
    assert probe == E.ProbeSettings(norm="l2", steps=5)
    records = E.settings_for("records", _bench(epochs=0), given)  # done runs: no recipe is built (nor refused)
    assert type(records) is E.GridSettings and records.recipe is None and records.level == 0.9


def test_settings_are_validated_when_made_and_name_attacks_as_the_core_does():
    assert E.FinetuneSettings(attack="PGD").attack is PGD and E.GridSettings(attack=FGM).attack is FGM
    assert attack_name(FGM) == "fgm" and E.make_attack("fgm", 0.1, "linf").random_start
    for bad, match in [(dict(norm="l1"), "norm"), (dict(steps=0), "steps"), (dict(runs=0), "runs"),
                       (dict(level=1.0), "level"), (dict(train_subset=0), "train_subset"),
                       (dict(growth=1.0), "growth"), (dict(epochs=-1), "epochs")]:
        with pytest.raises(ValueError, match=match):
            E.FinetuneSettings(**bad)
    with pytest.raises(TypeError, match="recipe must be a Recipe"):
        E.GridSettings(recipe={"epochs": 3})
    with pytest.raises(ValueError, match="extend"):
        E.GridSettings(extend=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        E.GridSettings().runs = 3


def test_each_method_takes_its_own_settings_type():
    assert set(SETTINGS) == set(E.METHODS)
    assert check_settings("finetune", None) == E.FinetuneSettings()
    with pytest.raises(TypeError, match="takes FinetuneSettings, got GridSettings"):
        check_settings("finetune", E.GridSettings())


def test_the_check_of_a_finetune_is_a_grid_point_with_its_measurement_recipe_and_seed():
    from advhooks.kit.estimate.dispatch import _check_of

    bench = _bench(**Recipe(epochs=12).to_dict())
    finetune = E.FinetuneSettings(norm="l2", steps=4, seed=5, normalization=([0.5], [0.2]), recipe=Recipe(lr=0.3))
    check = _check_of(finetune, bench)
    assert check == E.GridSettings(norm="l2", steps=4, seed=5, normalization=([0.5], [0.2]), recipe=Recipe(lr=0.3))
    assert _check_of(E.FinetuneSettings(), bench).recipe == Recipe(epochs=12)


def test_estimation_data_evaluates_on_the_set_without_augmentation():
    train, plain = (TensorDataset(torch.rand(4, 2), torch.zeros(4)) for _ in range(2))
    assert E.EstimationData(train).train_eval is train
    assert E.EstimationData(train, None, plain).train_eval is plain
    with pytest.raises(ValueError, match="the grid needs test_set"):
        E.EstimationData(train).needing_test_set("the grid")


def test_the_kit_trains_a_recipes_schedule_and_says_when_it_cannot_as_named(caplog):
    from advhooks.kit import training
    from advhooks.kit.training import train_adversarially

    training._SCHEDULES_SAID.discard("linear")  # (said once per process: another test may have said it)

    assert Recipe(epochs=4).lr_factor(3) == pytest.approx(0.01) and Recipe(schedule="constant").lr_factor(50) == 1.0
    assert Recipe(epochs=4, schedule="linear").lr_factor(3) == pytest.approx(0.01)  # as before: trained as step decay
    net = torch.nn.Linear(2, 2)
    data = torch.utils.data.DataLoader(TensorDataset(torch.rand(4, 2), torch.zeros(4, dtype=torch.long)), batch_size=2)
    train_adversarially(net, data, FGM(0.1), 0.1, Recipe(epochs=1, schedule="linear"))
    assert "schedule 'linear' is trained as step_decay" in caplog.text
