"""Batched, CUDA-friendly PGD and FGM attacks (L∞, L2), and the evaluation attacks APGD, FAB-T and Square.

One frozen :class:`AttackConfig` holds an attack's settings; :func:`perturb` does the work with it
(``pgd_perturb`` / ``fgm_perturb`` are its keyword forms); :class:`PGD`, :class:`FGM` and :class:`APGD`
store a config. :func:`square_perturb` (gradient-free random search) and :func:`fab_targeted_perturb`
(minimal-perturbation boundary search) complete AutoAttack's standard suite (:mod:`advhooks.robustness`).
"""

from .apgd import dlr_loss, targeted_dlr_loss
from .attacks import APGD, FGM, FGSM, PGD, Attack
from .config import AttackConfig
from .criteria import Criterion, cross_entropy, kl_to_reference, per_sample
from .domain import InputDomain
from .fab import fab_targeted_perturb
from .functional import fgm_perturb, perturb, pgd_perturb
from .model_state import attack_mode, eval_mode, unwrap_parallel
from .norms import dual_norm
from .sample_noise import SampleNoise
from .square import margin_loss, square_perturb

__all__ = [
    "APGD",
    "FGM",
    "FGSM",
    "PGD",
    "Attack",
    "AttackConfig",
    "Criterion",
    "InputDomain",
    "SampleNoise",
    "attack_mode",
    "cross_entropy",
    "dlr_loss",
    "dual_norm",
    "eval_mode",
    "fab_targeted_perturb",
    "fgm_perturb",
    "kl_to_reference",
    "margin_loss",
    "per_sample",
    "perturb",
    "pgd_perturb",
    "square_perturb",
    "targeted_dlr_loss",
    "unwrap_parallel",
]
