"""Estimating ε*, with a band: from run records, by fine-tuning, and for free from the clean model.

ε* = sup{ε : R̂(θ̂(ε), ε) ≤ R*(0)} (the paper, section 3), with R̂ always the adversarial training loss of
fixed weights (:func:`advhooks.evaluation.evaluate_adversarial_loss`). Estimators, cheapest last:

- :func:`estimate_grid` — the paper's section 5.2 ground truth: monitored adversarial training from scratch
  at each ε of a grid, θ̂(ε) early-stopped at the smallest adversarial test loss; the runs' records are
  combined by :func:`estimate_from_records` (also ``estimate-eps-star --method records``), which interpolates
  the largest ε where R̂(θ̂(ε), ε) ≤ R*(0) (the definition's supremum: the last crossing, not the first).
- :func:`estimate_finetune` — the paper's section 6: from the clean weights θ̂(0), short adversarial
  fine-tuning (FGM, 10 epochs at the clean run's learning rate and one at a tenth of it) at strengths that
  grow ×1.5 from the clean probe's bound until R̂ of the fine-tuned weights passes R*(0); ε* is where that
  curve crosses R*(0), as for the grid. ``runs`` repeats with other seeds; ``verify`` (in
  :func:`estimate_eps_star`) adds one run from scratch at the estimate (:func:`verify_estimate`).
- :func:`estimate_clean_probe` — no training: the clean model's adversarial training loss at a ladder of ε
  is a lower bound on ε* (θ̂(ε) can only do better than θ̂(0)), and Δ / mean‖∇ₓℓ(θ̂(0))‖_* is the
  first-order estimate (envelope theorem; the dual norm is ‖·‖₁ for L∞, ‖·‖₂ for L2).

Each returns an :class:`EpsStarEstimate` with ``interval`` and ``level`` (R*(0)'s bootstrap, R̂'s sampling
error and the run-to-run spread of :mod:`.spread`, carried through by Monte Carlo; ``poorly_determined`` when
the band spans more than a factor 3; ``disagreement`` when the clean probe or the check from scratch contradicts
it, :mod:`.agreement`) that serialises to JSON with its points,
cost and warnings. :func:`estimate_eps_star` picks the method (what the CLI runs). The fine-tune's slope at
small ε is compared with mean‖∇ₓℓ‖_* (they agree to first order) as a consistency figure.

One estimator per module: :mod:`.grid` (with the run records), :mod:`.finetune`, :mod:`.clean_probe`;
:mod:`.crossing` is the one definition of where a curve of R̂ crosses R*(0) and its band, :mod:`.verify` the
check of an estimate, :mod:`.result` the result type and what the estimators share, :mod:`.settings`
what an estimator is asked (the data and each method's settings, one frozen dataclass each, shared with the CLI),
:mod:`.dispatch` the entry point.
"""

from ..training import adversarial_loss
from . import spread
from .clean_probe import (
    DEFAULT_LADDER,
    default_grid_eps,
    estimate_clean_probe,
    finetune_start,
    mean_input_grad_dual_norm,
)
from .crossing import r_star_draws
from .dispatch import METHODS, estimate_eps_star
from .finetune import estimate_finetune
from .grid import estimate_from_records, estimate_grid
from .result import EpsStarEstimate, check_eps_grid
from .settings import (
    EstimationData,
    FinetuneSettings,
    GridSettings,
    Measurement,
    ProbeSettings,
    TrainingSettings,
    make_attack,
    settings_for,
)
from .verify import verify_estimate

__all__ = [
    "DEFAULT_LADDER",
    "METHODS",
    "EpsStarEstimate",
    "EstimationData",
    "FinetuneSettings",
    "GridSettings",
    "Measurement",
    "ProbeSettings",
    "TrainingSettings",
    "default_grid_eps",
    "finetune_start",
    "adversarial_loss",
    "check_eps_grid",
    "estimate_clean_probe",
    "estimate_eps_star",
    "estimate_finetune",
    "estimate_from_records",
    "estimate_grid",
    "make_attack",
    "mean_input_grad_dual_norm",
    "r_star_draws",
    "settings_for",
    "spread",
    "verify_estimate",
]
