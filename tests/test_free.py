"""Free adversarial training: one backward moves both the parameters and the perturbation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advhooks.free import FreeAdversarialStep
from advhooks.monitor import PhaseMonitor


def test_each_replay_uses_the_gradient_of_the_previous_backward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the model stays fixed, δ moves
    x, y = torch.rand(8, 1, 4, 4) * 0.5 + 0.25, torch.randint(0, 3, (8,))
    free = FreeAdversarialStep(model, eps=0.1, replays=3, step_size=0.02)
    outs, deltas = [], []
    for out in free.replays(x, y):
        deltas.append((out.adv_inputs - x).clone())
        opt.zero_grad()
        out.loss.backward()
        assert model[1].weight.grad is not None and free.delta.grad is not None  # one backward, both grads
        expected_next = deltas[-1] + 0.02 * free.delta.grad.sign()
        opt.step()
        outs.append((out, expected_next))
    assert len(outs) == 3 and torch.equal(deltas[0], torch.zeros_like(x))
    for (_, expected), got in zip(outs[:-1], deltas[1:], strict=True):
        torch.testing.assert_close(got, expected.clamp(-0.1, 0.1), rtol=0, atol=1e-7)
    # carried over to the next minibatch
    torch.testing.assert_close(free.delta, outs[-1][1].clamp(-0.1, 0.1), rtol=0, atol=1e-7)


def test_perturbation_stays_in_the_ball_and_the_box_and_feeds_the_monitor():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    free = FreeAdversarialStep(model, eps=0.3, replays=4)
    monitor = PhaseMonitor(0.5, eps=0.3)
    for _ in range(5):
        x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
        for out in free.replays(x, y):
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            monitor.update(out)
            assert (out.adv_inputs - x).abs().max() <= 0.3 + 1e-6
            assert out.adv_inputs.min() >= 0 and out.adv_inputs.max() <= 1
    assert monitor.epoch_end().samples == 5 * 4 * 8


def test_free_step_validates():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="replays"):
        FreeAdversarialStep(model, eps=0.1, replays=0)
    with pytest.raises(ValueError, match="eps"):
        FreeAdversarialStep(model, eps=-1.0)
    with pytest.raises(TypeError, match="model"):
        FreeAdversarialStep(lambda x: x, eps=0.1)
