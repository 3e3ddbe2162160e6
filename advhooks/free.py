"""Free adversarial training (Shafahi et al. 2019): one backward gives the parameter and the input gradient.

Each minibatch is replayed ``replays`` times. The user's ``loss.backward()`` of one replay fills both the
parameters' ``.grad`` and the perturbation's, and the next replay moves the perturbation by
``step_size · sign(∇δ)`` (L∞) before its forward; the perturbation is carried over to the next minibatch.
Train for ``epochs / replays`` epochs to spend what clean training of ``epochs`` would.

    free = FreeAdversarialStep(model, eps=8/255, replays=4)
    for x, y in loader:
        for out in free.replays(x, y):       # the loop keeps backward and the optimiser
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            monitor.update(out)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ._outputs import logits_of
from ._validation import check_choice, check_finite_nonnegative, check_positive, check_positive_int
from .attacks.criteria import Criterion, per_sample
from .attacks.domain import Bounds, InputDomain
from .attacks.norms import NORMS, project_, steepest_direction_
from .step import StepOutput

__all__ = ["FreeAdversarialStep"]


class FreeAdversarialStep:
    """Free adversarial training: minibatch replay with the perturbation updated from the same backward.

    Args:
        model: the model being trained.
        eps: ball radius (pixel units).
        replays: m, the number of replays of each minibatch.
        norm: ``"linf"`` (the paper's) or ``"l2"``.
        step_size: perturbation step; default ``eps`` (the paper's choice).
        bounds: input bounds, ``None`` for unbounded inputs.
        criterion: per-sample loss; default cross-entropy.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> free = FreeAdversarialStep(net, eps=0.1, replays=2)
        >>> for out in free.replays(torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))):
        ...     opt.zero_grad(); out.loss.backward(); opt.step()
        >>> bool(free.delta.abs().max() <= 0.1 + 1e-6)
        True
    """

    def __init__(self, model: nn.Module, eps: float, replays: int = 4, norm: str = "linf",
                 step_size: float | None = None, bounds: Bounds = (0.0, 1.0),
                 criterion: Criterion | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.eps = check_finite_nonnegative("eps", eps)
        self.replays_per_batch = check_positive_int("replays", replays)
        self.norm = check_choice("norm", norm, NORMS)
        self.step_size = self.eps if step_size is None else check_positive("step_size", step_size)
        self.domain = InputDomain(bounds)
        self.criterion = per_sample(criterion)
        self.delta: torch.Tensor | None = None

    def _advance(self, delta: torch.Tensor, low: torch.Tensor | None, high: torch.Tensor | None) -> None:
        # The gradient the user's backward left on δ: one ascent step, then back into the ball and the box.
        if delta.grad is None:
            return
        with torch.no_grad():
            delta.add_(steepest_direction_(delta.grad, self.norm), alpha=self.step_size)
            project_(delta, self.norm, self.eps, low, high)
        delta.grad = None

    def replays(self, inputs: torch.Tensor, targets: torch.Tensor) -> Iterator[StepOutput]:
        """Yield ``replays`` step outputs for this minibatch; backpropagate each before taking the next."""
        x = inputs.detach()
        if self.delta is None or self.delta.shape != x.shape or self.delta.device != x.device:
            self.delta = torch.zeros_like(x)
        delta = self.delta
        low = high = None
        if self.domain.is_bounded:
            placed = self.domain.place(x)
            low, high = placed.low - x, placed.high - x
            if self.norm == "linf":
                low, high = low.clamp_min(-self.eps), high.clamp_max(self.eps)
            with torch.no_grad():  # the carried-over δ must fit this batch's box
                delta.clamp_(low, high)
        delta.requires_grad_(True)
        for _ in range(self.replays_per_batch):
            self._advance(delta, low, high)
            adv = x + delta
            logits = logits_of(self.model(adv))
            losses = self.criterion(logits, targets)
            loss = losses.mean()
            yield StepOutput(loss=loss, adv_loss=loss.detach(), logits=logits, adv_inputs=adv.detach(),
                             batch_size=int(x.shape[0]), eps=self.eps)
        self._advance(delta, low, high)  # the last replay's gradient moves δ for the next minibatch
        delta.requires_grad_(False)
