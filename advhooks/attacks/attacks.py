"""The attack classes: each stores one :class:`AttackConfig` and calls :func:`perturb` with it.

``attack(model, inputs, targets)`` is ``perturb(model, inputs, targets, attack.config)``, or the CUDA-graph
replay when ``cuda_graph=True``. Settings read and write through to the config
(``attack.bn = "train"`` re-validates by replacing it).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..schedules import EpsLike
from .apgd import dlr_loss
from .config import AttackConfig, AttackKind
from .criteria import Criterion, cross_entropy
from .functional import Watch, perturb
from .graphs import GraphedAttack
from .sample_noise import SampleNoise

__all__ = ["APGD", "FGM", "FGSM", "PGD", "Attack"]

_SETTINGS = frozenset(f.name for f in dataclasses.fields(AttackConfig) if f.init)  # assignable on the attack
# Read through to the config too, but derived from the settings (bounds + normalization, criterion, precision).
_DERIVED = frozenset({f.name for f in dataclasses.fields(AttackConfig) if not f.init} | {"custom_criterion",
                                                                                       "precision_dtype"})


class Attack:
    """An attack with its settings: ``Attack(AttackConfig(...))``, or :class:`PGD` / :class:`FGM`.

    Every setting of :class:`AttackConfig` reads as an attribute (``attack.eps``, ``attack.norm``, ...).
    ``eps`` may be a number or a schedule (a callable of the training step, e.g.
    :func:`advhooks.linear_warmup`); the call takes ``step=`` or an explicit ``eps=``.
    """

    def __init__(self, config: AttackConfig) -> None:
        if not isinstance(config, AttackConfig):
            raise TypeError(f"Attack takes an AttackConfig, got {type(config).__name__}: use PGD(eps, ...) or "
                            "FGM(eps, ...) for keyword settings")
        self.config = config

    @property
    def config(self) -> AttackConfig:
        """The attack's settings (frozen; assigning a setting on the attack replaces the config)."""
        return self._config

    @config.setter
    def config(self, config: AttackConfig) -> None:
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_graphs", GraphedAttack() if config.cuda_graph else None)

    def __getattr__(self, name: str) -> Any:
        if name in _SETTINGS or name in _DERIVED:
            return getattr(self.config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SETTINGS:
            self.config = dataclasses.replace(self.config, **{name: value})
        elif name in _DERIVED:  # a shadowing attribute would be silently ignored by the attack
            raise AttributeError(f"{name} is derived from the attack's settings; set those instead (bounds and "
                                 "normalization for the domain, criterion for its per-sample form)")
        else:
            object.__setattr__(self, name, value)

    def eps_at(self, step: int = 0) -> float:
        """The attack strength at training step ``step``."""
        return self.config.eps_at(step)

    def default_step_size(self, eps: float) -> float:
        """The step length used at strength ``eps`` when none was given."""
        return self.config.step_size_for(eps)

    def __call__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        eps: float | None = None,
        step: int = 0,
        criterion: Criterion | None = None,
        input_key: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        generator: torch.Generator | SampleNoise | None = None,
        watch: Watch | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> torch.Tensor:
        """Adversarial inputs for ``(inputs, targets)``; the model is left exactly as found.

        Args:
            model: the classifier.
            inputs: a batch; see :func:`advhooks.attacks.pgd_perturb`.
            targets: labels (or the criterion's targets).
            eps: strength for this call; default the configured ε at ``step``.
            step: training step, for ε schedules.
            criterion: overrides the configured criterion for this call (TRADES' KL).
            input_key: pass the adversarial tensor as this keyword argument.
            model_kwargs: further keyword arguments for every forward.
            generator: random generator for the start: a ``torch.Generator``, or a
                :class:`~advhooks.attacks.SampleNoise` (per-sample starts, what evaluations use; a
                ``cuda_graph=True`` attack then runs its eager loop, as the capture draws its own starts).
            watch: ``watch(adversarial_inputs, logits)`` at every evaluated point (see :func:`perturb`).
            stop: APGD only: whether to end early, asked every few steps (see :func:`perturb`).
        """
        if self._graphs is not None and not isinstance(generator, SampleNoise):
            if watch is not None or stop is not None:
                raise ValueError("cuda_graph=True replays a captured loop: it takes no watch and no stop")
            return self._graphs(model, inputs, targets, self.config, eps=eps, step=step, criterion=criterion,
                                input_key=input_key, model_kwargs=model_kwargs, generator=generator)
        return perturb(model, inputs, targets, self.config, eps=eps, step=step, criterion=criterion,
                       input_key=input_key, model_kwargs=model_kwargs, generator=generator, watch=watch, stop=stop)

    def __repr__(self) -> str:
        c = self.config
        shown = ("eps", "norm", "steps", "step_size", "random_start", "restarts", "targeted", "bn", "compile",
                 "precision")
        fields = ", ".join(f"{k}={getattr(c, k)!r}" for k in shown)
        return f"{type(self).__name__}({fields}, bounds={c.domain.bounds!r}, normalization={c.domain.normalization!r})"


class PGD(Attack):
    """Projected gradient descent, L∞ or L2 (Madry et al. 2018).

    The arguments are :class:`AttackConfig`'s (``eps`` positional, the rest by keyword; ``step_rule="pgd"``):
    ``step_size`` defaults to ``2.5 * eps / steps``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> attack = PGD(eps=8 / 255, steps=5)
        >>> adv = attack(net, torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,)))
        >>> adv.shape
        torch.Size([8, 1, 2, 2])
    """

    KIND = AttackKind("PGD", fixed={"step_rule": "pgd"})

    def __init__(self, eps: EpsLike, **settings: Any) -> None:
        super().__init__(self.KIND.config(eps=eps, **settings))


class FGM(Attack):
    """Fast gradient method: one step to the boundary of the ball; FGSM when ``norm="linf"``.

    With ``random_start=True`` it is FGSM-RS (Wong et al. 2020): step ``1.25 * eps`` from a uniform
    start, projected back. Arguments as in :class:`PGD`, but for ``steps`` (one) and ``random_start`` (off).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x = torch.rand(8, 1, 2, 2) * 0.5 + 0.25
        >>> adv = FGM(eps=0.1, norm="l2")(net, x, torch.randint(0, 3, (8,)))
        >>> bool(((adv - x).flatten(1).norm(dim=1) <= 0.1 + 1e-6).all())
        True
    """

    KIND = AttackKind("FGM", fixed={"steps": 1, "step_rule": "fgm"}, defaults={"random_start": False})

    def __init__(self, eps: EpsLike, **settings: Any) -> None:
        super().__init__(self.KIND.config(eps=eps, **settings))


class APGD(Attack):
    """APGD (Croce & Hein 2020): PGD with a per-sample adaptive step and momentum; no step size to tune.

    ``criterion="ce"`` (cross-entropy, APGD-CE), ``"dlr"`` (the scale-invariant DLR loss, :func:`dlr_loss`) or
    any per-sample criterion, as for every attack. Each sample keeps its highest-loss point; with ``restarts``
    the worst of the restarts; ``eot=20`` averages each step over 20 draws of a randomised model. Other
    arguments as in :class:`PGD`; the defaults are the paper's (100 steps,
    start uniform in the ball). See :mod:`advhooks.attacks.apgd` for the algorithm.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
        >>> adv = APGD(eps=8 / 255, steps=20, criterion="dlr")(net, x, y)
        >>> bool((adv - x).abs().max() <= 8 / 255 + 1e-6)
        True
    """

    CRITERIA = {"ce": cross_entropy, "dlr": dlr_loss}

    KIND = AttackKind("APGD", fixed={"step_rule": "apgd"}, defaults={"steps": 100, "criterion": "ce"})

    def __init__(self, eps: EpsLike, **settings: Any) -> None:
        criterion = settings.pop("criterion", "ce")
        if isinstance(criterion, str):
            if criterion not in self.CRITERIA:
                raise ValueError(f"criterion must be one of {', '.join(map(repr, self.CRITERIA))} or a per-sample "
                                 f"criterion, got {criterion!r}")
            criterion = self.CRITERIA[criterion]
        super().__init__(self.KIND.config(eps=eps, criterion=criterion, **settings))

    @property
    def criterion_name(self) -> str:
        """``"ce"``, ``"dlr"``, or ``"custom"``: read from its criterion, so it follows ``apgd.criterion = ...``."""
        return next((name for name, fn in self.CRITERIA.items() if self.config.criterion is fn), "custom")


def FGSM(eps: EpsLike, **kwargs: Any) -> FGM:  # noqa: N802 - reads as the attack's name
    """FGSM: :class:`FGM` with ``norm="linf"``."""
    return FGM(eps, norm="linf", **kwargs)


for _cls in (PGD, FGM, APGD):  # what help() and inspect show: the settings derived from AttackConfig
    _cls.__init__.__signature__ = _cls.KIND.signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)])
