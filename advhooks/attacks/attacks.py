"""Thin configurable attack classes over the pure functions: ``attack(model, inputs, targets)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._validation import check_choice, check_positive, check_positive_int
from ..schedules import EpsLike, resolve_eps, validate_eps
from .domain import Bounds, InputDomain, Normalization
from .functional import OUT_OF_BOUNDS, PRECISIONS, _check_targets, _perturb
from .graphs import GraphedAttack, check_cuda_graph_available
from .model_state import BN_MODES
from .norms import NORMS
from .objectives import Objective, per_sample

__all__ = ["FGM", "FGSM", "PGD", "Attack"]


class Attack:
    """Configuration shared by the attacks, validated at construction.

    Subclasses set the iteration count and default step size. ``eps`` may be a number or a schedule
    (a callable of the training step, e.g. :func:`advhooks.linear_warmup`); the call takes ``step=``
    or an explicit ``eps=``.
    """

    def __init__(
        self,
        eps: EpsLike,
        *,
        norm: str = "linf",
        steps: int = 1,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        targeted: bool = False,
        objective: Objective | None = None,
        bounds: Bounds = (0.0, 1.0),
        normalization: Normalization = None,
        out_of_bounds: str = "raise",
        bn: str = "eval",
        compile: bool = False,
        precision: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        self.eps = validate_eps(eps)
        self.norm = check_choice("norm", norm, NORMS)
        self.steps = check_positive_int("steps", steps)
        self.step_size = None if step_size is None else check_positive("step_size", step_size)
        self.random_start = bool(random_start)
        self.restarts = check_positive_int("restarts", restarts)
        self.targeted = bool(targeted)
        self.objective = per_sample(objective)
        # AdversarialStep lets its criterion stand in for an objective the user did not choose.
        self.custom_objective = objective is not None
        self.domain = InputDomain(bounds, normalization)
        if not callable(self.eps):
            self.domain.check_eps(self.eps, self.norm)
        self.out_of_bounds = check_choice("out_of_bounds", out_of_bounds, OUT_OF_BOUNDS)
        self.bn = check_choice("bn", bn, BN_MODES)
        self.compile = bool(compile)
        self.precision = None if precision is None else check_choice("precision", precision, tuple(PRECISIONS))
        self.cuda_graph = bool(cuda_graph)
        self._graphed = None
        if self.cuda_graph:
            check_cuda_graph_available()
            if self.restarts > 1 or self.compile:
                raise ValueError("cuda_graph=True captures one start of the attack: use restarts=1 and compile=False")
            self._graphed = GraphedAttack()

    def eps_at(self, step: int = 0) -> float:
        """The attack strength at training step ``step``."""
        return resolve_eps(self.eps, step)

    def default_step_size(self, eps: float) -> float:
        """Step length used when none was given."""
        raise NotImplementedError

    def __call__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        eps: float | None = None,
        step: int = 0,
        objective: Objective | None = None,
        input_key: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Adversarial inputs for ``(inputs, targets)``; the model is left exactly as found.

        Args:
            model: the classifier.
            inputs: a batch; see :func:`advhooks.attacks.pgd_perturb`.
            targets: labels (or the objective's targets).
            eps: strength for this call; default the configured ε at ``step``.
            step: training step, for ε schedules.
            objective: overrides the configured objective for this call (TRADES' KL).
            input_key: pass the adversarial tensor as this keyword argument.
            model_kwargs: further keyword arguments for every forward.
            generator: random generator for the start.
        """
        eps = self.eps_at(step) if eps is None else resolve_eps(eps, step)
        step_size = self.default_step_size(eps) if self.step_size is None else self.step_size
        if self._graphed is not None:
            if model_kwargs or generator is not None:
                raise ValueError("cuda_graph=True takes no model_kwargs and no generator (the capture is static)")
            self.domain.check_eps(eps, self.norm)
            _check_targets(inputs, targets)
            return self._graphed(model, inputs, targets, eps=eps, norm=self.norm, steps=self.steps,
                                 step_size=step_size, random_start=self.random_start, targeted=self.targeted,
                                 objective=self.objective if objective is None else objective, domain=self.domain,
                                 bn=self.bn, input_key=input_key, out_of_bounds=self.out_of_bounds,
                                 precision_dtype=None if self.precision is None else PRECISIONS[self.precision])
        return _perturb(
            model, inputs, targets, eps=eps, norm=self.norm, steps=self.steps, step_size=step_size,
            random_start=self.random_start, restarts=self.restarts, targeted=self.targeted,
            objective=self.objective if objective is None else objective, bounds=self.domain,
            normalization=None, out_of_bounds=self.out_of_bounds, bn=self.bn, input_key=input_key,
            model_kwargs=model_kwargs, generator=generator, compile=self.compile,
            precision=self.precision,
        )

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={getattr(self, k)!r}" for k in ("eps", "norm", "steps", "step_size", "random_start", "restarts",
                                                   "targeted", "bn", "compile", "precision")
        )
        return (f"{type(self).__name__}({fields}, bounds={self.domain.bounds!r}, "
                f"normalization={self.domain.normalization!r})")


class PGD(Attack):
    """Projected gradient descent, L∞ or L2 (Madry et al. 2018).

    Args:
        eps: ball radius in pixel units, or a schedule of the training step.
        norm: ``"linf"`` or ``"l2"``.
        steps: gradient steps (k of PGD-k).
        step_size: step length; default ``2.5 * eps / steps``.
        random_start: uniform start in the ball.
        restarts: independent starts; each sample keeps its worst (for evaluation).
        targeted: minimise the objective towards the given targets.
        objective: ``objective(logits, targets) -> per-sample loss``; default cross-entropy.
        bounds: ``(low, high)`` in pixel units (numbers or per-channel), ``None`` for unbounded inputs.
        normalization: ``(mean, std)`` when the inputs are normalised before the model.
        out_of_bounds: ``"raise"`` or ``"clamp"`` for inputs outside ``bounds``.
        bn: ``"eval"`` or ``"train"`` (see :func:`advhooks.attacks.attack_mode`).
        compile: run the attack's forwards through ``torch.compile`` (see :func:`pgd_perturb`).
        precision: ``"bf16"``/``"fp16"``: the attack's own autocast dtype (see :func:`pgd_perturb`).
        cuda_graph: capture the whole k-step loop as one CUDA graph per batch shape and replay it
            (:mod:`advhooks.attacks.graphs`; CUDA only, refused on the CPU; restarts=1).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> attack = PGD(eps=8 / 255, steps=5)
        >>> adv = attack(net, torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,)))
        >>> adv.shape
        torch.Size([8, 1, 2, 2])
    """

    def __init__(self, eps: EpsLike, norm: str = "linf", steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, restarts: int = 1, targeted: bool = False,
                 objective: Objective | None = None, bounds: Bounds = (0.0, 1.0),
                 normalization: Normalization = None, out_of_bounds: str = "raise", bn: str = "eval",
                 compile: bool = False, precision: str | None = None, cuda_graph: bool = False) -> None:
        super().__init__(eps, norm=norm, steps=steps, step_size=step_size, random_start=random_start,
                         restarts=restarts, targeted=targeted, objective=objective, bounds=bounds,
                         normalization=normalization, out_of_bounds=out_of_bounds, bn=bn, compile=compile,
                         precision=precision, cuda_graph=cuda_graph)

    def default_step_size(self, eps: float) -> float:
        """``2.5 * eps / steps`` (Madry et al.)."""
        return 2.5 * eps / self.steps


class FGM(Attack):
    """Fast gradient method: one step to the boundary of the ball; FGSM when ``norm="linf"``.

    With ``random_start=True`` it is FGSM-RS (Wong et al. 2020): step ``1.25 * eps`` from a uniform
    start, projected back. Arguments as in :class:`PGD` (without ``steps`` and ``restarts``).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x = torch.rand(8, 1, 2, 2) * 0.5 + 0.25
        >>> adv = FGM(eps=0.1, norm="l2")(net, x, torch.randint(0, 3, (8,)))
        >>> bool(((adv - x).flatten(1).norm(dim=1) <= 0.1 + 1e-6).all())
        True
    """

    def __init__(self, eps: EpsLike, norm: str = "linf", step_size: float | None = None,
                 random_start: bool = False, targeted: bool = False, objective: Objective | None = None,
                 bounds: Bounds = (0.0, 1.0), normalization: Normalization = None,
                 out_of_bounds: str = "raise", bn: str = "eval", compile: bool = False,
                 precision: str | None = None) -> None:
        super().__init__(eps, norm=norm, steps=1, step_size=step_size, random_start=random_start,
                         targeted=targeted, objective=objective, bounds=bounds, normalization=normalization,
                         out_of_bounds=out_of_bounds, bn=bn, compile=compile, precision=precision)

    def default_step_size(self, eps: float) -> float:
        """``eps`` from the clean input; ``1.25 * eps`` after a random start (Wong et al. 2020)."""
        return 1.25 * eps if self.random_start else eps


def FGSM(eps: EpsLike, **kwargs: Any) -> FGM:  # noqa: N802 - reads as the attack's name
    """FGSM: :class:`FGM` with ``norm="linf"``."""
    return FGM(eps, norm="linf", **kwargs)
