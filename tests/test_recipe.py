"""One home for the training recipe: ``Recipe``'s defaults are declared once, and every place that trains starts
from them (or from a preset's recipe) and replaces only what it is given."""

from __future__ import annotations

import inspect

import pytest

from advhooks.benchmark import RECIPE_KEYS, CleanBenchmark, Recipe, recipe_differences
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
    assert set(Recipe().to_dict()) < set(RECIPE_KEYS)


@pytest.mark.parametrize("bad,match", [({"epochs": 0}, "epochs must be"), ({"batch_size": 1.5}, "batch_size must be"),
                                       ({"lr": 0}, "lr must be"), ({"weight_decay": -1}, "weight_decay must be")])
def test_a_recipe_refuses_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        Recipe(**bad)
