"""The paper's section 4 as runnable code: linear regression under an L2 attack."""

from .linear import (
    LinearSetting,
    SimulationResult,
    adversarial_loss_grad,
    adversarial_sq_loss,
    exact_eps_star,
    format_simulation,
    gradient_descent,
    population_adversarial_risk,
    sample_data,
    simulate,
)

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
