"""Linear regression under an L2 attack (the paper's section 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from typer.testing import CliRunner

from advhooks.cli import app
from advhooks.kit.theory import (
    LinearSetting,
    adversarial_loss_grad,
    adversarial_sq_loss,
    exact_eps_star,
    gradient_descent,
    population_adversarial_risk,
    sample_data,
    simulate,
)
from advhooks.kit.theory.linear import _hotelling_pvalues


def test_closed_form_inner_max_beats_a_brute_force_search_of_the_ball():
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, eps = 3, 0.4
        theta, x, y = rng.standard_normal(d), rng.standard_normal(d), rng.standard_normal()
        z = rng.standard_normal((200_000, d))
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        # Points inside the ball, and on its sphere (where a convex function attains its maximum).
        z *= eps * np.where(rng.random((200_000, 1)) < 0.5, rng.random((200_000, 1)) ** (1 / d), 1.0)
        brute = ((y - (x + z) @ theta) ** 2).max()
        closed = adversarial_sq_loss(theta[None], x[None, None], np.array([[y]]), eps)[0, 0]
        assert brute <= closed + 1e-12
        assert brute == pytest.approx(closed, rel=2e-3)


def test_gradient_matches_autograd():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 20, 3)), rng.standard_normal((4, 20))
    theta = rng.standard_normal((4, 3))
    for eps in (0.0, 0.3):
        loss, grad = adversarial_loss_grad(theta, x, y, eps)
        t = torch.tensor(theta, requires_grad=True)
        r = torch.tensor(y) - torch.einsum("rnd,rd->rn", torch.tensor(x), t)
        ref = ((r.abs() + eps * t.norm(dim=-1, keepdim=True)) ** 2).mean(-1)
        (g,) = torch.autograd.grad(ref.sum(), t)
        np.testing.assert_allclose(loss, ref.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(grad, g.numpy(), rtol=1e-10, atol=1e-12)


def test_gradient_descent_reaches_least_squares_and_the_adversarial_optimum():
    setting = LinearSetting(50, 4)
    x, y = sample_data(setting, 3, np.random.default_rng(2))
    theta, _ = gradient_descent(x, y, 0.0, lr=0.2, steps=400)
    for r in range(3):
        ols = np.linalg.lstsq(x[r], y[r], rcond=None)[0]
        np.testing.assert_allclose(theta[r], ols, atol=1e-8)
    eps = 0.2
    theta, _ = gradient_descent(x, y, eps, lr=0.2, steps=3000)
    for r in range(3):
        best = optimize.minimize(lambda t, r=r: adversarial_loss_grad(t[None], x[r:r + 1], y[r:r + 1], eps)[0][0],
                                 theta[r] + 0.1, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12,
                                                                                 "maxiter": 20000})
        got = adversarial_loss_grad(theta[r:r + 1], x[r:r + 1], y[r:r + 1], eps)[0][0]
        # |r| has kinks, so constant-step GD hovers within a hair of the optimum.
        assert got <= best.fun * (1 + 1e-4)


def test_population_risk_matches_monte_carlo():
    setting = LinearSetting(100, 3)
    theta = np.array([[0.2, -0.1, 0.5]])
    x, y = sample_data(setting, 1, np.random.default_rng(3))
    big_x = np.random.default_rng(4).standard_normal((1, 400_000, 3))
    big_y = big_x @ setting.theta0 + np.random.default_rng(5).standard_normal((1, 400_000))
    mc = adversarial_sq_loss(theta, big_x, big_y, 0.3).mean()
    assert population_adversarial_risk(theta, setting, 0.3)[0] == pytest.approx(mc, rel=0.01)
    del x, y


def test_hotelling_pvalues_are_uniform_under_the_null():
    setting = LinearSetting(100, 5)
    rng = np.random.default_rng(6)
    ref, _ = gradient_descent(*sample_data(setting, 300, rng), 0.0, lr=0.2, steps=200)
    new, _ = gradient_descent(*sample_data(setting, 300, rng), 0.0, lr=0.2, steps=200)
    p = _hotelling_pvalues(new, ref)
    assert stats.kstest(p, "uniform").pvalue > 1e-3


def test_pvalues_drop_across_the_transition():
    res = simulate(LinearSetting(100, 5), [0.1, 10.0], repeats=200, steps=200, seed=1)
    assert res.param_pvalue[0] > 0.3 and res.param_pvalue[1] < 0.05
    assert res.loss_pvalue[0] > 0.25 and res.loss_pvalue[1] < 0.05
    assert res.rel_diff_final[0] < 0.1 < 0.5 < res.rel_diff_final[1]
    assert 0.5 < res.first_order_ratio < 2 and 0.5 < res.finetune_ratio < 2


def test_exact_eps_star_is_the_crossing():
    setting = LinearSetting(100, 5)
    x, y = sample_data(setting, 20, np.random.default_rng(7))
    star, target = exact_eps_star(x, y, setting)
    ok = star > 1e-3
    for shift, below in ((0.9, True), (1.1, False)):
        e = star * shift
        theta, _ = gradient_descent(x, y, e, steps=600)
        loss = adversarial_loss_grad(theta, x, y, e)[0]
        assert np.all((loss <= target)[ok] == below)


def test_setting_rejects_theta_zero():
    with pytest.raises(ValueError, match="theta_norm must be > 0"):
        LinearSetting(100, 2, theta_norm=0.0)


def test_cli_simulate_linear(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["simulate-linear", "--d", "2,5", "--ratios", "0.1,10", "--repeats", "60",
                                 "--steps", "100", "--json", str(tmp_path / "s.json"), "--plot",
                                 str(tmp_path / "s.png"), "-q"])
    assert result.exit_code == 0, result.output
    assert "eps/sqrt(d/n)=0.1" in result.output and "eps*/sqrt(d/n)" in result.output
    data = json.loads((tmp_path / "s.json").read_text())
    assert [r["d"] for r in data] == [2, 5]
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    for args, match in ((["--d", "0"], "--d must be"), (["--ratios", "-1"], "--ratios must be > 0"),
                        (["--theta-norm", "0"], "theta_norm must be > 0"), (["--repeats", "3"], "repeats must")):
        bad = runner.invoke(app, ["simulate-linear", *args, "-q"])
        assert bad.exit_code == 2 and match in bad.output, bad.output


def _direct_rel_diff(x, y, eps, step, t):
    """‖θ_t(ε) − θ_t(0)‖ / ‖θ_t(0)‖ averaged over repeats, both GD runs written out at one step."""
    clean, adv = np.zeros((x.shape[0], x.shape[2])), np.zeros((x.shape[0], x.shape[2]))
    for _ in range(t):
        clean = clean - step * adversarial_loss_grad(clean, x, y, 0.0)[1]
        adv = adv - step * adversarial_loss_grad(adv, x, y, eps)[1]
    return float((np.linalg.norm(adv - clean, axis=-1) / np.linalg.norm(clean, axis=-1)).mean())


@pytest.mark.parametrize("ratios", [[0.0, 0.3], [0.0, 0.3, 10.0]])
def test_trajectories_of_a_pair_share_one_step(ratios):
    setting, repeats = LinearSetting(100, 10), 20
    res = simulate(setting, ratios, repeats=repeats, steps=30, lr=0.1, seed=3)
    rng = np.random.default_rng(3)
    sample_data(setting, repeats, rng)  # the reference datasets
    x, y = sample_data(setting, repeats, rng)
    assert res.rel_diff_curves[0] == [0.0] * 30  # ε = 0: the same run, at every t
    eps = 0.3 * setting.scale
    direct = _direct_rel_diff(x, y, eps, res.trajectory_lr, 5)
    assert res.rel_diff_curves[1][4] == pytest.approx(direct, rel=1e-9)
    if res.trajectory_lr == 0.1:
        # The clean step against lr / (1 + ε)² for the adversarial run, as before: the step dominates at t = 5.
        clean = gradient_descent(x, y, 0.0, lr=0.1, steps=5)[0]
        adv = gradient_descent(x, y, eps, lr=0.1, steps=5)[0]
        two_steps = float((np.linalg.norm(adv - clean, axis=-1) / np.linalg.norm(clean, axis=-1)).mean())
        assert two_steps > 2 * direct


def test_trajectory_step_is_the_clean_one_unless_the_grid_diverges_there():
    setting = LinearSetting(100, 5)
    stable = simulate(setting, [0.1, 1.0], repeats=20, steps=30, lr=0.1, seed=4)
    assert stable.trajectory_lr == 0.1 and "clean step" in stable.trajectory_step_rule
    assert stable.to_dict()["trajectory_lr"] == 0.1
    wide = simulate(setting, [0.1, 10.0], repeats=20, steps=30, lr=0.1, seed=4)
    eps_max = 10.0 * setting.scale
    assert wide.trajectory_lr == pytest.approx(0.1 / (1 + eps_max) ** 2)
    assert "the grid's smallest step" in wide.trajectory_step_rule and "eps/sqrt(d/n)=10" in wide.trajectory_step_rule
    # The clean step really diverges at ε_max, and the chosen one does not (its minimiser is θ = 0, about
    # which constant-step GD hovers a little above the loss at the start).
    x, y = sample_data(setting, 20, np.random.default_rng(4))
    start = adversarial_loss_grad(np.zeros((20, 5)), x, y, eps_max)[0]
    with np.errstate(over="ignore", invalid="ignore"):
        fast = gradient_descent(x, y, eps_max, lr=0.1, steps=30, scale_step=False)[0]
        assert not np.all(adversarial_loss_grad(fast, x, y, eps_max)[0] < 1e3 * start)
    slow = gradient_descent(x, y, eps_max, lr=wide.trajectory_lr, steps=30, scale_step=False)[0]
    assert np.all(adversarial_loss_grad(slow, x, y, eps_max)[0] <= 1.5 * start)


def test_cli_simulate_linear_names_the_trajectory_step(tmp_path):
    runner = CliRunner()
    smallest = f"{0.1 / (1 + 10 * 0.5**0.5 / 10**0.5) ** 2:.4g}"
    for ratios, step, rule in (("0.1,0.3", "0.1", "the clean step lr"), ("0.1,10", smallest, "the grid's smallest")):
        result = runner.invoke(app, ["simulate-linear", "--d", "5", "--ratios", ratios, "--repeats", "20",
                                     "--steps", "30", "--json", str(tmp_path / "s.json"), "-q"])
        assert result.exit_code == 0, result.output
        line = next(li for li in result.output.splitlines() if li.startswith("trajectories"))
        assert f"d=5: step {step} ({rule}" in line, line
        assert f"{json.loads((tmp_path / 's.json').read_text())[0]['trajectory_lr']:.4g}" == step
