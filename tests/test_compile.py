"""compile=True runs the attack's forwards through torch.compile (on the CPU) with the same results."""

from __future__ import annotations

import torch

from advhooks import PGD

from .conftest import SmallCNN
from .test_model_invariants import _assert_same, _snapshot


def test_compiled_attack_matches_eager_and_leaves_the_model_unchanged(batch):
    torch.manual_seed(0)
    model = SmallCNN().train()
    x, y = batch
    before = _snapshot(model)
    eager = PGD(8 / 255, steps=3, random_start=False)(model, x, y)
    compiled = PGD(8 / 255, steps=3, random_start=False, compile=True)(model, x, y)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)
    _assert_same(before, _snapshot(model))
    again = PGD(8 / 255, steps=3, random_start=False, compile=True)(model, x, y)  # reuses the compiled code
    torch.testing.assert_close(again, compiled, rtol=0, atol=0)
