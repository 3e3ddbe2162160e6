"""APGD (Croce & Hein 2020): the DLR loss, the checkpoints, the exact maximiser of a linear model, the
feasible set, no host read in the loop, and agreement with PGD and torchattacks on a trained CNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advhooks import APGD, PGD
from advhooks.attacks import AttackConfig, dlr_loss, perturb, targeted_dlr_loss
from advhooks.attacks.apgd import checkpoints
from advhooks.attacks.criteria import cross_entropy
from advhooks.perf import count_host_reads


@pytest.fixture
def trained(trained_digits_cnn):
    """The trained digits CNN and 128 test samples."""
    model, test = trained_digits_cnn
    return model, test.tensors[0][:128], test.tensors[1][:128]


def test_dlr_is_invariant_to_shifting_and_scaling_the_logits():
    z, y = torch.randn(32, 10), torch.randint(0, 10, (32,))
    torch.testing.assert_close(dlr_loss(3.0 * z + 1.5, y), dlr_loss(z, y))
    t = (y + 1) % 10
    torch.testing.assert_close(targeted_dlr_loss(2.0 * z - 4.0, y, t), targeted_dlr_loss(z, y, t))
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])  # the label is the top class: -(3 - 1) / (3 - 0)
    assert float(dlr_loss(z, torch.tensor([0]))) == pytest.approx(-2 / 3)
    assert float(dlr_loss(z, torch.tensor([2]))) == pytest.approx(3 / 3)  # -(0 - 3) / 3
    with pytest.raises(ValueError, match="C >= 3"):
        dlr_loss(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))


def test_the_checkpoints_follow_the_papers_schedule():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert all(0 < w <= n for n in (1, 5, 10, 37) for w in checkpoints(n))


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.3)])
def test_apgd_finds_the_exact_maximiser_of_a_linear_model(norm, eps):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x, y = torch.full((8, 1, 4, 4), 0.5), torch.randint(0, 2, (8,))
    adv = APGD(eps, norm=norm, steps=30, bounds=None)(model, x, y)
    w = model[1].weight
    direction = (w[1 - y] - w[y]).reshape(8, 1, 4, 4)  # CE of a linear 2-class model grows along it
    best = eps * direction.sign() if norm == "linf" else eps * direction / direction.flatten(1).norm(
        dim=1).reshape(8, 1, 1, 1)
    torch.testing.assert_close(adv - x, best, atol=2e-3, rtol=0)


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_apgd_stays_in_the_ball_and_the_box_and_leaves_the_model_as_it_was(cnn, batch, norm, eps):
    x, y = batch
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    cnn.train()
    adv = APGD(eps, norm=norm, steps=12, restarts=2)(cnn, x, y)
    delta = (adv - x).flatten(1)
    size = delta.abs().max(dim=1).values if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps + 1e-5).all()) and bool(((adv >= 0) & (adv <= 1)).all())
    assert cnn.training and all(torch.equal(v, cnn.state_dict()[k]) for k, v in before.items())


def test_the_apgd_loop_reads_nothing_on_the_host(cnn, batch):
    attack = APGD(8 / 255, steps=15, out_of_bounds="clamp")
    attack(cnn, *batch)  # warm-up
    with count_host_reads() as reads:
        attack(cnn, *batch)
    assert reads.count == 0


def test_apgd_is_the_step_rule_of_a_config_and_its_step_starts_at_2_eps(trained):
    model, x, y = trained
    config = AttackConfig(8 / 255, steps=20, step_rule="apgd")
    assert config.step_size_for(8 / 255) == pytest.approx(16 / 255)
    gen = torch.Generator().manual_seed(0)
    a = perturb(model, x, y, config, generator=gen)
    b = APGD(8 / 255, steps=20)(model, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="criterion must be one of"):
        APGD(8 / 255, criterion="hinge")


def test_apgd_ce_reaches_a_higher_loss_than_pgd_with_as_many_steps(trained):
    model, x, y = trained
    eps, steps = 8 / 255, 20
    apgd = APGD(eps, steps=steps)(model, x, y, generator=torch.Generator().manual_seed(0))
    pgd = PGD(eps, steps=steps)(model, x, y, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss_apgd, loss_pgd = cross_entropy(model(apgd), y).mean(), cross_entropy(model(pgd), y).mean()
    assert float(loss_apgd) >= float(loss_pgd)


def test_apgd_ce_is_at_least_as_strong_as_torchattacks_apgd(trained):
    torchattacks = pytest.importorskip("torchattacks", reason="the cross-check needs torchattacks: "
                                                              "pip install 'advhooks[dev]'")
    model, x, y = trained
    eps, steps = 8 / 255, 50
    ours = APGD(eps, steps=steps)(model, x, y, generator=torch.Generator().manual_seed(0))
    theirs = torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=0)(x, y)
    with torch.no_grad():
        ours_loss, theirs_loss = (cross_entropy(model(a), y).mean().item() for a in (ours, theirs))
    assert ours_loss >= theirs_loss * (1 - 1e-3), (ours_loss, theirs_loss)
