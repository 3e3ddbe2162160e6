"""An attack leaves the model exactly as it found it, also when the model raises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advhooks import APGD, FGM, PGD, AdversarialStep
from advhooks.attacks import attack_mode

from .conftest import SmallCNN


def _snapshot(model: nn.Module) -> dict:
    return {
        "modes": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
        "grads": {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()},
        "buffers": {name: b.clone() for name, b in model.named_buffers()},
        "tracking": {name: m.track_running_stats for name, m in model.named_modules()
                     if isinstance(m, nn.BatchNorm2d)},
    }


def _assert_same(before: dict, after: dict) -> None:
    assert before["modes"] == after["modes"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["tracking"] == after["tracking"]
    for key in ("params", "buffers"):
        for name, t in before[key].items():
            assert torch.equal(t, after[key][name]), f"{key} {name} changed"
    for name, g in before["grads"].items():
        other = after["grads"][name]
        assert (g is None and other is None) or torch.equal(g, other), f".grad of {name} changed"


def _mixed_state_model() -> SmallCNN:
    model = SmallCNN(dropout=0.5)
    with torch.no_grad():
        model.train()(torch.rand(32, 1, 8, 8))
    model.train()
    model.drop.eval()  # a user's own mix of modes must survive
    model.conv.bias.requires_grad_(False)  # and a user's frozen parameter
    loss = model(torch.rand(4, 1, 8, 8)).sum()
    loss.backward()  # accumulated grads that an attack must not touch
    return model


@pytest.mark.parametrize("bn", ["eval", "train"])
@pytest.mark.parametrize("attack", [PGD(8 / 255, steps=3), PGD(0.5, norm="l2", steps=3, restarts=2), FGM(8 / 255),
                                    APGD(8 / 255, steps=6, criterion="dlr"), APGD(0.5, norm="l2", steps=6, restarts=2)],
                         ids=["pgd-linf", "pgd-l2-restarts", "fgm", "apgd-dlr-linf", "apgd-ce-l2-restarts"])
def test_attack_leaves_the_model_unchanged(attack, bn, batch):
    attack.bn = bn
    model = _mixed_state_model()
    before = _snapshot(model)
    attack(model, *batch)
    _assert_same(before, _snapshot(model))


class _Exploding(nn.Module):
    def __init__(self, inner: nn.Module, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("boom")
        return self.inner(x)


@pytest.mark.parametrize("bn", ["eval", "train"])
def test_model_is_restored_when_its_forward_raises(bn, batch):
    model = _Exploding(_mixed_state_model(), after=2)
    model.train()
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        PGD(8 / 255, steps=5, bn=bn)(model, *batch)
    _assert_same(before, _snapshot(model))


def test_bn_eval_uses_running_statistics_and_train_uses_batch_statistics(cnn, batch):
    x, _ = batch
    cnn.train()
    seen = {}

    def spy(module, inputs, output):
        seen["training"] = module.training

    handle = cnn.bn.register_forward_hook(spy)
    for bn, expected in (("eval", False), ("train", True)):
        with attack_mode(cnn, bn) as module:
            module(x)
        assert seen["training"] is expected
    handle.remove()


def test_bn_train_respects_a_user_frozen_batchnorm(cnn, batch):
    cnn.train()
    cnn.bn.eval()  # fine-tuning with frozen BN statistics
    running = cnn.bn.running_mean.clone()
    with attack_mode(cnn, "train") as module:
        assert not module.bn.training
        module(batch[0])
    assert torch.equal(running, cnn.bn.running_mean)


def test_attack_does_not_compute_parameter_gradients(cnn, batch):
    hits = []
    for p in cnn.parameters():
        p.register_hook(lambda g: hits.append(1))
    PGD(8 / 255, steps=3)(cnn, *batch)
    assert hits == []


def test_step_changes_buffers_only_through_the_training_forward(batch):
    # The training forward updates BN statistics once per step, exactly as a clean step would.
    model = SmallCNN()
    clean = SmallCNN()
    clean.load_state_dict(model.state_dict())
    out = AdversarialStep(model, PGD(8 / 255, steps=3, bn="train"))(*batch)
    clean.train()(out.adv_inputs)
    assert int(model.bn.num_batches_tracked) == 1
    torch.testing.assert_close(model.bn.running_mean, clean.bn.running_mean)


def test_lazy_modules_are_supported():
    model = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
    adv = PGD(0.1, steps=2)(model, torch.rand(4, 1, 2, 2), torch.randint(0, 3, (4,)))
    assert adv.shape == (4, 1, 2, 2)
    assert all(p.requires_grad for p in model.parameters())
