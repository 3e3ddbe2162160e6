"""Gradient-masking warnings: they fire on a model whose inputs are quantised (zero input gradients; Square breaks
what APGD and FAB could not) and stay silent on the same model without the quantisation."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from advhooks import robust_accuracy
from advhooks.kit.data import load_digits
from advhooks.kit.presets import get_preset
from advhooks.kit.training import record_clean_benchmark
from advhooks.masking import masking_warnings


class Quantised(nn.Module):
    """The model behind a 4-level rounding of its inputs: its input gradient is zero almost everywhere."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 3) / 3)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    train, test = load_digits()
    model = get_preset("digits-mlp").model()
    bench = record_clean_benchmark(model, train, test)
    bench.load_weights_into(model)
    return model.eval(), torch.utils.data.Subset(test, range(64))


def test_a_quantised_model_is_warned_about_and_a_plain_one_is_not(trained, caplog):
    model, test = trained
    with caplog.at_level(logging.WARNING, logger="advhooks.robustness"):
        plain = robust_accuracy(model, test, 8 / 255, suite="standard")
    assert plain.masking == [] and plain.zero_gradient_share == 0.0 and not caplog.records
    with caplog.at_level(logging.WARNING, logger="advhooks.robustness"):
        masked = robust_accuracy(Quantised(model), test, 8 / 255, suite="standard")
    assert masked.zero_gradient_share > 0.9
    assert any("zero input gradient" in w for w in masked.masking)
    assert any(w.startswith("square, which uses no gradient, broke") for w in masked.masking), masked.summary()
    assert "warning" in masked.summary() and len(caplog.records) == len(masked.masking)


def test_a_randomised_model_is_pointed_to_the_rand_suite():
    said = masking_warnings(0.0, {"apgd-ce": 0.1}, {"apgd-ce": "apgd-ce"}, True, "standard")
    assert len(said) == 1 and "suite='rand'" in said[0]
    assert masking_warnings(0.0, {"apgd-ce-eot": 0.1}, {"apgd-ce-eot": "apgd-ce"}, True, "rand") == []
