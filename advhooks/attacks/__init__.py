"""Batched, CUDA-friendly PGD and FGM attacks (L∞, L2).

One frozen :class:`AttackConfig` holds an attack's settings; :func:`perturb` does the work with it
(``pgd_perturb`` / ``fgm_perturb`` are its keyword forms); :class:`PGD`, :class:`FGM` and :class:`APGD`
store a config.
"""

from .apgd import dlr_loss, targeted_dlr_loss
from .attacks import APGD, FGM, FGSM, PGD, Attack
from .config import AttackConfig
from .criteria import Criterion, cross_entropy, kl_to_reference, per_sample
from .domain import InputDomain
from .functional import fgm_perturb, perturb, pgd_perturb
from .model_state import attack_mode, eval_mode, unwrap_parallel
from .norms import dual_norm

__all__ = [
    "APGD",
    "FGM",
    "FGSM",
    "PGD",
    "Attack",
    "AttackConfig",
    "Criterion",
    "InputDomain",
    "attack_mode",
    "cross_entropy",
    "dlr_loss",
    "dual_norm",
    "eval_mode",
    "fgm_perturb",
    "kl_to_reference",
    "per_sample",
    "perturb",
    "pgd_perturb",
    "targeted_dlr_loss",
    "unwrap_parallel",
]
