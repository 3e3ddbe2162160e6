"""The attacks under torch.autocast (bf16 and fp16 on the CPU) and with channels_last inputs."""

from __future__ import annotations

import pytest
import torch

from advhooks import PGD, AdversarialStep
from advhooks.attacks.model_state import autocast_loss_scale

from .conftest import SmallCNN


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_attack_under_autocast_stays_in_the_ball_and_raises_the_loss(dtype, batch):
    x, y = batch
    model = SmallCNN().eval()
    with torch.autocast("cpu", dtype=dtype):
        assert autocast_loss_scale("cpu") == (1024.0 if dtype == torch.float16 else 1.0)
        adv = PGD(8 / 255, steps=5)(model, x, y)
    assert adv.dtype == torch.float32
    assert torch.isfinite(adv).all()
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(model(x), y)
        attacked = torch.nn.functional.cross_entropy(model(adv), y)
    assert attacked > clean


def test_fp16_autocast_gives_the_same_directions_as_fp32_where_gradients_are_clear(batch):
    x, y = batch
    model = SmallCNN().eval()
    attack = PGD(8 / 255, steps=1, random_start=False)
    ref = attack(model, x, y)
    with torch.autocast("cpu", dtype=torch.float16):
        half = attack(model, x, y)
    # Sign agreement on most coordinates: without the loss scale fp16 underflows to zero gradients.
    agree = ((ref - x).sign() == (half - x).sign()).double().mean()
    assert agree > 0.9


def test_step_under_autocast_backpropagates(batch):
    model = SmallCNN()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = AdversarialStep(model, PGD(8 / 255, steps=2), objective="trades")(*batch)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_channels_last_inputs(batch):
    x, y = batch
    model = SmallCNN().to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    adv_cl = PGD(8 / 255, steps=3, random_start=False)(model, xc, y)
    adv = PGD(8 / 255, steps=3, random_start=False)(model, x, y)
    torch.testing.assert_close(adv_cl, adv, rtol=0, atol=1e-6)


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_attack_precision_equals_running_the_attack_under_autocast(precision, dtype, batch):
    x, y = batch
    model = SmallCNN().eval()
    own = PGD(8 / 255, steps=3, random_start=False, precision=precision)(model, x, y)
    with torch.autocast("cpu", dtype=dtype):
        outer = PGD(8 / 255, steps=3, random_start=False)(model, x, y)
    assert not torch.is_autocast_enabled("cpu")  # the attack's autocast does not leak out
    assert own.dtype == torch.float32
    torch.testing.assert_close(own, outer, rtol=0, atol=0)


def test_bf16_attack_keeps_the_fp32_attack_strength(batch):
    torch.manual_seed(0)
    x, y = batch
    model = SmallCNN().eval()
    losses = {}
    for precision in (None, "bf16"):
        adv = PGD(8 / 255, steps=10, random_start=False, precision=precision)(model, x, y)
        with torch.no_grad():  # judged in fp32
            losses[precision] = torch.nn.functional.cross_entropy(model(adv), y).item()
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(model(x), y).item()
    assert losses["bf16"] - clean > 0.9 * (losses[None] - clean)


def test_precision_is_validated():
    with pytest.raises(ValueError, match="precision must be one of 'bf16', 'fp16'"):
        PGD(8 / 255, precision="int8")
