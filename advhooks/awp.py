"""Adversarial weight perturbation (AWP; Wu, Xia & Wang, NeurIPS 2020) in a loop the user owns.

After the attack, the weights are pushed up the training objective's loss, per layer and relative to the layer's
norm: ``w ← w + γ · ‖w‖ · g / ‖g‖`` with ``g = ∇_w loss(x_adv)`` (only multi-dimensional weights, as the
reference does; biases and normalisation parameters are left alone). The training forward and backward then run
at the perturbed weights, the user's ``optimizer.step()`` applies its update there, and the perturbation is taken
off again right after it (``Optimizer.register_step_post_hook``): the weights end at ``w − update``, exactly the
reference's ``(w + v) − update − v``.

What keeps the model as the user's loop would have it:

- the gradient of the perturbation is taken with :func:`torch.func.functional_call` on copies of the buffers, so
  BatchNorm's running statistics are not touched, nothing is written to ``.grad``, and under DDP the wrapper's
  gradient all-reduce does not run (for a DDP model the perturbation's gradient is averaged over its process
  group by one ``all_reduce`` of its own, so every process perturbs alike, as one process on the whole batch
  would);
- gradient accumulation: one perturbation per optimizer step, computed on the window's first batch, taken off
  while each later batch is attacked and put back for its training forward;
- a step that does not happen (``GradScaler`` skipping an inf step): a window whose gradients were zeroed to
  ``None`` without a step starts afresh, the stale perturbation taken off first;
- evaluation, or a ``state_dict()``, between the backward and the step: the perturbation is taken off before
  any forward in eval mode and before the state dict is read (the step then updates the unperturbed weights by
  the same amount; between the training forward and its backward the weights must not change, so evaluate after
  the backward); ``load_state_dict`` drops it; an evaluation call of the step (``advance=False``) neither
  computes nor applies one;
- a warm-up (``warmup_steps`` optimizer steps without AWP), as the reference's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call
from torch.nn.parallel import DistributedDataParallel

from .attacks.model_state import unwrap_parallel

__all__ = ["AWP"]

_EPS = 1e-20  # the reference's guard against a zero gradient


class AWP:
    """Adversarial weight perturbation for :class:`~advhooks.AdversarialStep` (``awp=AWP(optimizer)``).

    Args:
        optimizer: the ``torch.optim.Optimizer`` whose ``step()`` applies each update (its step hooks take the
            perturbation off; an Accelerate-prepared optimizer is looked through).
        gamma: the perturbation's size relative to each layer's weight norm (the reference: 0.01 with AT, 0.005
            with TRADES).
        warmup_steps: optimizer steps trained without AWP first.

    Example:
        >>> from advhooks import PGD, AdversarialStep
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> step = AdversarialStep(net, PGD(eps=8 / 255, steps=3), awp=AWP(opt, gamma=0.01))
        >>> before = net[1].weight.detach().clone()
        >>> out = step(torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,)))
        >>> bool((net[1].weight != before).any())  # perturbed for the training forward
        True
        >>> opt.zero_grad(); out.loss.backward(); opt.step()  # the step hook takes the perturbation off
        >>> step.awp.applied
        False
    """

    def __init__(self, optimizer: torch.optim.Optimizer, gamma: float = 0.01, warmup_steps: int = 0) -> None:
        inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer wraps one
        if not isinstance(inner, torch.optim.Optimizer):
            raise TypeError(f"AWP needs a torch.optim.Optimizer (its step hooks take the perturbation off), got "
                            f"{type(optimizer).__name__}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        self.optimizer, self.gamma, self.warmup_steps = inner, float(gamma), warmup_steps
        self.steps = 0  # optimizer steps seen
        self.applied = False
        self._module: nn.Module | None = None
        self._group = None  # the DDP wrapper's process group: the perturbation's gradient is averaged over it
        self._in_step = False
        self._names: list[str] = []
        self._perturbation: list[torch.Tensor] | None = None
        inner.register_step_post_hook(lambda *_: self._after_step())

    def attach(self, model: nn.Module) -> None:
        """Bind to the model being trained (:class:`~advhooks.AdversarialStep` calls this once)."""
        if self._module is not None:
            raise ValueError("this AWP already perturbs a model: make one AWP per AdversarialStep")
        module = unwrap_parallel(model)
        self._module = module
        if isinstance(model, DistributedDataParallel):
            self._group = model.process_group
        self._names = [n for n, p in module.named_parameters() if p.dim() > 1 and "weight" in n and p.requires_grad]
        if not self._names:
            raise ValueError("AWP found no multi-dimensional weight to perturb in the model")
        module.register_forward_pre_hook(self._before_forward)
        module.register_state_dict_pre_hook(lambda *_: self.remove())
        module.register_load_state_dict_pre_hook(lambda *_: self._forget())

    def before_attack(self) -> None:
        """Take the perturbation off for the attack; drop it when its window ended without a step."""
        if not torch.is_grad_enabled():
            raise ValueError("AWP needs gradients: do not run an AWP step inside torch.no_grad()")
        self.remove()
        if self._perturbation is not None and all(p.grad is None for p in self._weights()):
            self._perturbation = None  # zeroed to None with no step between: a skipped step

    def perturb(self, loss_of: Callable[[Callable[..., object]], torch.Tensor]) -> None:
        """Put the window's perturbation on, computing it first on the window's first batch.

        ``loss_of(forward)`` is the training objective's loss with ``forward`` in place of the model.
        """
        if self.steps < self.warmup_steps:
            return
        if self._perturbation is None:
            self._perturbation = self._compute(loss_of)
        self._apply()

    @contextmanager
    def training_forward(self) -> Iterator[None]:
        """Context of :class:`~advhooks.AdversarialStep`'s training forward: the perturbation stays on even for a
        model trained in eval mode (frozen BatchNorm)."""
        self._in_step = True
        try:
            yield
        finally:
            self._in_step = False

    def remove(self) -> None:
        """Take the perturbation off the weights (nothing when it is not on)."""
        if self.applied:
            with torch.no_grad():
                for w, v in zip(self._weights(), self._perturbation, strict=True):
                    w.sub_(v)
            self.applied = False

    def _apply(self) -> None:
        if not self.applied:
            with torch.no_grad():
                for w, v in zip(self._weights(), self._perturbation, strict=True):
                    w.add_(v)
            self.applied = True

    def _weights(self) -> list[nn.Parameter]:
        params = dict(self._module.named_parameters())
        return [params[n] for n in self._names]

    def _compute(self, loss_of: Callable[[Callable[..., object]], torch.Tensor]) -> list[torch.Tensor]:
        module = self._module
        state = {**dict(module.named_parameters()), **{n: b.clone() for n, b in module.named_buffers()}}
        loss = loss_of(lambda *args, **kwargs: functional_call(module, state, args, kwargs))
        weights = self._weights()
        grads = torch.autograd.grad(loss, weights)
        world = dist.get_world_size(self._group) if self._group is not None else 1
        if world > 1:  # DDP: every process perturbs by the gradient over the whole batch
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, group=self._group)
            flat /= world
            grads = [chunk.view_as(g) for chunk, g in zip(flat.split([g.numel() for g in grads]), grads, strict=True)]
        with torch.no_grad():
            return [self.gamma * w.norm() / (g.norm() + _EPS) * g for w, g in zip(weights, grads, strict=True)]

    def _after_step(self) -> None:
        self.steps += 1
        self.remove()
        self._perturbation = None

    def _forget(self) -> None:
        """Before weights are loaded: take the perturbation off, and drop it (it belongs to the old weights)."""
        self.remove()
        self._perturbation = None

    def _before_forward(self, module: nn.Module, args: object) -> None:
        if not module.training and not self._in_step:
            self.remove()

