"""advhooks: drop-in adversarial training for PyTorch loops, watched against the clean benchmark.

Attacks (PGD, FGM in L∞ and L2), the AT/TRADES/MART objectives and :class:`AdversarialStep`, which turns
one batch into an adversarial training loss inside the user's own loop; :class:`CleanBenchmark` (R*(0))
and :class:`PhaseMonitor`, which tells during training whether ε is far above ε*.
"""

from . import logs as _logs  # noqa: F401 - the library logger's default handler
from ._version import __version__
from .attacks import APGD, FGM, FGSM, PGD, Attack, AttackConfig, fgm_perturb, perturb, pgd_perturb
from .benchmark import CleanBenchmark
from .free import FreeAdversarialStep
from .losses import at_loss, mart_loss, trades_loss
from .monitor import PhaseMonitor, PhaseReport
from .recorder import CleanBenchmarkRecorder
from .robustness import evaluate
from .schedules import LinearWarmup, linear_warmup, parse_eps, parse_eps_list
from .step import AdversarialStep, StepOutput

__all__ = [
    "APGD",
    "FGM",
    "FGSM",
    "PGD",
    "AdversarialStep",
    "Attack",
    "AttackConfig",
    "CleanBenchmark",
    "CleanBenchmarkRecorder",
    "FreeAdversarialStep",
    "LinearWarmup",
    "PhaseMonitor",
    "PhaseReport",
    "StepOutput",
    "__version__",
    "at_loss",
    "evaluate",
    "fgm_perturb",
    "linear_warmup",
    "mart_loss",
    "parse_eps",
    "parse_eps_list",
    "perturb",
    "pgd_perturb",
    "trades_loss",
]
