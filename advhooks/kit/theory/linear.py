"""Linear regression under an L2 attack (the paper's section 4), vectorised over repeats with numpy.

Model: x ~ N(0, I_d), y = θ0ᵀx + noise (noise ~ N(0, σ²)), squared loss. The inner maximisation has the
closed form max_{‖z‖₂≤ε} (y − θᵀ(x+z))² = (|y − θᵀx| + ε‖θ‖₂)², so adversarial training is full-batch
gradient descent on R̂(θ, ε) = mean (|r| + ε‖θ‖)², r = y − θᵀx (convex in θ).

Measurements (Figures 2 and 3 of the paper):

- relative difference ‖θ_t(ε) − θ_t(0)‖ / ‖θ_t(0)‖ along the trajectories, same data and zero start, and
  both runs of a pair at one step (see :func:`simulate`), so that the curves measure ε and not the step;
- relative difference of the endpoints θ^(T)(ε) and θ^(T)(0) (each run at its own step, near its minimiser);
- parameter p-value: θ^(T)(ε) of each repeat against the distribution of θ^(T)(0) over ``repeats``
  independent clean runs on *other* datasets, by Hotelling's T² prediction test: with the reference
  mean μ and covariance S of m clean runs, T² = m/(m+1)·(θ − μ)ᵀS⁻¹(θ − μ) and
  (m − d)/(d(m − 1))·T² ~ F(d, m − d) under the null, so p-values are uniform at ε = 0;
- loss p-value: R̂(θ^(T)(ε), ε) against the empirical distribution of clean training losses
  R̂(θ^(T)(0), 0) of the reference runs, upper tail, (1 + #{clean ≥ x}) / (m + 1);
- the loss-criterion ε* of each repeat: sup{ε : R̂(θ̂(ε), ε) ≤ R(θ̂(0), 0)} with the exact population
  clean risk R(θ, 0) = ‖θ − θ0‖² + σ², found by bisection (R̂(θ̂(ε), ε) increases with ε);
- the gradient-based estimators of :mod:`advhooks.kit.estimate` applied to this model: the first-order
  Δ / mean‖∇ₓℓ‖₂ (here ‖∇ₓℓ‖₂ = 2|r|‖θ‖) and the fine-tune + linear extrapolation from θ̂(0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "LinearSetting",
    "SimulationResult",
    "adversarial_loss_grad",
    "adversarial_sq_loss",
    "exact_eps_star",
    "format_simulation",
    "gradient_descent",
    "population_adversarial_risk",
    "sample_data",
    "simulate",
]

_TINY = 1e-12


@dataclass(frozen=True)
class LinearSetting:
    """n samples in d dimensions, noise σ, ‖θ0‖ (θ0 = ‖θ0‖ · (1, …, 1)/√d; ‖θ0‖ > 0, else ε* = ∞)."""

    n: int
    d: int
    sigma: float = 1.0
    theta_norm: float = 1.0

    def __post_init__(self) -> None:
        if self.n < 2 or self.d < 1:
            raise ValueError(f"need n >= 2 and d >= 1, got n={self.n}, d={self.d}")
        if not self.theta_norm > 0:
            raise ValueError(f"theta_norm must be > 0 (with theta0 = 0, eps* is infinite), got {self.theta_norm}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")

    @property
    def theta0(self) -> np.ndarray:
        """The true coefficient."""
        return np.full(self.d, self.theta_norm / math.sqrt(self.d))

    @property
    def scale(self) -> float:
        """√(d/n), the paper's transition scale."""
        return math.sqrt(self.d / self.n)


def sample_data(setting: LinearSetting, repeats: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``repeats`` independent datasets: X ``(R, n, d)``, y ``(R, n)``."""
    x = rng.standard_normal((repeats, setting.n, setting.d))
    y = x @ setting.theta0 + setting.sigma * rng.standard_normal((repeats, setting.n))
    return x, y


def adversarial_sq_loss(theta: np.ndarray, x: np.ndarray, y: np.ndarray, eps: float | np.ndarray) -> np.ndarray:
    """Per-sample (|y − θᵀx| + ε‖θ‖)², the worst squared loss in the L2 ε-ball; shapes (R, d), (R, n, d), (R, n)."""
    eps = np.asarray(eps, dtype=float).reshape(-1, 1) if np.ndim(eps) else float(eps)
    r = y - np.einsum("rnd,rd->rn", x, theta)
    return (np.abs(r) + eps * np.linalg.norm(theta, axis=-1, keepdims=True)) ** 2


def adversarial_loss_grad(theta: np.ndarray, x: np.ndarray, y: np.ndarray,
                          eps: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R̂(θ, ε) = mean_i (|r_i| + ε‖θ‖)² and its gradient in θ (subgradient 0 for the norm at θ = 0)."""
    eps = np.asarray(eps, dtype=float).reshape(-1, 1) if np.ndim(eps) else float(eps)
    r = y - np.einsum("rnd,rd->rn", x, theta)
    norm = np.linalg.norm(theta, axis=-1, keepdims=True)
    m = np.abs(r) + eps * norm
    loss = (m**2).mean(axis=-1)
    unit = theta / np.maximum(norm, _TINY)
    grad = 2 * (np.einsum("rn,rnd->rd", -m * np.sign(r), x) + (m.sum(axis=-1, keepdims=True) * eps) * unit)
    return loss, grad / x.shape[1]


def population_adversarial_risk(theta: np.ndarray, setting: LinearSetting, eps: float) -> np.ndarray:
    """E(|r| + ε‖θ‖)² with r ~ N(0, s²), s² = ‖θ − θ0‖² + σ²: s² + 2ε‖θ‖ s √(2/π) + ε²‖θ‖²."""
    s = np.sqrt(np.sum((theta - setting.theta0) ** 2, axis=-1) + setting.sigma**2)
    t = np.linalg.norm(theta, axis=-1)
    return s**2 + 2 * eps * t * s * math.sqrt(2 / math.pi) + (eps * t) ** 2


def gradient_descent(x: np.ndarray, y: np.ndarray, eps: float | np.ndarray, *, lr: float = 0.1, steps: int = 300,
                     theta_init: np.ndarray | None = None, record: bool = False,
                     scale_step: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Full-batch GD on R̂(·, ε) from zero (or ``theta_init``); returns θ^(T) and, with ``record``, θ_1..θ_T.

    The step is ``lr / (1 + ε)²`` (``scale_step``, the default): the smoothness of R̂(·, ε) grows like
    (1 + ε)², so a fixed step that converges for clean training diverges for large ε. The step then differs
    from the clean one at every ε > 0 (0.83 · lr at ε = 0.095), which changes the early iterates as much as ε
    does; ``scale_step=False`` uses ``lr`` itself at every ε, to compare trajectories at one step.
    """
    theta = np.zeros((x.shape[0], x.shape[2])) if theta_init is None else theta_init.copy()
    if scale_step:
        eps_arr = np.asarray(eps, dtype=float)
        lr = lr / (1 + eps_arr.reshape(-1, 1)) ** 2 if eps_arr.ndim else lr / (1 + float(eps)) ** 2
    path = np.empty((steps,) + theta.shape) if record else None
    for t in range(steps):
        _, g = adversarial_loss_grad(theta, x, y, eps)
        theta = theta - lr * g
        if record:
            path[t] = theta
    return theta, path


def exact_eps_star(x: np.ndarray, y: np.ndarray, setting: LinearSetting, *, lr: float = 0.1, steps: int = 300,
                   iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Per repeat, the loss-criterion ε* (by bisection) and the clean test risk R(θ̂(0), 0)."""
    theta0_hat, _ = gradient_descent(x, y, 0.0, lr=lr, steps=steps)
    target = np.sum((theta0_hat - setting.theta0) ** 2, axis=-1) + setting.sigma**2
    lo = np.zeros(x.shape[0])
    hi = np.full(x.shape[0], 0.5)
    for _ in range(40):  # grow hi until R̂(θ̂(hi), hi) > R(θ̂(0), 0) everywhere
        theta, _ = gradient_descent(x, y, hi, lr=lr, steps=steps, theta_init=theta0_hat)
        below = adversarial_loss_grad(theta, x, y, hi)[0] <= target
        if not below.any():
            break
        hi = np.where(below, hi * 2, hi)
    theta = theta0_hat
    for _ in range(iterations):
        mid = (lo + hi) / 2
        theta, _ = gradient_descent(x, y, mid, lr=lr, steps=steps // 3, theta_init=theta)
        below = adversarial_loss_grad(theta, x, y, mid)[0] <= target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2, target


def _hotelling_pvalues(samples: np.ndarray, reference: np.ndarray) -> np.ndarray:
    m, d = reference.shape
    mu = reference.mean(axis=0)
    cov = np.cov(reference, rowvar=False).reshape(d, d)
    diff = samples - mu
    t2 = m / (m + 1) * np.einsum("rd,dk,rk->r", diff, np.linalg.inv(cov), diff)
    f = (m - d) / (d * (m - 1)) * t2
    return stats.f.sf(f, d, m - d)


def _upper_tail_pvalues(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    ref = np.sort(reference)
    greater_equal = ref.size - np.searchsorted(ref, values, side="left")
    return (1 + greater_equal) / (ref.size + 1)


@dataclass
class SimulationResult:
    """Figures 2 and 3 in numbers, for one (n, d) and a list of ε / √(d/n) ratios.

    ``rel_diff_final`` compares the endpoints θ^(T)(ε) and θ^(T)(0), each run at its own step (lr / (1 + ε)²
    and lr), as the p-values do; ``rel_diff_curves`` compares the trajectories with both runs of each pair at
    the one step ``trajectory_lr``, chosen by ``trajectory_step_rule`` (see :func:`simulate`). Their last
    points differ where that step is too small for T steps to converge.
    """

    n: int
    d: int
    ratios: list[float]
    eps: list[float]
    param_pvalue: list[float]
    loss_pvalue: list[float]
    rel_diff_final: list[float]
    rel_diff_curves: list[list[float]]
    eps_star_median: float
    eps_star_iqr: tuple[float, float]
    first_order_ratio: float
    finetune_ratio: float
    repeats: int
    steps: int
    lr: float
    trajectory_lr: float
    trajectory_step_rule: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain values."""
        return asdict(self)


def simulate(setting: LinearSetting, ratios: Sequence[float], *, repeats: int = 300, steps: int = 300,
             lr: float = 0.1, seed: int = 0, progress: Callable[[str], None] | None = None) -> SimulationResult:
    """Run the section-4 measurements for one (n, d) at ε = ratio · √(d/n) for each ratio.

    Args:
        setting: n, d, σ, ‖θ0‖.
        ratios: ε / √(d/n) values (the table's columns).
        repeats: clean reference runs and adversarial runs (independent datasets each).
        steps / lr: gradient descent (from zero); the endpoints (p-values, ``rel_diff_final``, ε*) use step
            ``lr`` for clean training and lr / (1 + ε)² at ε, as :func:`gradient_descent` does.
        seed: seeds everything.
        progress: called with a line of text per ε.

    The trajectories (``rel_diff_curves``, Figure 2 left) run both members of each clean/adversarial pair at
    one step, the same for every ε of the grid: the clean step ``lr`` when GD at ``lr`` is stable on R̂(·, ε)
    for every ε of the grid, otherwise the smallest of the grid's steps, lr / (1 + ε_max)² (the step of the
    ε_max endpoint run, so stable there, and below every other ε's own step). Stable means a concrete
    check, not a bound (R̂ has kinks, so no smoothness bound holds near them): after T steps at ``lr`` the
    loss of every repeat is within 0.1% of the loss its endpoint run reaches; a step that diverges, or that
    oscillates about the kinks of |r| and ‖θ‖, ends above it.
    """
    if repeats <= setting.d + 1:
        raise ValueError(f"repeats must exceed d + 1 for the Hotelling test, got {repeats} with d = {setting.d}")
    rng = np.random.default_rng(seed)
    x_ref, y_ref = sample_data(setting, repeats, rng)
    x, y = sample_data(setting, repeats, rng)
    ref_theta, _ = gradient_descent(x_ref, y_ref, 0.0, lr=lr, steps=steps)
    ref_loss = adversarial_loss_grad(ref_theta, x_ref, y_ref, 0.0)[0]
    clean_theta, _ = gradient_descent(x, y, 0.0, lr=lr, steps=steps)
    clean_norm = np.maximum(np.linalg.norm(clean_theta, axis=-1), _TINY)

    eps_list = [float(ratio) * setting.scale for ratio in ratios]
    p_param, p_loss, rel_final, end_loss = [], [], [], []
    for ratio, eps in zip(ratios, eps_list, strict=True):
        theta, _ = gradient_descent(x, y, eps, lr=lr, steps=steps)
        loss = adversarial_loss_grad(theta, x, y, eps)[0]
        p_param.append(float(_hotelling_pvalues(theta, ref_theta).mean()))
        p_loss.append(float(_upper_tail_pvalues(loss, ref_loss).mean()))
        rel_final.append(float((np.linalg.norm(theta - clean_theta, axis=-1) / clean_norm).mean()))
        end_loss.append(loss)
        if progress:
            progress(f"n={setting.n} d={setting.d} eps/sqrt(d/n)={ratio:g}")
    curves, traj_lr, rule = _trajectories(x, y, ratios, eps_list, end_loss, lr=lr, steps=steps)

    star, r_star = exact_eps_star(x, y, setting, lr=lr, steps=steps)
    first, fine = _gradient_estimators(x, y, setting, star, r_star, lr=lr, steps=steps)
    q1, q3 = np.percentile(star, [25, 75])
    return SimulationResult(
        n=setting.n, d=setting.d, ratios=[float(r) for r in ratios], eps=eps_list, param_pvalue=p_param,
        loss_pvalue=p_loss, rel_diff_final=rel_final, rel_diff_curves=curves, eps_star_median=float(np.median(star)),
        eps_star_iqr=(float(q1), float(q3)), first_order_ratio=first, finetune_ratio=fine, repeats=repeats,
        steps=steps, lr=lr, trajectory_lr=traj_lr, trajectory_step_rule=rule,
        extra={"sqrt_d_over_n": setting.scale, "d_over_n": setting.d / setting.n,
               "eps_star_over_sqrt_d_over_n": float(np.median(star)) / setting.scale,
               "eps_star_over_d_over_n": float(np.median(star)) / (setting.d / setting.n)},
    )


_STABLE_RTOL = 1e-3  # GD at a step is stable at ε if it ends within this of the endpoint run's loss


def _trajectories(x: np.ndarray, y: np.ndarray, ratios: Sequence[float], eps_list: list[float],
                  end_loss: list[np.ndarray], *, lr: float, steps: int) -> tuple[list[list[float]], float, str]:
    """Figure 2's curves at one step for every pair: (curves, step, rule); the rule is :func:`simulate`'s."""
    curves, unstable = _curves_at(x, y, eps_list, lr, steps, end_loss)
    if unstable is None:
        return curves, lr, "the clean step lr, stable at every eps of the grid"
    step = lr / (1 + max(eps_list)) ** 2
    curves, _ = _curves_at(x, y, eps_list, step, steps)
    return curves, step, f"the grid's smallest step lr/(1+eps_max)^2, lr unstable at eps/sqrt(d/n)={ratios[unstable]:g}"


def _curves_at(x: np.ndarray, y: np.ndarray, eps_list: list[float], step: float, steps: int,
               end_loss: list[np.ndarray] | None = None) -> tuple[list[list[float]], int | None]:
    """Mean over repeats of ‖θ_t(ε) − θ_t(0)‖ / ‖θ_t(0)‖ per t, both runs at ``step``, for each ε.

    With ``end_loss``, checks the largest ε first that the run at ``step`` is stable (ends within
    ``_STABLE_RTOL`` of that loss for every repeat) and stops at the first that is not: ([], its index).
    """
    _, clean = gradient_descent(x, y, 0.0, lr=step, steps=steps, record=True)
    norms = np.maximum(np.linalg.norm(clean, axis=-1), _TINY)
    curves: list[list[float]] = [[] for _ in eps_list]
    for i in sorted(range(len(eps_list)), key=lambda k: -eps_list[k]):
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging run overflows
            theta, path = gradient_descent(x, y, eps_list[i], lr=step, steps=steps, record=True, scale_step=False)
            if end_loss is not None and not np.all(
                    adversarial_loss_grad(theta, x, y, eps_list[i])[0] <= end_loss[i] * (1 + _STABLE_RTOL)):
                return [], i
        curves[i] = [float(v) for v in (np.linalg.norm(path - clean, axis=-1) / norms).mean(axis=1)]
    return curves, None


def _gradient_estimators(x: np.ndarray, y: np.ndarray, setting: LinearSetting, star: np.ndarray, r_star: np.ndarray,
                         *, lr: float, steps: int) -> tuple[float, float]:
    """Median ratios estimate / exact ε* of the first-order and fine-tune + extrapolate estimators."""
    theta0_hat, _ = gradient_descent(x, y, 0.0, lr=lr, steps=steps)
    r = y - np.einsum("rnd,rd->rn", x, theta0_hat)
    train = (r**2).mean(axis=-1)
    gap = r_star - train
    grad_norm = (2 * np.abs(r) * np.linalg.norm(theta0_hat, axis=-1, keepdims=True)).mean(axis=-1)
    first = gap / np.maximum(grad_norm, _TINY)
    # Fine-tune: from θ̂(0), a short GD at a few ε below the first-order estimate (as the CLI picks them from
    # the clean probe), a least-squares line through the losses, solved at R(θ̂(0), 0).
    points = np.outer(np.array([0.25, 0.5, 0.75]), first)
    losses = np.stack([adversarial_loss_grad(gradient_descent(x, y, e, lr=lr, steps=max(steps // 10, 10),
                                                              theta_init=theta0_hat)[0], x, y, e)[0] for e in points])
    slope = ((points - points.mean(0)) * (losses - losses.mean(0))).sum(0) / ((points - points.mean(0)) ** 2).sum(0)
    intercept = losses.mean(0) - slope * points.mean(0)
    fine = (r_star - intercept) / slope
    return float(np.median(first / star)), float(np.median(fine / star))


def format_simulation(results: Sequence[SimulationResult]) -> str:
    """Results of one ``n`` over several ``d`` as the two tables ``advhooks simulate-linear`` prints: the p-values
    and parameter differences per ε / √(d/n), then ε* against √(d/n) and d/n."""
    first = results[0]
    ratios = first.ratios
    lines = [f"n = {first.n}, {first.repeats} repeats, GD {first.steps} steps; cells: p-value of theta / p-value of "
             "the training loss / relative parameter difference at T",
             f"{'d':>4}  " + "".join(f"{'eps/sqrt(d/n)=' + format(r, 'g'):>24}" for r in ratios)]
    for res in results:
        cells = "".join(f"{f'{p:.3f} / {q:.3f} / {rd:.3f}':>24}"
                        for p, q, rd in zip(res.param_pvalue, res.loss_pvalue, res.rel_diff_final, strict=True))
        lines.append(f"{res.d:>4}  {cells}")
    lines += ["trajectories (--plot, Figure 2 left): each clean/adversarial pair at one step; "
              + "; ".join(f"d={res.d}: step {res.trajectory_lr:.4g} ({res.trajectory_step_rule})" for res in results),
              "",
              f"{'d':>4}  {'eps* (median, IQR)':>26}  {'sqrt(d/n)':>9}  {'eps*/sqrt(d/n)':>14}  {'d/n':>6}  "
              f"{'eps*/(d/n)':>10}  {'first-order/eps*':>16}  {'finetune/eps*':>13}"]
    for res in results:
        iqr = f"{res.eps_star_median:.4f} ({res.eps_star_iqr[0]:.3f}-{res.eps_star_iqr[1]:.3f})"
        lines.append(f"{res.d:>4}  {iqr:>26}  {res.extra['sqrt_d_over_n']:>9.3f}  "
                     f"{res.extra['eps_star_over_sqrt_d_over_n']:>14.3f}  {res.extra['d_over_n']:>6.3f}  "
                     f"{res.extra['eps_star_over_d_over_n']:>10.3f}  {res.first_order_ratio:>16.3f}  "
                     f"{res.finetune_ratio:>13.3f}")
    return "\n".join(lines)
