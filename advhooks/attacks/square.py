"""Square (Andriushchenko et al., ECCV 2020): a random search that needs no gradient, L∞ and L2.

Written from the paper's Algorithms 1–3. Each query changes δ inside one random square window per sample
(per channel, a random sign times ε for L∞; for L2 a centred two-lobed pattern that moves mass out of a second
window into the first, keeping ‖δ‖₂ = ε) and keeps the change where the margin loss went down. The window's
side follows the paper's schedule of ``p``, the fraction of pixels changed: :data:`P_INIT` halved at
10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000 queries (rescaled to the budget). L∞ starts
from vertical stripes of ±ε, L2 from a 5×5 tiling of the pattern.

Because it uses no gradient, a model whose gradients mislead (a quantising input layer, saturated logits)
does not fool it: it is the check against gradient masking in the ``standard`` suite. Every sample draws its
own windows and signs; only the samples not yet broken are queried: the batch shrinks to them every
:data:`CHECK_EVERY` queries (one host read each), and in between a broken sample keeps its breaking point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._outputs import call_model
from .._validation import check_choice, check_positive_int
from ..schedules import check_eps_value
from .domain import Bounds, InputDomain, Normalization
from .norms import NORMS, project_
from .prepared import Prepared, domain_of, prepared

__all__ = ["CHECK_EVERY", "P_HALVINGS", "P_INIT", "margin_loss", "p_schedule", "square_perturb"]

# The query counts (of 10,000) after which Square halves p, from the paper's schedule.
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# The initial fraction of pixels in a window: the paper's 0.8, for L∞ and L2 (AutoAttack's standard version too).
P_INIT = 0.8
# Queries between two shrinks of the batch to its unbroken samples: one host read each.
CHECK_EVERY = 10


def p_schedule(query: int, n_queries: int, p_init: float = P_INIT) -> float:
    """The fraction of pixels Square changes at ``query`` (0-based) of ``n_queries``.

    Example:
        >>> [p_schedule(q, 10_000) for q in (0, 11, 9000)]
        [0.8, 0.4, 0.0015625]
    """
    scaled = int(query / n_queries * 10_000)
    return p_init / 2 ** sum(scaled > h for h in P_HALVINGS)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Per-sample margin Square minimises: ``z_y − max_{j≠y} z_j``, or ``max_{j≠t} z_j − z_t`` towards target t.

    Below zero exactly when the sample is misclassified (untargeted) or classified as the target.
    """
    z = logits.float()
    own = z.gather(1, labels[:, None]).squeeze(1)
    other = z.scatter(1, labels[:, None], float("-inf")).amax(1)
    return other - own if targeted else own - other


def square_perturb(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, eps: float, norm: str = "linf",
                   n_queries: int = 5000, targeted: bool = False,
                   bounds: Bounds | InputDomain = (0.0, 1.0), normalization: Normalization = None,
                   generator: torch.Generator | None = None, input_key: str | None = None,
                   model_kwargs: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Square attack on a batch of images ``(N, C, H, W)``; returns ``(adversarial inputs, broken)``.

    Args:
        model: the classifier (evaluated in eval mode; left exactly as found).
        inputs: images ``(N, C, H, W)``, in pixel units or normalised (``normalization=``).
        labels: true labels, or target labels when ``targeted``.
        eps: the radius in pixel units; ``norm``: ``"linf"`` or ``"l2"``.
        n_queries: the query budget per sample (AutoAttack's standard version: 5000).
        targeted: reach ``labels`` as the predicted class instead of leaving it.
        bounds / normalization: the input domain, as for the other attacks.
        generator: random generator for the windows and signs (on the inputs' device).

    Returns:
        The points (each sample's lowest-margin point; the breaking point for a broken sample) and a bool mask
        of the samples whose margin went below zero.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.randint(0, 3, (4,))
        >>> adv, broken = square_perturb(net, x, y, eps=0.1, n_queries=20)
        >>> bool((adv - x).abs().max() <= 0.1 + 1e-6)
        True
    """
    eps = check_eps_value(eps)
    norm = check_choice("norm", norm, NORMS)
    n_queries = check_positive_int("n_queries (Square's query budget)", n_queries)
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"Square needs image batches (N, C, H, W), got {shape}: its windows are squares of pixels; "
                         "for other inputs evaluate with suite='apgd' (APGD-CE, APGD-T)")
    with prepared(model, inputs, labels, eps, norm, domain_of(bounds, normalization), input_key=input_key,
                  model_kwargs=model_kwargs) as state:
        if eps == 0.0:
            margin = margin_loss(state.forward(torch.zeros_like(state.x)), labels, targeted)
            return inputs.clone(), margin < 0
        delta = _search(state, labels, eps, norm, n_queries, targeted, generator)
        adv = state.inputs(delta)
        return adv, margin_loss(state.forward(delta), labels, targeted) < 0


def _search(state: Prepared, labels: torch.Tensor, eps: float, norm: str, n_queries: int, targeted: bool,
            generator: torch.Generator | None) -> torch.Tensor:
    """Each sample's best δ after the queries (the search itself; see the module docs).

    Between two shrinks the loop works on compact copies of the unbroken rows (no gather per query); the
    copies go back into the batch at each shrink.
    """
    delta = project_(_initial(state.x, eps, norm, generator), norm, eps, *state.box())
    best = margin_loss(state.forward(delta), labels, targeted)
    active = torch.arange(state.x.shape[0], device=state.x.device)
    rows = None
    for query in range(n_queries):
        if query % CHECK_EVERY == 0:  # the only host read: shrink to the samples still unbroken
            if rows is not None:
                delta[active], best[active] = rows.delta, rows.best
            active = active[best[active] >= 0]
            if active.numel() == 0:
                return delta
            rows = _Rows(state, active, delta, best, labels)
        size = _window_side(p_schedule(query, n_queries), state.x, norm)
        candidate = project_(_propose(rows.delta, size, eps, norm, generator), norm, eps, rows.low, rows.high)
        margin = margin_loss(call_model(state.module, rows.inputs(candidate), state.input_key, state.model_kwargs),
                             rows.labels, targeted)
        improved = (margin < rows.best) & (rows.best >= 0)  # a broken sample keeps its breaking point
        rows.delta = torch.where(improved.reshape(-1, 1, 1, 1), candidate, rows.delta)
        rows.best = torch.where(improved, margin, rows.best)
    if rows is not None:
        delta[active], best[active] = rows.delta, rows.best
    return delta


class _Rows:
    """Compact copies of the rows ``index`` of the batch: inputs, δ, its box, labels, best margins."""

    def __init__(self, state: Prepared, index: torch.Tensor, delta: torch.Tensor, best: torch.Tensor,
                 labels: torch.Tensor) -> None:
        self.x, self.inv_std = state.x[index], state.placed.inv_std
        self.low, self.high = state.box(index)
        self.delta, self.best, self.labels = delta[index], best[index], labels[index]

    def inputs(self, delta: torch.Tensor) -> torch.Tensor:
        return self.x + (delta if self.inv_std is None else delta * self.inv_std)


def _window_side(p: float, x: torch.Tensor, norm: str) -> int:
    """The side of the square window for fraction ``p`` (at least 1 for L∞, 3 and odd for L2; fits the image)."""
    h, w = x.shape[-2:]
    side = int(round(math.sqrt(p * h * w)))
    if norm == "l2":
        side = max(side, 3)
        side += side % 2 == 0
    return max(1, min(side, h, w))


def _signs(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (2 * bits - 1).to(like.dtype)


def _window_mask(n: int, side: int, like: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """A random ``side``-square per sample: its mask ``(n, 1, H, W)`` and its rows/cols relative to the corner."""
    h, w = like.shape[-2:]
    top = torch.randint(0, h - side + 1, (n, 1), generator=generator, device=like.device)
    left = torch.randint(0, w - side + 1, (n, 1), generator=generator, device=like.device)
    rows = torch.arange(h, device=like.device)[None] - top  # (n, H)
    cols = torch.arange(w, device=like.device)[None] - left  # (n, W)
    inside = ((rows >= 0) & (rows < side))[:, :, None] & ((cols >= 0) & (cols < side))[:, None, :]
    return inside[:, None], rows.clamp(0, side - 1), cols.clamp(0, side - 1)


def _propose(delta: torch.Tensor, side: int, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """One candidate per sample: δ changed inside a random window."""
    n, c = delta.shape[:2]
    mask, rows, cols = _window_mask(n, side, delta, generator)
    if norm == "linf":
        return torch.where(mask, eps * _signs((n, c, 1, 1), delta, generator), delta)
    return _propose_l2(delta, mask, rows, cols, side, eps, generator)


def _propose_l2(delta, mask, rows, cols, side, eps, generator) -> torch.Tensor:
    """L2: the first window gets the pattern plus its old direction, rescaled to take the second window's mass."""
    n, c = delta.shape[:2]
    second, _, _ = _window_mask(n, side, delta, generator)
    pattern = _two_lobes(side, delta, generator, n)  # (n, side, side)
    placed = pattern[torch.arange(n, device=delta.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    placed = placed[:, None] * _signs((n, c, 1, 1), delta, generator)  # (n, c, H, W), valid inside `mask`
    in_first = delta * mask
    old = in_first / in_first.square().sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12)
    new = (placed + old) * mask
    new = new / new.square().sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12)
    total = delta.square().sum((1, 2, 3), keepdim=True)
    both = (delta * (mask | second)).square().sum((1, 2, 3), keepdim=True)
    new = new * ((eps ** 2 - total).clamp_min(0) / c + both).sqrt()
    out = torch.where(second, torch.zeros_like(delta), delta)
    out = torch.where(mask, new, out)
    return out * (eps / out.flatten(1).norm(dim=1).clamp_min(1e-12)).reshape(-1, 1, 1, 1)


def _rectangles(rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    """Concentric rectangles around the centre, the k-th ring weighted 1/(k+1)², unit L2 norm."""
    r = torch.arange(rows, device=like.device, dtype=like.dtype)[:, None]
    q = torch.arange(cols, device=like.device, dtype=like.dtype)[None, :]
    ring = torch.maximum((r - (rows // 2)).abs(), (q - (cols // 2)).abs())
    rings = torch.arange(max(rows // 2, cols // 2) + 1, device=like.device, dtype=like.dtype)
    out = ((ring[None] <= rings[:, None, None]).to(like.dtype) / (rings[:, None, None] + 1) ** 2).sum(0)
    return out / out.norm().clamp_min(1e-12)


def _two_lobes(side: int, like: torch.Tensor, generator: torch.Generator | None, n: int) -> torch.Tensor:
    """The L2 window pattern: a positive lobe over a negative one, unit norm, transposed for a random half."""
    top = side // 2
    lobes = torch.cat([_rectangles(top, side, like), -_rectangles(side - top, side, like)]) if top else \
        _rectangles(side, side, like)
    lobes = lobes / lobes.norm().clamp_min(1e-12)
    flip = torch.rand((n, 1, 1), generator=generator, device=like.device) < 0.5
    return torch.where(flip, lobes.T[None], lobes[None])


def _initial(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """The start: vertical stripes of ±ε (L∞), or a 5×5 tiling of the pattern with random signs (L2)."""
    n, c, h, w = x.shape
    if norm == "linf":
        return eps * _signs((n, c, 1, w), x, generator).expand(n, c, h, w).clone()
    delta = torch.zeros_like(x)
    side = max(h // 5, 1)
    start_r, start_c = (h - side * 5) // 2 if h >= 5 else 0, (w - side * 5) // 2 if w >= 5 else 0
    tile = _two_lobes(side, x, generator, 1)[0]
    for i in range(min(5, h // side)):
        for j in range(min(5, w // side)):
            r, q = start_r + i * side, start_c + j * side
            delta[:, :, r:r + side, q:q + side] += tile * _signs((n, c, 1, 1), x, generator)
    return delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).reshape(-1, 1, 1, 1)
