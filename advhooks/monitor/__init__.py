"""``PhaseMonitor``: the paper's R̂ of the early-stopped model against the clean benchmark R*(0).

The pieces: :mod:`.phase_monitor` (the monitor), :mod:`.report` (the verdict and the regimes), :mod:`.rhat`
(θ̂ and R̂), :mod:`.probe` (the ε* probe), :mod:`.history`, :mod:`.sums` (per-batch sums across ranks) and
:mod:`.record` (the run record).

Framework-free: feed it each batch's :class:`~advhooks.StepOutput` (or a loss and a batch size) and
call :meth:`PhaseMonitor.epoch_end`; it returns a :class:`PhaseReport` with ρ = R̂(θ̂, ε) / R*(0), its
band and the regime. The verdict follows the paper's definition (section 5.1): θ̂ is the epoch with the
smallest *adversarial test loss* so far, and R̂ is the adversarial training loss of those fixed weights
(:func:`advhooks.evaluation.evaluate_adversarial_loss` on a fixed training subset, whose sampling error
enters the band with R*(0)'s). The monitor learns the adversarial test loss either by evaluating it
(:meth:`PhaseMonitor.evaluate_with`) or from the loop (``epoch_end(adv_test_loss=...)``). Without it the
verdict is *provisional*: it rests on the best per-epoch running mean of the training loss, which mixes
a whole epoch of weights, and the report says so.

Regimes, decided by ρ's band (default level 0.8):

- ``clean-like``: the whole band is below 1: ε < ε*, adversarial training behaves like clean training;
- ``near eps*``: the band contains 1;
- ``above eps*``: the band is above 1, but not (yet) above ``threshold``;
- ``eps >> eps*``: after the warm-up, the band's lower end is at or above ``threshold`` and the verdict ρ
  has stopped improving (less than ``min_delta`` relative improvement over ``patience`` epochs). The flag
  fires once, on this regime.

Why ``threshold = 1.5``: the paper's Table 1 (PreActResNet18, CIFAR-10, ε* ≈ 0.5/255) measures this very
R̂ (early-stopped, fixed weights): ρ is 0.98 at ε ≈ ε*, 1.17 at 2ε* and 1.86 at 4ε*. A band entirely above
1.5 × R*(0) therefore means ε is between 2 and 4 times ε* or more. The warm-up (default
``total_epochs // 2 + patience``: the paper's first learning-rate decay, then ``patience`` epochs) keeps
the verdict from firing while every ε is still far above R*(0) early in training; a run shorter than its
warm-up can never flag, and the monitor warns about it when it is built.

The optional probe (off by default) evaluates the current model's adversarial loss at a ladder of
ε′ ≤ ε on a fixed subset of the training data every ``every`` epochs; the largest ε′ whose loss is
≤ R*(0) is a lower bound on ε* (if θ̂(ε′) minimised R̂; a heuristic otherwise). Its cost, in
forward+input-gradient passes, is ``len(ladder) × (steps + 1) × probe size`` per probe.
"""

from .phase_monitor import PhaseMonitor
from .probe import EpsStarProbe, ladder_lower_bound
from .record import RUN_RECORD_SCHEMA
from .report import REGIMES, PhaseReport, decide_regime
from .settings import default_warmup

__all__ = ["REGIMES", "RUN_RECORD_SCHEMA", "EpsStarProbe", "PhaseMonitor", "PhaseReport", "decide_regime",
           "default_warmup", "ladder_lower_bound"]
