"""Closed forms and geometric properties of the attacks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advhooks.attacks import FGM, PGD, fgm_perturb, pgd_perturb
from advhooks.attacks.norms import random_in_ball_


def _linear_problem(d: int = 12, classes: int = 2, n: int = 32):
    torch.manual_seed(1)
    model = nn.Linear(d, classes).double()
    x = (torch.rand(n, d, dtype=torch.float64) * 0.5 + 0.25)
    y = torch.randint(0, classes, (n,))
    return model, x, y


def _input_grad(model, x, y):
    xi = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xi), y, reduction="sum")
    return torch.autograd.grad(loss, xi)[0]


def test_fgm_linf_on_linear_model_is_eps_sign_gradient():
    model, x, y = _linear_problem()
    eps = 0.1
    adv = fgm_perturb(model, x, y, eps=eps, norm="linf")
    g = _input_grad(model, x, y)
    torch.testing.assert_close(adv - x, eps * g.sign(), rtol=0, atol=1e-12)


def test_fgm_l2_on_linear_model_is_eps_normalised_gradient():
    model, x, y = _linear_problem()
    eps = 0.1
    adv = fgm_perturb(model, x, y, eps=eps, norm="l2")
    g = _input_grad(model, x, y)
    expected = eps * g / g.norm(dim=1, keepdim=True)
    torch.testing.assert_close(adv - x, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_on_binary_linear_model_reaches_the_optimal_perturbation(norm):
    # For a two-class linear model the loss increases along the fixed direction w_y' - w_y, so the
    # optimum in the ball is the FGM point; PGD from the clean input must reach it and stay there.
    model, x, y = _linear_problem(classes=2)
    eps = 0.05
    adv = pgd_perturb(model, x, y, eps=eps, norm=norm, steps=20, step_size=eps / 4, random_start=False)
    best = fgm_perturb(model, x, y, eps=eps, norm=norm)
    torch.testing.assert_close(adv, best, rtol=0, atol=1e-10)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_increases_the_loss(cnn, batch, norm):
    x, y = batch
    eps = 8 / 255 if norm == "linf" else 0.5
    cnn.eval()
    with torch.no_grad():
        clean = nn.functional.cross_entropy(cnn(x), y)
        adv = nn.functional.cross_entropy(cnn(PGD(eps, norm=norm, steps=10)(cnn, x, y)), y)
    assert adv > clean + 0.01


def test_targeted_attack_lowers_the_target_loss(cnn, batch):
    x, _ = batch
    target = torch.full((x.shape[0],), 3)
    cnn.eval()
    with torch.no_grad():
        before = nn.functional.cross_entropy(cnn(x), target)
        adv = PGD(0.3, steps=10, targeted=True)(cnn, x, target)
        after = nn.functional.cross_entropy(cnn(adv), target)
    assert after < before - 0.01


def test_restarts_keep_the_per_sample_worst(cnn, batch):
    x, y = batch
    cnn.eval()

    def per_sample(adv):
        with torch.no_grad():
            return nn.functional.cross_entropy(cnn(adv), y, reduction="none")

    seeds = [torch.Generator().manual_seed(s) for s in (0, 0)]
    single_runs = []
    gen = seeds[0]
    for _ in range(3):
        single_runs.append(per_sample(pgd_perturb(cnn, x, y, eps=0.1, steps=2, generator=gen)))
    best = pgd_perturb(cnn, x, y, eps=0.1, steps=2, restarts=3, generator=seeds[1])
    torch.testing.assert_close(per_sample(best), torch.stack(single_runs).max(dim=0).values, rtol=1e-5, atol=1e-6)


def test_random_start_is_uniform_in_the_linf_ball():
    delta = torch.zeros(20000, 3)
    random_in_ball_(delta, "linf", 0.5, torch.Generator().manual_seed(0))
    assert delta.abs().max() <= 0.5
    assert abs(delta.mean().item()) < 0.01
    assert abs(delta.var().item() - 1 / 12) < 0.005  # Var(U(-.5, .5)) = 1/12


def test_random_start_is_uniform_in_the_l2_ball():
    d, eps = 3, 2.0
    delta = torch.zeros(40000, d)
    random_in_ball_(delta, "l2", eps, torch.Generator().manual_seed(0))
    r = delta.norm(dim=1) / eps
    assert r.max() <= 1 + 1e-6
    # uniform in the ball: P(r <= t) = t^d
    for t in (0.5, 0.8):
        assert abs((r <= t).double().mean().item() - t**d) < 0.01


def test_eps_zero_returns_the_inputs(cnn, batch):
    x, y = batch
    torch.testing.assert_close(PGD(0.0)(cnn, x, y), x, rtol=0, atol=0)


def test_unbounded_inputs_can_leave_the_unit_box(cnn):
    x = torch.randn(8, 1, 8, 8) * 3
    y = torch.randint(0, 10, (8,))
    adv = PGD(0.5, bounds=None, steps=3)(cnn, x, y)
    assert (adv - x).abs().max() <= 0.5 + 1e-6


def test_out_of_bounds_inputs_raise_unless_clamping_is_asked(cnn, batch):
    x, y = batch
    with pytest.raises(ValueError, match="outside the attack's bounds"):
        PGD(0.1)(cnn, x * 2, y)
    adv = PGD(0.1, out_of_bounds="clamp")(cnn, x * 2, y)
    assert adv.min() >= 0 and adv.max() <= 1


def test_per_channel_bounds(cnn):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    x = torch.stack([torch.rand(8, 4, 4) * 0.2, torch.rand(8, 4, 4) * 0.5 + 0.5], dim=1)
    y = torch.randint(0, 3, (8,))
    adv = PGD(0.3, bounds=((0.0, 0.5), (0.2, 1.0)))(model, x, y)
    assert adv[:, 0].min() >= 0 and adv[:, 0].max() <= 0.2 + 1e-7
    assert adv[:, 1].min() >= 0.5 - 1e-7 and adv[:, 1].max() <= 1.0


def test_normalisation_aware_eps_matches_an_attack_in_pixel_space(cnn, batch):
    # A model that normalises inside, attacked in pixel space, must give the same adversarial
    # images as the bare model attacked on normalised inputs with normalization=(mean, std).
    x, y = batch
    mean, std = 0.3, 0.2
    inside = nn.Sequential(_Normalize(mean, std), cnn)
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for norm, eps in (("linf", 8 / 255), ("l2", 0.5)):
        adv_pixels = pgd_perturb(inside, x, y, eps=eps, norm=norm, steps=5, generator=gen_a)
        adv_norm = pgd_perturb(cnn, (x - mean) / std, y, eps=eps, norm=norm, steps=5,
                               normalization=((mean,), (std,)), generator=gen_b)
        torch.testing.assert_close(adv_norm * std + mean, adv_pixels, rtol=0, atol=1e-5)


class _Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


_DTYPES = st.sampled_from([torch.float32, torch.float64])
_SHAPES = st.sampled_from([(3, 5), (2, 1, 4, 4), (4, 3, 2, 2), (1, 2, 3)])


@settings(max_examples=40, deadline=None)
@given(shape=_SHAPES, dtype=_DTYPES, norm=st.sampled_from(["linf", "l2"]),
       eps=st.floats(0.0, 2.0), steps=st.integers(1, 4), random_start=st.booleans(),
       low=st.floats(-1.0, 0.4), width=st.floats(0.1, 2.0), bounded=st.booleans(), seed=st.integers(0, 1000))
def test_perturbation_stays_in_the_ball_and_the_bounds(shape, dtype, norm, eps, steps, random_start, low, width,
                                                       bounded, seed):
    torch.manual_seed(seed)
    features = math.prod(shape[1:])
    model = nn.Sequential(nn.Flatten(), nn.Linear(features, 3)).to(dtype)
    high = low + width
    x = (torch.rand(shape, dtype=dtype) * width + low) if bounded else torch.randn(shape, dtype=dtype)
    y = torch.randint(0, 3, (shape[0],))
    bounds = (low, high) if bounded else None
    if bounded and norm == "linf":  # an L∞ ball wider than the box is refused (eps in the wrong units)
        eps = min(eps, width)
    adv = pgd_perturb(model, x, y, eps=eps, norm=norm, steps=steps, random_start=random_start, bounds=bounds)
    delta = (adv - x).flatten(1)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    size = delta.abs().max(dim=1).values if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + tol) + tol).all()
    if bounded:
        assert adv.min() >= low and adv.max() <= high
    assert adv.dtype == dtype and adv.shape == x.shape


def test_fgm_with_random_start_uses_the_wong_step():
    attack = FGM(0.1, random_start=True)
    assert attack.default_step_size(0.1) == pytest.approx(0.125)
    assert FGM(0.1).default_step_size(0.1) == pytest.approx(0.1)
    assert PGD(0.1, steps=10).default_step_size(0.1) == pytest.approx(0.025)
