"""Signs of gradient masking in a robust-accuracy evaluation, each said in one sentence with what it means.

A robust accuracy is only as good as the attacks' gradients. Three signs, as the original AutoAttack checks them:

- **zero input gradients**: samples whose loss has an exactly zero gradient with respect to the input give a
  gradient attack nothing to follow (quantised inputs, saturated activations, a non-differentiable step);
- **a gradient-free attack breaking what the gradient attacks left**: Square needs no gradient; when it breaks more
  than ``SQUARE_THRESHOLD`` of the samples after APGD/FAB, their gradients misled them;
- **a randomised model** (two forwards of the same inputs differ): each gradient is a draw, and only an evaluation
  that averages over draws (``suite="rand"``) measures it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from ._outputs import logits_of
from .attacks import eval_mode
from .attacks.criteria import cross_entropy
from .attacks.domain import InputDomain, Normalization

__all__ = ["SQUARE_THRESHOLD", "gradient_free_kinds", "masking_warnings", "randomised", "zero_gradient_count"]

log = logging.getLogger("advhooks.robustness")

# The share of all samples a gradient-free attack may break after the gradient attacks before it is a sign of
# masking (the original AutoAttack's check uses 0.2 %).
SQUARE_THRESHOLD = 0.002
gradient_free_kinds = ("square",)


def zero_gradient_count(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        normalization: Normalization = None) -> int:
    """How many samples of the batch have an exactly zero input gradient of their cross-entropy (eval mode)."""
    domain = InputDomain(None, normalization)
    with torch.enable_grad(), eval_mode(model):
        inputs = x.detach().clone().requires_grad_(True)
        loss = cross_entropy(logits_of(model(inputs)), y).sum()
        (grad,) = torch.autograd.grad(loss, inputs)
    inv_std = domain.place(grad).inv_std
    grad = grad if inv_std is None else grad * inv_std
    return int((grad.flatten(1).abs().amax(dim=1) == 0).sum())


def randomised(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether two eval-mode forwards of the same inputs give different logits."""
    with torch.no_grad(), eval_mode(model):
        return not torch.equal(logits_of(model(x)), logits_of(model(x)))


def masking_warnings(zero_gradient_share: float, broken_by: Mapping[str, float], kinds: Mapping[str, str],
                     is_randomised: bool, suite: str) -> list[str]:
    """The sentences a report should carry, each with what it means (empty when nothing is seen)."""
    out = []
    if zero_gradient_share > 0:
        out.append(f"{100 * zero_gradient_share:.1f} % of the samples have a zero input gradient: gradient attacks "
                   "have nothing to follow there (gradient masking: quantised inputs, saturated activations, a "
                   "non-differentiable step), so the robust accuracy may be an overestimate")
    seen_gradient = False
    for name, share in broken_by.items():
        if kinds.get(name) in gradient_free_kinds and seen_gradient and share > SQUARE_THRESHOLD:
            out.append(f"{name}, which uses no gradient, broke {100 * share:.1f} % of the samples after the gradient "
                       "attacks had left them robust: their gradients misled them (gradient masking), so the "
                       "robust accuracy rests on the gradient-free attack")
        seen_gradient = seen_gradient or kinds.get(name) not in gradient_free_kinds
    if is_randomised and suite != "rand":
        out.append("the model is randomised (two forwards of the same inputs differ): each gradient is one draw; "
                   "evaluate with suite='rand', which averages them")
    for sentence in out:
        log.warning("robust accuracy: %s", sentence)
    return out
