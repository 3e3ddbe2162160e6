"""advhooks: drop-in adversarial training for PyTorch loops, watched against the clean benchmark.

Attacks (PGD, FGM in L∞ and L2), the AT/TRADES/MART objectives and :class:`AdversarialStep`, which turns
one batch into an adversarial training loss inside the user's own loop; :class:`CleanBenchmark` (R*(0))
and :class:`PhaseMonitor`, which tells during training whether ε is far above ε*.

The names below are imported on first use, so that ``import advhooks`` (and ``advhooks --help``) does not
import torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import logs as _logs  # noqa: F401 - the library logger's default handler
from ._version import __version__

# Each public name and the module it lives in (imported on first use).
_EXPORTS = {
    **dict.fromkeys(("APGD", "FGM", "FGSM", "PGD", "Attack", "AttackConfig", "fgm_perturb", "perturb", "pgd_perturb"),
                    ".attacks"),
    "AWP": ".awp",
    **dict.fromkeys(("CleanBenchmark", "Recipe", "RunSetup"), ".benchmark"),
    "FreeAdversarialStep": ".free",
    **dict.fromkeys(("at_loss", "mart_loss", "trades_loss"), ".losses"),
    **dict.fromkeys(("PhaseMonitor", "PhaseReport"), ".monitor"),
    "CleanBenchmarkRecorder": ".recorder",
    "robust_accuracy": ".robustness",
    **dict.fromkeys(("LinearWarmup", "linear_warmup", "parse_eps", "parse_eps_list"), ".schedules"),
    **dict.fromkeys(("AdversarialStep", "StepOutput"), ".step"),
}

__all__ = [
    "APGD", "AWP", "FGM", "FGSM", "PGD", "AdversarialStep", "Attack", "AttackConfig", "CleanBenchmark",
    "CleanBenchmarkRecorder", "FreeAdversarialStep", "LinearWarmup", "PhaseMonitor", "PhaseReport", "Recipe",
    "RunSetup", "StepOutput",
    "__version__", "at_loss", "fgm_perturb", "linear_warmup", "mart_loss", "parse_eps", "parse_eps_list",
    "perturb", "pgd_perturb", "robust_accuracy", "trades_loss",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'advhooks' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from .attacks import APGD, FGM, FGSM, PGD, Attack, AttackConfig, fgm_perturb, perturb, pgd_perturb
    from .awp import AWP
    from .benchmark import CleanBenchmark
    from .free import FreeAdversarialStep
    from .losses import at_loss, mart_loss, trades_loss
    from .monitor import PhaseMonitor, PhaseReport
    from .recorder import CleanBenchmarkRecorder
    from .robustness import robust_accuracy
    from .schedules import LinearWarmup, linear_warmup, parse_eps, parse_eps_list
    from .step import AdversarialStep, StepOutput
