"""The training objectives of adversarial training: standard AT, TRADES and MART.

Each objective is a pure function of the logits, and each knows what its attack maximises:

=========  ==========================================  =============================================
objective  the attack maximises                        the model minimises
=========  ==========================================  =============================================
``at``     ℓ(f(x'), y) (cross-entropy)                 ℓ(f(x'), y)                  (Madry et al. 2018)
``trades`` KL(f(x) ‖ f(x')), f(x) from attack mode     CE(f(x), y) + β·KL(f(x) ‖ f(x'))  (Zhang et al. 2019)
``mart``   CE(f(x'), y)                                BCE(f(x'), y) + β·KL(f(x) ‖ f(x'))·(1 − p_y(x))
                                                                                    (Wang et al. 2020)
=========  ==========================================  =============================================

KL terms sum over classes and average over the batch, as in the reference implementations; gradients
flow through both distributions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attacks.criteria import Criterion, kl_to_reference, per_sample, upcast

__all__ = [
    "OBJECTIVES",
    "TrainingObjective",
    "at_loss",
    "boosted_cross_entropy",
    "get_objective",
    "mart_loss",
    "trades_loss",
]


def at_loss(adv_logits: torch.Tensor, targets: torch.Tensor, criterion: Criterion | None = None) -> torch.Tensor:
    """Standard adversarial training (Madry et al.): mean criterion on the adversarial logits."""
    return per_sample(criterion)(adv_logits, targets).mean()


def trades_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, targets: torch.Tensor, beta: float = 6.0,
                criterion: Criterion | None = None) -> torch.Tensor:
    """TRADES (Zhang et al. 2019): ``CE(f(x), y) + β · KL(f(x) ‖ f(x'))``, batch mean.

    Args:
        clean_logits: logits on the clean inputs (training mode, with graph).
        adv_logits: logits on the adversarial inputs.
        targets: labels.
        beta: weight of the robustness term (1/λ in the paper; 6 by default).
        criterion: natural-loss criterion; default cross-entropy.

    Example:
        >>> z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> torch.allclose(trades_loss(z, z, y), F.cross_entropy(z, y))
        True
    """
    natural = per_sample(criterion)(clean_logits, targets).mean()
    robust = kl_to_reference(adv_logits, F.log_softmax(upcast(clean_logits), dim=1)).mean()
    return natural + beta * robust


def boosted_cross_entropy(adv_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MART's per-sample BCE: ``−log p_y(x') − log(1 − max_{k≠y} p_k(x'))``."""
    probs = F.softmax(upcast(adv_logits), dim=1)
    top2 = probs.topk(2, dim=1).indices
    runner_up = torch.where(top2[:, 0] == targets, top2[:, 1], top2[:, 0])
    margin = -torch.log(1.0001 - probs.gather(1, runner_up[:, None]).squeeze(1) + 1e-12)
    return F.cross_entropy(upcast(adv_logits), targets, reduction="none") + margin


def mart_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, targets: torch.Tensor,
              beta: float = 6.0) -> torch.Tensor:
    """MART (Wang et al. 2020): ``BCE(f(x'), y) + β · KL(f(x) ‖ f(x')) · (1 − p_y(x))``, batch mean.

    Example:
        >>> z = torch.randn(4, 3)
        >>> bool(mart_loss(z, z, torch.tensor([0, 1, 2, 0])) > 0)
        True
    """
    clean_log_probs = F.log_softmax(upcast(clean_logits), dim=1)
    true_prob = clean_log_probs.exp().gather(1, targets[:, None]).squeeze(1)
    kl = kl_to_reference(adv_logits, clean_log_probs)
    return (boosted_cross_entropy(adv_logits, targets) + beta * kl * (1.0000001 - true_prob)).mean()


@dataclass(frozen=True)
class TrainingObjective:
    """An objective's name, its default β, and whether it needs the clean forward."""

    name: str
    default_beta: float | None
    uses_clean_logits: bool
    attacks_kl: bool  # the attack maximises KL to the clean prediction (needs a random start)


OBJECTIVES = {
    "at": TrainingObjective("at", None, False, False),
    "trades": TrainingObjective("trades", 6.0, True, True),
    "mart": TrainingObjective("mart", 6.0, True, False),
}


def get_objective(name: str) -> TrainingObjective:
    """Look up a training objective by name (``"at"``, ``"trades"``, ``"mart"``)."""
    if not isinstance(name, str) or name.lower() not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(map(repr, OBJECTIVES))}; got {name!r}")
    return OBJECTIVES[name.lower()]

