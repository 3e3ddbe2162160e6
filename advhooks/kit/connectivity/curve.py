"""Mode connectivity between a clean and an adversarially trained model (the paper's Figure 4).

The path between two weight sets w₀ (clean) and w₁ (adversarial) of one architecture is a Bézier curve
with ``bends`` trained control points (Garipov et al. 2018): with one bend, the quadratic
φ(t) = (1 − t)² w₀ + 2t(1 − t) θ + t² w₁, where the middle point θ is trained to minimise the clean
training loss along the curve, E_{t ~ U(0, 1)} L(φ(t)): each batch draws t, builds φ(t) and steps θ. The
clean training loss is then measured along the trained curve and along the straight line, at fixed weights
(BatchNorm's running statistics recomputed at every evaluated point, from the training data, because those
of the end points do not belong to the weights in between). Two figures per path:

- the *barrier*: its largest loss minus the mean of its two end points' losses. On a path that rises
  steadily it is half the gap between the ends: it grows as the adversarial end leaves the clean model's
  basin (the paper's reading of Figure 4), whether or not a ridge separates the two;
- the *ridge*: its largest rise above the chord between the ends' losses, max_t L(t) − ((1 − t) L₀ + t L₁)
  (Frankle et al. 2020's instability): about 0 when nothing higher than the ends lies between them.

The contour of the paper's figure is the clean training loss over the plane through w₀, w₁ and the
curve's middle point (for one bend, θ itself: the whole curve lies in that plane).

On an adversarial model trained at ε ≪ ε* the straight line stays low; well above ε* the adversarial end
point leaves the clean basin and the barrier grows (on the digits the ridge stays near 0: the adversarial
model sits on the slope of the clean basin, not behind a wall).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ..._outputs import logits_of
from ..._validation import check_positive_int
from ...attacks.criteria import Criterion, per_sample
from ...schedules import step_decay

__all__ = ["ConnectivityResult", "bezier_coefficients", "connectivity", "path_barrier", "path_ridge"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def bezier_coefficients(t: float, bends: int) -> list[float]:
    """The Bernstein weights of the ``bends + 2`` control points of a Bézier curve at ``t`` (they sum to 1).

    Example:
        >>> bezier_coefficients(0.5, 1)
        [0.25, 0.5, 0.25]
    """
    degree = bends + 1
    return [math.comb(degree, i) * t ** i * (1 - t) ** (degree - i) for i in range(degree + 1)]


def path_barrier(losses: list[float]) -> float:
    """The barrier of a path: its largest loss minus the mean of its end points' losses.

    Example:
        >>> path_barrier([0.1, 0.5, 0.3])
        0.3
    """
    if len(losses) < 2:
        raise ValueError("a path needs at least its two end points")
    return max(losses) - (losses[0] + losses[-1]) / 2


def path_ridge(t: list[float], losses: list[float]) -> float:
    """The largest rise of a path's loss above the chord between its end points' losses (0 when none).

    Example:
        >>> path_ridge([0.0, 0.5, 1.0], [0.1, 0.5, 0.3])
        0.3
    """
    if len(losses) < 2 or len(t) != len(losses):
        raise ValueError("a path needs at least its two end points, and one position per loss")
    first, last = losses[0], losses[-1]
    return max(0.0, max(v - ((1 - u) * first + u * last) for u, v in zip(t, losses, strict=True)))


@dataclass
class ConnectivityResult:
    """What :func:`connectivity` measured.

    Attributes:
        t: the evaluated positions along both paths, 0 (clean) to 1 (adversarial).
        curve_loss / line_loss: the clean training loss along the trained curve and along the straight line.
        curve_barrier / line_barrier: :func:`path_barrier` of each (max minus the mean of the ends).
        curve_ridge / line_ridge: :func:`path_ridge` of each (the rise above the chord of the ends).
        distance: ‖w₁ − w₀‖ over the parameters.
        contour: ``{"x", "y", "loss", "points", "curve"}`` over the plane of w₀, w₁ and the curve's middle
            (``x``/``y`` the grid's coordinates, ``loss[i][j]`` at ``(x[j], y[i])``, ``points`` the three
            points' coordinates, ``curve`` the curve's), or ``None`` when not asked for.
        curve_training: the mean training loss along the curve in each epoch of the middle points' training.
        settings / seconds: how it was measured and how long it took.
        warnings: what the reader should know (e.g. why there is no contour).
    """

    t: list[float]
    curve_loss: list[float]
    line_loss: list[float]
    curve_barrier: float
    line_barrier: float
    distance: float
    bends: int
    contour: dict[str, Any] | None = None
    curve_ridge: float = 0.0
    line_ridge: float = 0.0
    curve_training: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON-ready)."""
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        """The result as JSON."""
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        """A few lines for a person."""
        ends = f"clean end {self.line_loss[0]:.4f}, adversarial end {self.line_loss[-1]:.4f}"
        return "\n".join([
            f"clean training loss along the paths ({ends}; distance {self.distance:.4g})",
            f"straight line: max {max(self.line_loss):.4f}, barrier {self.line_barrier:.4f} (max - mean of the ends), "
            f"ridge {self.line_ridge:.4f} (above the chord of the ends)",
            f"trained curve ({self.bends} bend{'s' if self.bends > 1 else ''}): max {max(self.curve_loss):.4f}, "
            f"barrier {self.curve_barrier:.4f}, ridge {self.curve_ridge:.4f}",
            *(f"warning: {w}" for w in self.warnings),
        ])


class _WeightSpace:
    """The parameters of one architecture as flat vectors; a scratch copy of the model evaluates any of them."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = copy.deepcopy(model).to(device)
        self.names = [name for name, _ in self.model.named_parameters()]
        self.shapes = [p.shape for _, p in self.model.named_parameters()]
        self.norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
                      and m.track_running_stats]
        for p in self.model.parameters():
            p.requires_grad_(False)

    def flat(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        ours = dict(zip(self.names, self.shapes, strict=True))
        differ = sorted(set(ours) ^ set(params)) + [n for n in ours if n in params and params[n].shape != ours[n]]
        if differ:
            raise ValueError(f"the two models are not of one architecture: parameters {differ[:3]} differ")
        ref = next(self.model.parameters())
        return torch.cat([params[n].detach().reshape(-1).to(ref.device, ref.dtype) for n in self.names])

    def unflat(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = math.prod(shape)
            out[name] = vector[start:start + size].view(shape)
            start += size
        return out

    def forward(self, vector: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return logits_of(functional_call(self.model, self.unflat(vector), (x,)))

    @torch.no_grad()
    def loss(self, vector: torch.Tensor, data: Batches, criterion: Criterion) -> float:
        """The mean clean loss at ``vector`` (eval mode), after recomputing BatchNorm's statistics from ``data``
        (iterated twice then: it must be re-iterable, like a DataLoader)."""
        device = vector.device
        if self.norms:
            for bn in self.norms:
                bn.reset_running_stats()
                bn.momentum = None  # a cumulative average over the pass
            self.model.train()
            for x, _ in data:
                self.forward(vector, x.to(device))
        self.model.eval()
        total, n = 0.0, 0
        for x, y in data:
            y = y.to(device)
            total += float(criterion(self.forward(vector, x.to(device)), y).double().sum())
            n += y.shape[0]
        if n == 0:
            raise ValueError("the evaluation data is empty")
        return total / n


def _train_bends(space: _WeightSpace, ends: tuple[torch.Tensor, torch.Tensor], bends: int, data: Batches,
                 criterion: Criterion, *, epochs: int, lr: float, momentum: float, weight_decay: float,
                 generator: torch.Generator, progress: Callable[[str], None] | None) -> tuple[list, list[float]]:
    """The middle control points trained on E_t L(φ(t)), starting evenly spaced on the straight line."""
    start, end = ends
    middles = [nn.Parameter(start + (i / (bends + 1)) * (end - start)) for i in range(1, bends + 1)]
    opt = torch.optim.SGD(middles, lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: step_decay(e, epochs))
    history = []
    space.model.train()
    for epoch in range(1, epochs + 1):
        total, n = 0.0, 0
        for x, y in data:
            t = float(torch.rand((), generator=generator))
            coeffs = bezier_coefficients(t, bends)
            weights = coeffs[0] * start + coeffs[-1] * end + sum(c * m for c, m in zip(coeffs[1:-1], middles,
                                                                                        strict=True))
            x, y = x.to(start.device), y.to(start.device)
            loss = criterion(space.forward(weights, x), y).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()) * y.shape[0], n + y.shape[0]
        sched.step()
        history.append(total / max(n, 1))
        if progress:
            progress(f"curve epoch {epoch}/{epochs}: loss along the curve {history[-1]:.4f}")
    return [m.detach() for m in middles], history


def _curve_point(t: float, control: list[torch.Tensor]) -> torch.Tensor:
    coeffs = bezier_coefficients(t, len(control) - 2)
    return sum(c * w for c, w in zip(coeffs, control, strict=True))


def _plane(control: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Origin w₀ and an orthonormal basis (u along w₁ − w₀, v towards the curve's middle) of the figure's plane."""
    origin, end = control[0], control[-1]
    middle = control[1] if len(control) == 3 else _curve_point(0.5, control)
    u = (end - origin) / (end - origin).norm()
    offset = middle - origin
    v = offset - (offset @ u) * u
    if float(v.norm()) < 1e-12 * float((end - origin).norm()):
        raise ValueError("the curve's middle lies on the straight line: no plane to draw")
    return origin, u, v / v.norm()


def _contour(space: _WeightSpace, control: list[torch.Tensor], data: Batches, criterion: Criterion, size: int,
             margin: float, progress: Callable[[str], None] | None) -> dict[str, Any]:
    origin, u, v = _plane(control)

    def coords(w: torch.Tensor) -> list[float]:
        return [float((w - origin) @ u), float((w - origin) @ v)]

    points = {"clean": coords(control[0]), "middle": coords(control[1] if len(control) == 3
                                                            else _curve_point(0.5, control)),
              "adversarial": coords(control[-1])}
    xs, ys = zip(*points.values(), strict=True)
    span = max(max(xs) - min(xs), max(ys) - min(ys))
    reach = margin * span  # one scale on both axes: distances stay true
    # At least half as tall as wide, around the points: a flat strip would hide the basin's shape.
    centre, half_height = (max(ys) + min(ys)) / 2, max((max(ys) - min(ys)) / 2 + reach, (span + 2 * reach) / 4)
    grid_x = torch.linspace(min(xs) - reach, max(xs) + reach, size).tolist()
    grid_y = torch.linspace(centre - half_height, centre + half_height, size).tolist()
    loss = []
    for i, y in enumerate(grid_y):
        loss.append([space.loss(origin + x * u + y * v, data, criterion) for x in grid_x])
        if progress:
            progress(f"contour row {i + 1}/{size}")
    curve = [coords(_curve_point(t, control)) for t in torch.linspace(0, 1, 41).tolist()]
    middle = "trained point" if len(control) == 3 else "curve at t = 1/2"
    return {"x": grid_x, "y": grid_y, "loss": loss, "points": points, "curve": curve, "middle_is": middle}


@dataclass(frozen=True, kw_only=True)
class CurveSettings:
    """How the curve is trained and measured (validated when made).

    Args:
        bends: trained control points between the two ends (1: the paper's quadratic curve).
        epochs / lr / momentum / weight_decay: SGD on the middle points (lr / 10 at 1/2 and 3/4 of ``epochs``).
        points: positions evaluated along each path (t evenly spaced in [0, 1]).
        resolution: the contour's resolution (``resolution × resolution`` evaluations); 0: no contour.
        margin: how far the contour reaches beyond the three points, as a fraction of their larger spread (one
            scale on both axes).
        seed: draws of t while training the curve.
    """

    bends: int = 1
    epochs: int = 20
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    points: int = 21
    resolution: int = 0
    margin: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("bends", self.bends)
        check_positive_int("epochs", self.epochs)
        if not isinstance(self.points, int) or self.points < 2:
            raise ValueError(f"points must be an integer >= 2, got {self.points!r}")
        if not isinstance(self.resolution, int) or self.resolution < 0 or self.resolution == 1:
            raise ValueError(f"resolution must be 0 (no contour) or an integer >= 2, got {self.resolution!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def connectivity(clean_model: nn.Module, adv_model: nn.Module, loader: Batches, settings: CurveSettings | None = None,
                 *, eval_loader: Batches | None = None, criterion: Criterion | None = None,
                 device: torch.device | str | None = None,
                 progress: Callable[[str], None] | None = None) -> ConnectivityResult:
    """The clean training loss along the trained Bézier curve and the straight line between two models.

    Neither model is changed: the work happens on a copy of ``clean_model``. Both must have the same
    parameters (names and shapes); buffers other than BatchNorm's come from ``clean_model``.

    Args:
        clean_model / adv_model: the clean model θ̂(0) and the adversarially trained one, one architecture.
        loader: ``(inputs, targets)`` batches of the training set (re-iterated once per epoch) that train the
            middle points.
        settings: :class:`CurveSettings` (default: its defaults).
        eval_loader: the batches on which the clean training loss is measured and BatchNorm's statistics
            recomputed (default ``loader``; pass the training set without augmentation).
        criterion: per-sample loss (default cross-entropy).
        device: where to compute (default: the clean model's device).
        progress: called with a line of text as the work goes on.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> data = [(torch.rand(8, 4), torch.randint(0, 2, (8,)))]
        >>> a, b = nn.Linear(4, 2), nn.Linear(4, 2)
        >>> connectivity(a, b, data, CurveSettings(epochs=1, points=3)).t
        [0.0, 0.5, 1.0]
    """
    s = settings or CurveSettings()
    started = time.perf_counter()
    device = torch.device(device) if device is not None else next(clean_model.parameters()).device
    crit = per_sample(criterion)
    space = _WeightSpace(clean_model, device)
    start, end = space.flat(clean_model), space.flat(adv_model)
    if float((end - start).norm()) == 0:
        raise ValueError("the two models have the same weights: there is no path between them to measure")
    evaluation = eval_loader if eval_loader is not None else loader
    middles, history = _train_bends(space, (start, end), s.bends, loader, crit, epochs=s.epochs, lr=s.lr,
                                    momentum=s.momentum, weight_decay=s.weight_decay,
                                    generator=torch.Generator().manual_seed(s.seed), progress=progress)
    control = [start, *middles, end]
    ts = torch.linspace(0, 1, s.points).tolist()
    curve = [space.loss(_curve_point(t, control), evaluation, crit) for t in ts]
    line = [space.loss((1 - t) * start + t * end, evaluation, crit) for t in ts]
    result = ConnectivityResult(
        t=ts, curve_loss=curve, line_loss=line, curve_barrier=path_barrier(curve), line_barrier=path_barrier(line),
        curve_ridge=path_ridge(ts, curve), line_ridge=path_ridge(ts, line),
        distance=float((end - start).norm()), bends=s.bends, curve_training=history, settings=asdict(s))
    if s.resolution:
        try:
            result.contour = _contour(space, control, evaluation, crit, s.resolution, s.margin, progress)
        except ValueError as err:  # the trained middle on the straight line: the paths are measured all the same
            result.warnings.append(f"no contour: {err}")
    result.seconds = time.perf_counter() - started
    return result
