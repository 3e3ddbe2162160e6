"""APGD (Croce & Hein, ICML 2020): PGD whose step size adapts per sample, with momentum.

Written from the paper's Algorithm 1 and section 3. From δ₀, the first step is ``P(δ₀ + η ∇f)``; then each
iteration takes ``z = P(δ_k + η · dir(∇f(δ_k)))`` and ``δ_{k+1} = P(δ_k + α (z − δ_k) + (1 − α)(δ_k − δ_{k−1}))``
with α = 0.75 (``dir`` is sign(·) for L∞ and ·/‖·‖₂ for L2; ``P`` the projection onto the ball and the
box). The initial step is η = 2ε. At the checkpoints ``w_j = ⌈p_j N⌉`` (p₀ = 0, p₁ = 0.22,
p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)) a sample halves its η and restarts from its best point when
fewer than ρ = 75 % of the steps since the last checkpoint increased its loss, or when neither its η nor
its best loss changed since then. Every quantity is per sample and lives on the device: the loop reads
nothing on the host, so it compiles and captures like PGD's. The result is each sample's best point
(the highest loss seen).

Also here: the DLR loss (difference of logits ratio), APGD's scale-invariant alternative to the
cross-entropy, and its targeted form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .criteria import Criterion, upcast
from .norms import Region, project_, steepest_direction_

__all__ = ["MOMENTUM", "RHO", "STOP_EVERY", "apgd_ascend_", "checkpoints", "dlr_loss", "targeted_dlr_loss"]

MOMENTUM = 0.75  # α of the paper
RHO = 0.75  # the fraction of loss-increasing steps below which η is halved
# Steps between two questions to ``should_stop`` (one host read each): a batch that is all broken at step k
# ends by step k + 4, and the reads cost under 1 % of a step of a large model (docs/performance.md).
STOP_EVERY = 4


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step: ``⌈p_j N⌉`` for the paper's p_j ≤ 1, without 0.

    Example:
        >>> checkpoints(100)
        [22, 41, 57, 70, 80, 87, 93, 99]
    """
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({min(math.ceil(q * steps - 1e-9), steps) for q in p[1:]} - {0})


def dlr_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample DLR loss ``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)`` (π sorts the logits in decreasing order).

    Invariant to shifting and rescaling the logits; needs at least 3 classes.
    """
    z = upcast(logits)
    if z.ndim != 2 or z.shape[1] < 3:
        raise ValueError(f"the DLR loss needs logits (N, C) with C >= 3 classes, got shape {tuple(z.shape)}")
    top, _ = z.sort(dim=1, descending=True)
    z_y = z.gather(1, targets[:, None]).squeeze(1)
    best_other = torch.where(top[:, 0] == z_y, top[:, 1], top[:, 0])
    return -(z_y - best_other) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, labels: torch.Tensor, target_classes: torch.Tensor) -> torch.Tensor:
    """Per-sample targeted DLR ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2)``; needs at least 4 classes."""
    z = upcast(logits)
    if z.ndim != 2 or z.shape[1] < 4:
        raise ValueError(f"the targeted DLR loss needs logits (N, C) with C >= 4 classes, got {tuple(z.shape)}")
    top, _ = z.sort(dim=1, descending=True)
    z_y = z.gather(1, labels[:, None]).squeeze(1)
    z_t = z.gather(1, target_classes[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _loss_and_grad(forward: Any, d: torch.Tensor, criterion: Criterion, targets: torch.Tensor, sign: float,
                   loss_scale: float, need_grad: bool, first: list) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward at δ: the per-sample (signed) loss, and its gradient in δ when ``need_grad``."""
    with torch.set_grad_enabled(need_grad):
        logits = forward(d)
        if first[0] is not None:
            first[0](logits)
            first[0] = None
        loss = criterion(logits, targets)
        if loss.ndim != 1:
            raise ValueError("APGD needs a criterion that returns one loss per sample")
        loss = loss.float() * sign  # maximised
        if not need_grad:
            return loss.detach(), None
        (grad,) = torch.autograd.grad(loss.sum() * loss_scale if loss_scale != 1.0 else loss.sum(), d)
    return loss.detach(), grad


def apgd_ascend_(delta: torch.Tensor, forward: Any, criterion: Criterion, targets: torch.Tensor, *, region: Region,
                 steps: int, step_size: float, sign: float, loss_scale: float, on_first_logits: Any = None,
                 should_stop: Callable[[], bool] | None = None, eot: int = 1) -> torch.Tensor:
    """APGD's iterations from ``delta`` (the same arguments as PGD's ``ascend_``; ``step_size`` is the initial η).

    ``steps`` gradient steps (``steps + 1`` forward passes: the last point is evaluated too); returns each
    sample's best δ, detached. ``should_stop()``, when given, is asked every :data:`STOP_EVERY` steps (the
    caller's host read) and ends the loop early when true. With ``eot > 1`` each loss and gradient is the mean
    over ``eot`` forwards (a randomised model draws anew at each).
    """
    view = (delta.shape[0],) + (1,) * (delta.ndim - 1)
    norm = region.norm
    first = [on_first_logits]

    def value_and_grad(d: torch.Tensor, need_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        d = d.detach().requires_grad_(need_grad)
        draws = [_loss_and_grad(forward, d, criterion, targets, sign, loss_scale, need_grad, first) for _ in range(eot)]
        loss = sum(draw[0] for draw in draws) / eot if eot > 1 else draws[0][0]
        grad = None if not need_grad else sum(draw[1] for draw in draws) / eot if eot > 1 else draws[0][1]
        if grad is not None and loss_scale != 1.0:
            torch.nan_to_num_(grad, nan=0.0, posinf=1.0, neginf=-1.0)
        return loss, grad

    def ascent_step(d: torch.Tensor, grad: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        return project_(d + eta * steepest_direction_(grad, norm), *region)  # grad is spent here

    eta = torch.full(view, float(step_size), dtype=delta.dtype, device=delta.device)
    loss, grad = value_and_grad(delta)
    best, best_loss, best_grad = delta.detach().clone(), loss.clone(), grad.clone()
    previous, x = best.clone(), ascent_step(best, grad, eta)
    marks, last_mark = set(checkpoints(steps)), 0
    increases = torch.zeros_like(loss)
    eta_at_mark, best_at_mark, loss_before = eta.clone(), best_loss.clone(), loss
    for k in range(1, steps + 1):
        loss, grad = value_and_grad(x, need_grad=k < steps)
        improved = loss > best_loss
        best = torch.where(improved.reshape(view), x, best)
        best_loss = torch.where(improved, loss, best_loss)
        increases += (loss > loss_before).to(increases.dtype)
        loss_before = loss
        if k == steps:
            break
        best_grad = torch.where(improved.reshape(view), grad, best_grad)
        if should_stop is not None and k % STOP_EVERY == 0 and should_stop():
            break
        if k in marks:  # halve η and restart from the best point where progress stalled
            stalled = (increases < RHO * (k - last_mark)) | (
                (eta == eta_at_mark).reshape(-1) & (best_loss == best_at_mark))
            s = stalled.reshape(view)
            eta = torch.where(s, eta / 2, eta)
            x, previous, grad = torch.where(s, best, x), torch.where(s, best, previous), torch.where(s, best_grad, grad)
            increases.zero_()
            eta_at_mark, best_at_mark, last_mark = eta.clone(), best_loss.clone(), k
        z = ascent_step(x, grad, eta)
        x, previous = project_(x + MOMENTUM * (z - x) + (1 - MOMENTUM) * (x - previous), *region), x
    return best.detach()
