"""Batched, CUDA-friendly PGD and FGM attacks (L∞, L2): pure functions and thin classes."""

from .attacks import FGM, FGSM, PGD, Attack
from .domain import InputDomain
from .functional import fgm_perturb, pgd_perturb
from .model_state import attack_mode, eval_mode, unwrap_parallel
from .norms import dual_norm
from .objectives import cross_entropy, per_sample

__all__ = [
    "FGM",
    "FGSM",
    "PGD",
    "Attack",
    "InputDomain",
    "attack_mode",
    "cross_entropy",
    "dual_norm",
    "eval_mode",
    "fgm_perturb",
    "per_sample",
    "pgd_perturb",
    "unwrap_parallel",
]
