"""FAB-T (Croce & Hein, ICML 2020, targeted): the smallest perturbation that crosses the boundary to one class.

Written from the paper's section 3. FAB searches for a minimal adversarial point rather than the worst point
of the ball. At the iterate δ it linearises the boundary between the label y and the target t,
``f(δ) = z_t − z_y ≈ f(δₖ) + ∇f·(δ − δₖ)``, and projects both the iterate and the clean point onto that
hyperplane (within the box, in the norm of the attack). The step is a convex combination of the two
projections, each extended by η = 1.05:
``δ ← (1 − α)(δₖ + η·p(δₖ)) + α·η·p(0)``, with ``α = min(‖p(δₖ)‖ / (‖p(δₖ)‖ + ‖p(0)‖), α_max = 0.1)``,
so the iterate is pulled towards the clean point. Whenever an iterate is misclassified it is kept if it is
the smallest so far and pulled back towards the clean point by β = 0.9. The sample counts as broken when the
smallest misclassified point found lies inside the ε-ball.

One forward and one input-gradient pass per iteration: the misclassification check reads the logits that the
gradient pass computes anyway (a point found at the last step is checked by one final forward).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._validation import check_choice, check_positive_int
from ..schedules import check_eps_value
from .domain import Bounds, InputDomain, Normalization
from .norms import NORMS
from .prepared import Prepared, domain_of, prepared

__all__ = ["ALPHA_MAX", "BETA", "ETA", "fab_targeted_perturb", "project_onto_hyperplane"]

ALPHA_MAX, ETA, BETA = 0.1, 1.05, 0.9  # the paper's (and AutoAttack's) settings


def _norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    flat = t.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def project_onto_hyperplane(point: torch.Tensor, w: torch.Tensor, b: torch.Tensor, low: torch.Tensor | None,
                            high: torch.Tensor | None, norm: str) -> torch.Tensor:
    """The smallest step ``e`` (in L∞ or L2) with ``w·(point + e) = b`` and ``low <= point + e <= high``.

    Per sample, rows of ``(N, D)`` tensors. Moving coordinate i in the direction that brings w·x towards b
    gives at most ``room_i`` (its distance to the box). The minimiser is ``e_i = σ_i min(τ s_i, room_i)``
    (s_i = 1 for L∞, |w_i| for L2) for the τ at which ``Σ |w_i| min(τ s_i, room_i)`` reaches |b − w·point|:
    sort the breakpoints ``room_i / s_i``, the sum is piecewise linear between them. When the box does not
    allow reaching the plane, every coordinate moves as far as it can. Unbounded: ``low = high = None``.
    """
    gap = b - (w * point).sum(1)  # what w·e must equal
    direction = torch.sign(gap)[:, None] * torch.sign(w)
    weight = w.abs()
    if low is None:
        room = torch.full_like(point, float("inf"))
    else:
        room = torch.where(direction > 0, high - point, point - low).clamp_min(0)
    scale = torch.ones_like(weight) if norm == "linf" else weight
    breaks = torch.where(weight > 0, room / scale.clamp_min(1e-30), torch.zeros_like(room))
    order = breaks.argsort(1)
    breaks_s = breaks.gather(1, order)
    saturated = torch.where(weight > 0, weight * room, torch.zeros_like(room)).gather(1, order).cumsum(1)
    slope_all = (weight * scale).sum(1, keepdim=True)
    slope_after = slope_all - (weight * scale).gather(1, order).cumsum(1)  # Σ over the coordinates not saturated
    reached = saturated + torch.where(slope_after > 0, breaks_s * slope_after, torch.zeros_like(slope_after))
    target = gap.abs()[:, None]
    k = (reached < target).sum(1, keepdim=True)  # how many coordinates saturate before the plane is reached
    before = torch.where(k > 0, saturated.gather(1, (k - 1).clamp_min(0)), torch.zeros_like(target))
    slope = torch.where(k > 0, slope_after.gather(1, (k - 1).clamp_min(0)), slope_all)
    tau = torch.where(slope > 0, (target - before) / slope.clamp_min(1e-30), torch.full_like(target, float("inf")))
    step = torch.minimum(tau * scale, room)
    return torch.where(weight > 0, direction * step, torch.zeros_like(step))


def fab_targeted_perturb(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, target_classes: torch.Tensor,
                         *, eps: float, norm: str = "linf", steps: int = 100,
                         bounds: Bounds | InputDomain = (0.0, 1.0), normalization: Normalization = None,
                         input_key: str | None = None,
                         model_kwargs: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """FAB-T towards ``target_classes``; returns ``(points, broken)``: broken where a misclassified point lies
    within ``eps`` (that point is returned; elsewhere the clean input).

    Args:
        model: the classifier (evaluated in eval mode; left exactly as found).
        inputs / labels: the batch and its true labels.
        target_classes: per sample, the class whose boundary with the label is linearised.
        eps: the radius a found point must lie in (pixel units); ``norm``: ``"linf"`` or ``"l2"``.
        steps: iterations (AutoAttack's standard version: 100 per target).
        bounds / normalization: the input domain, as for the other attacks.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(6, 1, 2, 2), torch.randint(0, 3, (6,))
        >>> adv, broken = fab_targeted_perturb(net, x, y, (y + 1) % 3, eps=0.5, steps=10)
        >>> bool((net(adv[broken]).argmax(1) != y[broken]).all())
        True
    """
    eps = check_eps_value(eps)
    norm = check_choice("norm", norm, NORMS)
    steps = check_positive_int("steps", steps)
    if not isinstance(target_classes, torch.Tensor) or target_classes.shape != labels.shape:
        raise ValueError("target_classes must be a tensor of one class per sample, shaped like labels")
    with prepared(model, inputs, labels, eps, norm, domain_of(bounds, normalization), ball=False,
                  input_key=input_key, model_kwargs=model_kwargs) as state:
        if state.classes < 2:
            raise ValueError(f"FAB-T needs logits (N, C) with at least 2 classes, got {state.classes}")
        best, size = _search(state, labels, target_classes, norm, steps)
        broken = size <= eps * (1 + 1e-6)
        delta = torch.where(broken.reshape((-1,) + (1,) * (best.ndim - 1)), best, torch.zeros_like(best))
        return state.inputs(delta), broken


def _search(state: Prepared, labels: torch.Tensor, targets: torch.Tensor, norm: str,
            steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest misclassified δ found per sample and its norm (inf where none was found)."""
    x = state.x
    n = x.shape[0]
    view = (n,) + (1,) * (x.ndim - 1)
    low, high = state.box()
    low_f, high_f = (None, None) if low is None else (low.reshape(n, -1), high.reshape(n, -1))
    delta = torch.zeros_like(x)
    best, size = torch.zeros_like(x), torch.full((n,), float("inf"), device=x.device)
    zero = torch.zeros(n, x[0].numel(), device=x.device, dtype=x.dtype)
    # Both projections (of the iterate and of the clean point) run as one batch of 2n rows; the box is fixed.
    low2, high2 = (None, None) if low_f is None else (torch.cat([low_f, low_f]), torch.cat([high_f, high_f]))
    for step in range(steps + 1):
        logits, f, grad = _difference_and_gradient(state, delta, labels, targets, need_grad=step < steps)
        wrong = logits.argmax(1) != labels
        current = _norm(delta, norm)
        smaller = wrong & (current < size)
        best = torch.where(smaller.reshape(view), delta, best)
        size = torch.where(smaller, current, size)
        if step == steps:
            break
        g = grad.reshape(n, -1)
        plane = (g * delta.reshape(n, -1)).sum(1) - f  # the linearised boundary: g·δ = plane
        delta = torch.where(wrong.reshape(view), BETA * delta, delta)  # back towards the clean point
        d = delta.reshape(n, -1)
        both = project_onto_hyperplane(torch.cat([d, zero]), torch.cat([g, g]), torch.cat([plane, plane]), low2,
                                       high2, norm)
        from_iterate, from_clean = both[:n], both[n:]
        a1, a2 = _norm(from_iterate, norm).clamp_min(1e-8), _norm(from_clean, norm).clamp_min(1e-8)
        alpha = (a1 / (a1 + a2)).clamp(0.0, ALPHA_MAX)[:, None]
        moved = (d + ETA * from_iterate) * (1 - alpha) + ETA * from_clean * alpha
        if low_f is not None:
            moved = torch.clamp(moved, low_f, high_f)
        delta = moved.reshape(x.shape)
    return best, size


def _difference_and_gradient(state: Prepared, delta: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
                             need_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits at δ, ``f = z_t − z_y`` per sample and its gradient in δ."""
    with torch.enable_grad():
        d = delta.detach().requires_grad_(need_grad)
        logits = state.forward(d)
        z = logits.float()
        f = z.gather(1, targets[:, None]).squeeze(1) - z.gather(1, labels[:, None]).squeeze(1)
        grad = torch.autograd.grad(f.sum(), d)[0] if need_grad else None
    return logits.detach(), f.detach(), grad
