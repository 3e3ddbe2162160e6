"""TRADES and MART against direct computation of their published formulas."""

from __future__ import annotations

import pytest
import torch

from advhooks.attacks.criteria import kl_to_reference
from advhooks.losses import at_loss, boosted_cross_entropy, get_objective, mart_loss, trades_loss


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(64, 10, dtype=torch.float64) * 2, torch.randn(64, 10, dtype=torch.float64) * 2, \
        torch.randint(0, 10, (64,))


def _direct_kl(p, q):
    return (p * (p.log() - q.log())).sum(dim=1)


def test_kl_to_reference_is_kl_of_clean_to_adversarial(logits):
    clean, adv, _ = logits
    p, q = clean.softmax(1), adv.softmax(1)
    torch.testing.assert_close(kl_to_reference(adv, clean.log_softmax(1)), _direct_kl(p, q))


@pytest.mark.parametrize("beta", [0.0, 1.0, 6.0])
def test_trades_matches_its_formula(logits, beta):
    clean, adv, y = logits
    p, q = clean.softmax(1), adv.softmax(1)
    natural = -p[torch.arange(len(y)), y].log().mean()
    expected = natural + beta * _direct_kl(p, q).mean()
    torch.testing.assert_close(trades_loss(clean, adv, y, beta=beta), expected)


@pytest.mark.parametrize("beta", [0.0, 6.0])
def test_mart_matches_the_reference_implementation(logits, beta):
    # Written as in Wang et al.'s released code (argsort, log(1.0001 - p), KLDivLoss on log(q + 1e-12)).
    clean, adv, y = logits
    adv_probs = adv.softmax(1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = torch.nn.functional.cross_entropy(adv, y) + torch.nn.functional.nll_loss(
        torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = clean.softmax(1)
    true_probs = nat_probs.gather(1, y[:, None]).squeeze()
    kl = torch.nn.KLDivLoss(reduction="none")(torch.log(adv_probs + 1e-12), nat_probs).sum(1)
    expected = loss_adv + beta * (kl * (1.0000001 - true_probs)).mean()
    torch.testing.assert_close(mart_loss(clean, adv, y, beta=beta), expected, rtol=1e-6, atol=1e-8)


def test_boosted_ce_uses_the_most_likely_wrong_class():
    adv = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], dtype=torch.float64))
    y = torch.tensor([0, 0])
    expected = torch.stack([
        -torch.log(torch.tensor(0.6, dtype=torch.float64)) - torch.log(torch.tensor(1.0001 - 0.3 + 1e-12)),
        -torch.log(torch.tensor(0.2, dtype=torch.float64)) - torch.log(torch.tensor(1.0001 - 0.5 + 1e-12)),
    ])
    torch.testing.assert_close(boosted_cross_entropy(adv, y), expected)


def test_gradients_flow_through_both_distributions(logits):
    clean, adv, y = logits
    clean, adv = clean.clone().requires_grad_(True), adv.clone().requires_grad_(True)
    for loss in (trades_loss(clean, adv, y), mart_loss(clean, adv, y)):
        g_clean, g_adv = torch.autograd.grad(loss, (clean, adv))
        assert g_clean.abs().sum() > 0 and g_adv.abs().sum() > 0


def test_at_loss_is_mean_cross_entropy(logits):
    _, adv, y = logits
    torch.testing.assert_close(at_loss(adv, y), torch.nn.functional.cross_entropy(adv, y))


def test_half_precision_logits_are_widened():
    z = torch.randn(8, 5).half()
    y = torch.randint(0, 5, (8,))
    assert trades_loss(z, z, y).dtype == torch.float32
    assert mart_loss(z, z, y).dtype == torch.float32


def test_unknown_objective_is_rejected():
    with pytest.raises(ValueError, match="objective must be one of"):
        get_objective("pgd")
