"""``AdversarialStep``: model + attack + objective → the loss for one batch. The loop keeps ownership.

It never calls ``backward`` or the optimiser, so it drops into any loop: plain PyTorch, Accelerate,
gradient accumulation, AMP with a ``GradScaler``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._outputs import call_model
from ._validation import check_finite_nonnegative, check_unit_interval
from .attacks import Attack, attack_mode, per_sample
from .attacks.criteria import Criterion, kl_to_reference, upcast
from .attacks.norms import random_in_ball_
from .awp import AWP
from .losses import get_objective, mart_loss, trades_loss

__all__ = ["AdversarialStep", "StepOutput"]


@dataclass
class StepOutput:
    """What one adversarial step produced.

    Attributes:
        loss: the scalar to backpropagate (the objective's training loss).
        adv_loss: the paper's adversarial training loss term for this batch, detached: the batch mean
            of the criterion on the adversarial inputs, ℓ(f(x + A_ε), y). This is what the PhaseMonitor
            compares with R*(0), whatever the objective.
        logits: logits on the adversarial inputs (with graph).
        adv_inputs: the adversarial inputs, detached.
        batch_size: number of samples in the batch.
        eps: the attack strength used.
        clean_loss: batch mean criterion on the clean inputs, detached, when a clean forward ran.
        clean_logits: logits on the clean inputs (with graph), when a clean forward ran.
        adv_losses: the per-sample criterion on the adversarial inputs, detached (``adv_loss`` is their mean): what
            an adapter needs to leave out samples a framework repeated to pad a batch.
        passes: forward and backward passes per sample this step costs, the loop's backward included (PGD-10 with
            ``at``: 22); what the monitor measures its own evaluation's cost against. ``None``: not known.
    """

    loss: torch.Tensor
    adv_loss: torch.Tensor
    logits: torch.Tensor
    adv_inputs: torch.Tensor
    batch_size: int
    eps: float
    clean_loss: torch.Tensor | None = None
    clean_logits: torch.Tensor | None = None
    adv_losses: torch.Tensor | None = None
    passes: int | None = None


class AdversarialStep:
    """Turn one batch into an adversarial training loss.

    Args:
        model: the model being trained (DDP-wrapped is fine: attacks run on the inner module, the
            training forward through the wrapper so gradients are synchronised as usual).
        attack: a configured :class:`~advhooks.attacks.PGD` or :class:`~advhooks.attacks.FGM`.
        objective: ``"at"`` (Madry), ``"trades"`` or ``"mart"``.
        criterion: per-sample loss ``criterion(logits, targets)`` for ``at`` (and the natural term of
            ``trades``); default cross-entropy. MART defines its own loss. Unless the attack was built
            with its own ``criterion=``, the attack maximises this criterion too (for ``at`` and
            ``mart``; TRADES' attack maximises its KL term).
        beta: weight of the robustness term of TRADES/MART (default 6).
        clean_fraction: for ``at``, weight c of the clean loss: ``(1 − c)·adv + c·clean``.
        grad_align: weight λ of GradAlign (Andriushchenko & Flammarion 2020), a guard against catastrophic
            overfitting in FGSM training: ``λ · mean(1 − cos(∇ₓℓ(x), ∇ₓℓ(x + η)))`` with η uniform in the
            ε-ball (double backpropagation: about two more forward+backward passes per step; 0 = off).
        input_key: for dict batches, the key of the tensor to perturb (``"pixel_values"``,
            ``"inputs_embeds"``); other keys but ``label_key`` go to the model as keyword arguments.
        label_key: for dict batches, the key of the labels when ``targets`` is not given.
        awp: an :class:`~advhooks.awp.AWP` (adversarial weight perturbation): after the attack the weights are
            pushed up this objective's loss, and taken back after the optimizer's step.

    Example:
        >>> from advhooks import PGD
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> step = AdversarialStep(net, PGD(eps=8 / 255, steps=3))
        >>> out = step(torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,)))
        >>> opt.zero_grad(); out.loss.backward(); opt.step()
        >>> out.batch_size
        8
    """

    def __init__(
        self,
        model: nn.Module,
        attack: Attack,
        objective: str = "at",
        criterion: Criterion | None = None,
        beta: float | None = None,
        clean_fraction: float = 0.0,
        grad_align: float = 0.0,
        input_key: str | None = None,
        label_key: str = "labels",
        awp: AWP | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be an advhooks attack (PGD, FGM), got {type(attack).__name__}")
        self.model = model
        self.attack = attack
        self.objective = get_objective(objective)
        if criterion is not None and self.objective.name == "mart":
            raise ValueError("criterion is not used by objective='mart' (MART defines its own boosted loss)")
        self.criterion = per_sample(criterion)
        # The attack maximises the loss being trained unless the user gave the attack its own criterion.
        self.attack_criterion = self.criterion if criterion is not None and not attack.custom_criterion else None
        if beta is not None and self.objective.default_beta is None:
            raise ValueError(f"beta applies to 'trades' and 'mart', not to objective={self.objective.name!r}")
        default_beta = self.objective.default_beta
        self.beta = check_finite_nonnegative("beta", beta) if beta is not None else default_beta
        self.clean_fraction = check_unit_interval("clean_fraction", clean_fraction)
        self.grad_align = check_finite_nonnegative("grad_align", grad_align)
        if self.clean_fraction and self.objective.name != "at":
            raise ValueError("clean_fraction applies to objective='at'; TRADES and MART already weigh the clean loss")
        if self.objective.attacks_kl and not attack.random_start:
            raise ValueError(
                "objective='trades' needs an attack with random_start=True: the KL criterion has a zero "
                "gradient at the clean input, so an attack started there never moves"
            )
        self.input_key = input_key
        self.label_key = label_key
        self.step = 0
        self.awp = awp
        if awp is not None:
            if not isinstance(awp, AWP):
                raise TypeError(f"awp must be an advhooks.AWP, got {type(awp).__name__}")
            awp.attach(model)

    def __call__(self, inputs: torch.Tensor | Mapping[str, Any], targets: torch.Tensor | None = None, *,
                 advance: bool = True) -> StepOutput:
        """Attack the batch and compute the training loss; advances the ε-schedule step by one.

        Args:
            inputs: a tensor batch, or a dict batch (with ``input_key`` set at construction).
            targets: labels; for dict batches defaults to ``inputs[label_key]``.
            advance: count this call as a training step of the ε schedule; pass ``False`` for evaluation
                batches, which use the current ε and leave the schedule where it is.
        """
        x, y, kwargs = self._unpack(inputs, targets)
        awp = self.awp if advance else None  # an evaluation batch is neither perturbed nor perturbs
        if self.awp is not None:
            self.awp.before_attack() if advance else self.awp.remove()
        eps = self.attack.eps_at(self.step)
        if advance:
            self.step += 1
        name = self.objective.name

        if name == "trades":
            with attack_mode(self.model, self.attack.bn) as module, torch.no_grad():
                reference = F.log_softmax(upcast(call_model(module, x, self.input_key, kwargs)), dim=1)
            adv = self.attack(self.model, x, reference, eps=eps, criterion=kl_to_reference,
                              input_key=self.input_key, model_kwargs=kwargs)
        else:
            adv = self.attack(self.model, x, y, eps=eps, criterion=self.attack_criterion, input_key=self.input_key,
                              model_kwargs=kwargs)

        if awp is not None:
            awp.perturb(lambda forward: self._objective(forward, x, adv, y, kwargs)[0])
            with awp.training_forward():
                loss, adv_losses, adv_logits, clean_logits, clean_loss = self._objective(self.model, x, adv, y, kwargs)
        else:
            loss, adv_losses, adv_logits, clean_logits, clean_loss = self._objective(self.model, x, adv, y, kwargs)
        if self.grad_align > 0:
            loss = loss + self.grad_align * self._grad_misalignment(x, y, eps, kwargs)

        return StepOutput(
            loss=loss,
            adv_loss=adv_losses.detach().mean(),
            adv_losses=adv_losses.detach(),
            logits=adv_logits,
            adv_inputs=adv.detach(),
            batch_size=int(x.shape[0]),
            eps=eps,
            clean_loss=clean_loss,
            clean_logits=clean_logits,
            passes=step_passes(self),
        )

    def _objective(self, model, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, kwargs: dict):
        """The objective's loss at ``model`` (the model, or AWP's functional copy of it): ``(loss, adversarial
        per-sample losses, adversarial logits, clean logits or None, detached clean loss or None)``."""
        clean_logits = None
        if self.objective.uses_clean_logits or self.clean_fraction > 0:
            clean_logits = call_model(model, x, self.input_key, kwargs)
        adv_logits = call_model(model, adv, self.input_key, kwargs)
        adv_losses = self.criterion(adv_logits, y)
        name = self.objective.name
        if name == "trades":
            loss = trades_loss(clean_logits, adv_logits, y, beta=self.beta, criterion=self.criterion)
        elif name == "mart":
            loss = mart_loss(clean_logits, adv_logits, y, beta=self.beta)
        else:
            loss = adv_losses.mean()
        clean_loss = None
        if clean_logits is not None:
            clean_losses = self.criterion(clean_logits, y).mean()
            if self.clean_fraction > 0:
                loss = (1.0 - self.clean_fraction) * loss + self.clean_fraction * clean_losses
            clean_loss = clean_losses.detach()
        return loss, adv_losses, adv_logits, clean_logits, clean_loss

    def _grad_misalignment(self, x: torch.Tensor, y: torch.Tensor, eps: float, kwargs: dict) -> torch.Tensor:
        """GradAlign's mean 1 − cos(∇ₓℓ(x), ∇ₓℓ(x + η)), differentiable in the parameters."""
        attack = self.attack
        placed = attack.domain.place(x)
        noise = random_in_ball_(torch.empty_like(x), attack.norm, eps)  # pixel units, like the attack's δ
        if placed.inv_std is not None:
            noise = noise * placed.inv_std
        points = [x.detach(), x.detach() + noise]
        if attack.domain.is_bounded:
            points[1] = torch.clamp(points[1], placed.input_low, placed.input_high)
        grads = []
        for point in points:
            point = point.requires_grad_(True)
            loss = self.criterion(call_model(self.model, point, self.input_key, kwargs), y).sum()
            grads.append(torch.autograd.grad(loss, point, create_graph=True)[0].flatten(1))
        return (1.0 - F.cosine_similarity(grads[0], grads[1], dim=1)).mean()

    def _unpack(self, inputs, targets):
        if isinstance(inputs, Mapping):
            if self.input_key is None:
                raise ValueError("dict batches need input_key (e.g. 'pixel_values' or 'inputs_embeds')")
            if self.input_key not in inputs:
                raise KeyError(f"input_key {self.input_key!r} is not in the batch (keys: {sorted(inputs)})")
            if targets is None:
                if self.label_key not in inputs:
                    raise KeyError(f"no targets given and label_key {self.label_key!r} is not in the batch")
                targets = inputs[self.label_key]
            kwargs = {k: v for k, v in inputs.items() if k not in (self.input_key, self.label_key)}
            return inputs[self.input_key], targets, kwargs
        if targets is None:
            raise ValueError("targets are required for tensor batches")
        return inputs, targets, {}

    def state_dict(self) -> dict[str, int]:
        """Plain-value state (the ε-schedule step) for checkpointing."""
        return {"step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        step = state.get("step") if isinstance(state, Mapping) else None
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"state['step'] must be an integer >= 0, got {step!r}")
        self.step = int(step)


def step_passes(step: AdversarialStep) -> int:
    """Forward and backward passes per sample of one :class:`AdversarialStep` call and the loop's backward: two per
    attack step, a forward and its backward per objective forward (two with clean logits), as many again for
    AWP's weight gradient, four for GradAlign, and TRADES' reference forward."""
    forwards = 2 if step.objective.uses_clean_logits or step.clean_fraction > 0 else 1
    return (2 * int(step.attack.steps) + 2 * forwards * (2 if step.awp is not None else 1)
            + (4 if step.grad_align > 0 else 0) + (1 if step.objective.name == "trades" else 0))
