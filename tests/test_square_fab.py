"""Square and FAB-T, the two attacks that complete AutoAttack's standard suite: feasible points, the margin only
ever lowered, FAB's exact projection (checked against a linear program), the suite's masking case and its
agreement with torchattacks' AutoAttack."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import linprog
from torch import nn
from torch.utils.data import TensorDataset

from advhooks import APGD
from advhooks.attacks.fab import fab_targeted_perturb, project_onto_hyperplane
from advhooks.attacks.square import _initial, margin_loss, p_schedule, square_perturb
from advhooks.robustness import SUITES, robust_accuracy


@pytest.fixture
def trained(trained_digits_cnn):
    """The trained digits CNN and 64 test samples."""
    model, test = trained_digits_cnn
    return model, test.tensors[0][:64], test.tensors[1][:64]


class Quantise(nn.Module):
    """Rounds the inputs to 16 grey levels (the digits' own): the gradient through it is zero almost everywhere."""

    def forward(self, x):
        return torch.round(x * 16) / 16


def test_the_p_schedule_halves_at_the_papers_query_counts():
    assert [p_schedule(q, 10_000) for q in (0, 10, 11, 51, 201, 8001)] == [0.8, 0.8, 0.4, 0.2, 0.1, 0.8 / 512]
    assert p_schedule(5, 5000) == 0.8 and p_schedule(6, 5000) == 0.4  # rescaled to the budget


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_square_stays_feasible_and_only_ever_lowers_the_margin(trained, norm, eps):
    model, x, y = trained
    adv, broken = square_perturb(model, x, y, eps=eps, norm=norm, n_queries=300,
                                 generator=torch.Generator().manual_seed(3))
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps * (1 + 1e-5)).all()) and bool((adv >= 0).all() and (adv <= 1).all())
    with torch.no_grad():
        final = margin_loss(model(adv), y)
        start = margin_loss(model((x + _initial(x, eps, norm, torch.Generator().manual_seed(3))).clamp(0, 1)), y)
        clean = margin_loss(model(x), y)
    assert torch.equal(broken, final < 0)
    assert bool((final <= start + 1e-6).all())  # a query is kept only where it lowered the margin
    hit = broken & (clean > 0)
    assert int(hit.sum()) > 0 and bool((model(adv[hit]).argmax(1) != y[hit]).all())


def test_square_works_in_pixel_units_under_a_normalisation(trained):
    model, x, y = trained
    mean, std = 0.3, 0.2
    normalised = nn.Sequential(_Affine(std, mean), model)  # takes (pixel - mean) / std
    adv, broken = square_perturb(normalised, (x - mean) / std, y, eps=0.1, n_queries=100,
                                 normalization=((mean,), (std,)), generator=torch.Generator().manual_seed(0))
    pixels = adv * std + mean
    assert float((pixels - x).abs().max()) <= 0.1 + 1e-5 and float(pixels.min()) >= -1e-6
    plain, plain_broken = square_perturb(model, x, y, eps=0.1, n_queries=100,
                                         generator=torch.Generator().manual_seed(0))
    assert torch.equal(broken, plain_broken)
    torch.testing.assert_close(pixels, plain, atol=1e-5, rtol=0)


class _Affine(nn.Module):
    def __init__(self, scale, shift):
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x):
        return x * self.scale + self.shift


def test_the_projection_is_the_linear_programs_minimum_in_linf():
    torch.manual_seed(0)
    p, w = torch.rand(6, 12), torch.randn(6, 12)
    w[:, :3] = 0.0  # coordinates that cannot help
    b = (w * p).sum(1) + torch.randn(6) * 2
    e = project_onto_hyperplane(p, w, b, torch.zeros_like(p), torch.ones_like(p), "linf")  # p + e in [0, 1]
    low, high = -p, 1 - p  # the same box, for e
    for i in range(6):
        d = p.shape[1]  # variables (e, t): minimise t with |e_j| <= t, w·e = b - w·p, low <= e <= high
        cost = [0.0] * d + [1.0]
        a_ub = [[1.0 if k == j else 0.0 for k in range(d)] + [-1.0] for j in range(d)]
        a_ub += [[-1.0 if k == j else 0.0 for k in range(d)] + [-1.0] for j in range(d)]
        lp = linprog(cost, A_ub=a_ub, b_ub=[0.0] * 2 * d, A_eq=[w[i].tolist() + [0.0]],
                     b_eq=[float(b[i] - w[i] @ p[i])], bounds=[(float(lo), float(hi)) for lo, hi in
                                                               zip(low[i], high[i], strict=True)] + [(0, None)])
        if lp.status == 0:
            assert float(e[i].abs().max()) == pytest.approx(lp.fun, rel=1e-4, abs=1e-6)
            assert float(w[i] @ (p[i] + e[i])) == pytest.approx(float(b[i]), abs=1e-4)
        else:  # the box does not reach the plane: every helpful coordinate goes to its bound
            assert bool(((e[i] - low[i]).abs().lt(1e-6) | (e[i] - high[i]).abs().lt(1e-6) | (w[i] == 0)).all())


def test_the_projection_without_a_box_is_the_closed_form():
    torch.manual_seed(1)
    p, w, b = torch.randn(5, 9), torch.randn(5, 9), torch.randn(5)
    c = (b - (w * p).sum(1))[:, None]
    torch.testing.assert_close(project_onto_hyperplane(p, w, b, None, None, "l2"), c * w / w.square().sum(1, True))
    torch.testing.assert_close(project_onto_hyperplane(p, w, b, None, None, "linf"),
                               c * w.sign() / w.abs().sum(1, True))


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_fab_ts_points_are_misclassified_and_inside_the_ball(trained, norm, eps):
    model, x, y = trained
    with torch.no_grad():
        target = model(x).argsort(1, descending=True)[:, 1]
    adv, broken = fab_targeted_perturb(model, x, y, target, eps=eps, norm=norm, steps=50)
    assert int(broken.sum()) > 0
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size[broken] <= eps * (1 + 1e-5)).all()) and torch.equal(adv[~broken], x[~broken])
    with torch.no_grad():
        assert bool((model(adv[broken]).argmax(1) != y[broken]).all())


def test_fab_finds_the_nearest_boundary_point_of_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x = torch.rand(8, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    adv, broken = fab_targeted_perturb(model, x, y, 1 - y, eps=10.0, norm="l2", steps=30, bounds=None)
    w = model[1].weight
    f = (model(x).gather(1, (1 - y)[:, None]) - model(x).gather(1, y[:, None])).squeeze(1)
    nearest = f.abs() / (w[1] - w[0]).norm()
    found = (adv - x).flatten(1).norm(dim=1)
    assert bool(broken.all())
    assert bool((found >= nearest - 1e-5).all()) and bool((found <= nearest * 1.06).all())  # within η = 1.05


def test_apgd_with_eot_on_a_deterministic_model_takes_the_same_steps(trained):
    model, x, y = trained
    one = APGD(0.1, steps=10)(model, x, y, generator=torch.Generator().manual_seed(0))
    three = APGD(0.1, steps=10, eot=3)(model, x, y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(one, three)


def test_the_standard_suite_finds_what_gradient_masking_hides_and_says_which_attack_did(trained):
    model, x, y = trained
    masked = nn.Sequential(Quantise(), model).eval()
    data = TensorDataset(x, y)
    apgd = robust_accuracy(masked, data, 0.1, suite="apgd")
    standard = robust_accuracy(masked, data, 0.1, suite="standard")
    assert apgd.clean_accuracy == standard.clean_accuracy > 0.9
    assert apgd.robust_accuracy >= standard.robust_accuracy + 0.3  # APGD's gradients are zero: it finds little
    assert standard.broken_by["square"] >= 0.3 and standard.robust_accuracy == standard.after["square"]
    assert list(standard.after) == [a.name for a in SUITES["standard"]]
    assert "robust after square" in standard.summary() and "broke" in standard.summary()
    plain = robust_accuracy(model, data, 0.1, suite="standard")
    assert plain.robust_accuracy <= robust_accuracy(model, data, 0.1, suite="apgd").robust_accuracy


def test_the_rand_suite_evaluates_a_randomised_model_without_a_warning(trained):
    model, x, y = trained

    class Noisy(nn.Module):
        def forward(self, inputs):
            return model((inputs + 0.05 * torch.randn_like(inputs)).clamp(0, 1))

    import warnings

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = robust_accuracy(Noisy(), TensorDataset(x[:16], y[:16]), 0.1, suite="rand")
    assert report.robust_accuracy <= report.clean_accuracy and list(report.after) == ["apgd-ce-eot", "apgd-dlr-eot"]


def test_the_standard_suite_agrees_with_torchattacks_autoattack(trained):
    torchattacks = pytest.importorskip("torchattacks", reason="the cross-check needs torchattacks: "
                                                              "pip install 'advhooks[dev]'")
    model, x, y = trained
    ours = robust_accuracy(model, TensorDataset(x, y), 0.1, suite="standard")
    autoattack = torchattacks.AutoAttack(model, norm="Linf", eps=0.1, version="standard", n_classes=10, seed=0)
    with torch.no_grad():
        theirs = float((model(autoattack(x, y)).argmax(1) == y).float().mean())
    assert ours.n == 64 and ours.robust_accuracy <= theirs + 0.005, (ours.robust_accuracy, theirs)  # never weaker
    assert ours.robust_accuracy >= theirs - 0.05, (ours.robust_accuracy, theirs)
