"""One home for the training recipe: ``Recipe``'s defaults are declared once, and every place that trains starts
from them (or from a preset's recipe) and replaces only what it is given."""

from __future__ import annotations

import inspect

import pytest

from advhooks.benchmark import (
    RECIPE_KEYS,
    SETUP_KEYS,
    CleanBenchmark,
    Recipe,
    RunSetup,
    differing_keys,
    given_recipe,
    recipe_differences,
)
from advhooks.kit import estimate as E
from advhooks.kit.presets import PRESETS, get_preset
from advhooks.kit.study import StudySettings
from advhooks.kit.training import record_clean_benchmark, train_adversarially


def test_every_place_that_builds_a_recipe_starts_from_the_one_declaration():
    assert inspect.signature(record_clean_benchmark).parameters["recipe"].default == Recipe()
    assert StudySettings(widths=(None,), fractions=(1.0,), seeds=(0,)).recipe == Recipe()
    assert get_preset("digits-mlp").recipe == Recipe()  # the embedded default's recipe is the default
    assert Recipe.from_record({}) == Recipe()  # what the estimators use for a benchmark that records nothing
    assert inspect.signature(train_adversarially).parameters["recipe"].default is inspect.Parameter.empty
    for settings in (E.GridSettings, E.FinetuneSettings):  # default: the benchmark's own recipe
        assert settings().recipe is None
    assert all(isinstance(p.recipe, Recipe) for p in PRESETS.values())


def test_a_benchmark_stores_its_recipe_and_gives_it_back():
    recipe = Recipe(epochs=7, batch_size=32, lr=0.2, weight_decay=1e-4, augmentation=True)
    bench = CleanBenchmark(0.1, 0.05, 0.05, 0.9, 0.95, 0.01, 100, 400, training={**recipe.to_dict(), "seed": 3})
    assert Recipe.from_record(bench.training) == recipe
    assert recipe_differences(bench, recipe) == []
    assert recipe_differences(bench, recipe.with_given(batch_size=64)) == ["batch size 64 vs the benchmark's 32"]
    assert set(Recipe().to_dict()) == set(RECIPE_KEYS) and not set(RECIPE_KEYS) & set(SETUP_KEYS)


@pytest.mark.parametrize("bad,match", [({"epochs": 0}, "epochs must be"), ({"batch_size": 1.5}, "batch_size must be"),
                                       ({"lr": 0}, "lr must be"), ({"weight_decay": -1}, "weight_decay must be")])
def test_a_recipe_refuses_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        Recipe(**bad)


def _bench_of(model) -> CleanBenchmark:
    from advhooks.benchmark import model_fingerprint

    return CleanBenchmark(0.1, 0.05, 0.05, 0.9, 0.95, 0.01, 100, 400, model=model_fingerprint(model),
                          training={**Recipe(batch_size=32).to_dict(), "normalization": {"mean": [0.5], "std": [0.2]}})


def test_a_recipe_mapping_is_sugar_for_a_recipe_and_a_setup():
    values, setup = given_recipe({"batch_size": 64, "seed": 3, "model": None, "n_train": 10})
    assert values == {"batch_size": 64, "seed": 3, "n_train": 10} and setup == RunSetup(n_train=10)
    assert given_recipe(Recipe(lr=0.2)) == (Recipe(lr=0.2).to_dict(), RunSetup())
    with pytest.raises(TypeError, match="recipe must be a Recipe or a mapping"):
        given_recipe(["batch_size", 64])
    import torch

    ours, other = torch.nn.Linear(2, 2), torch.nn.Linear(3, 2)
    bench = _bench_of(ours)
    sugar = {"batch_size": 64, "model": other, "normalization": {"mean": [0.4], "std": [0.2]}}
    typed = differing_keys(bench, {"batch_size": 64},
                           RunSetup(model=other, normalization={"mean": [0.4], "std": [0.2]}))
    assert differing_keys(bench, sugar) == typed and set(typed) == {"batch_size", "model", "normalization"}
    assert differing_keys(bench, Recipe(batch_size=32), RunSetup(model=ours)) == {}


def test_the_monitor_and_the_recorder_take_a_recipe_or_its_sugar_alike(tmp_path):
    import torch

    from advhooks import CleanBenchmarkRecorder, PhaseMonitor

    model = torch.nn.Linear(2, 2)
    bench = _bench_of(model)
    typed = PhaseMonitor(bench, eps=0.1, recipe=Recipe(batch_size=32), setup=RunSetup(model=model, n_train=400))
    sugar = PhaseMonitor(bench, eps=0.1, recipe={**Recipe(batch_size=32).to_dict(), "model": model, "n_train": 400})
    assert typed.setup == sugar.setup
    assert typed.record()["recipe"] == sugar.record()["recipe"]
    assert typed.record()["recipe"]["model_hash"] == bench.model["hash"]
    with pytest.raises(TypeError, match="setup must be an advhooks.benchmark.RunSetup"):
        PhaseMonitor(bench, eps=0.1, setup={"model": model})
    data = torch.utils.data.TensorDataset(torch.rand(4, 2), torch.randint(0, 2, (4,)))
    recorder = CleanBenchmarkRecorder(data, recipe=Recipe(epochs=1), setup=RunSetup(model=model, n_train=4))
    recorder.epoch_end(model)
    training = recorder.finish(model).training
    assert training["schedule"] == "step_decay" and training["n_train"] == 4 and "model" not in training
    # a mapping is recorded as given: its order and its None values kept, only the model left to the fingerprint
    sugar = CleanBenchmarkRecorder(data, recipe={"normalization": None, "model": model, "n_train": None, "lr": 0.1})
    sugar.epoch_end(model)
    assert list(sugar.finish(model).training.items()) == [("epochs", 1), ("normalization", None), ("n_train", None),
                                                          ("lr", 0.1)]
