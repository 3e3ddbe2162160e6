"""Every setting of an attack, declared and validated once: :class:`AttackConfig`.

The pure functions (:func:`~advhooks.attacks.perturb`, ``pgd_perturb``, ``fgm_perturb``), the attack classes
(:class:`~advhooks.attacks.PGD`, :class:`~advhooks.attacks.FGM`, :class:`~advhooks.attacks.APGD`) and the
CUDA-graph path all read their settings from one frozen ``AttackConfig``; a class only stores one. Their keyword
arguments are derived from its fields (:class:`AttackKind`): a kind fixes some settings and changes some defaults,
and takes every other field as it is, so a field added to ``AttackConfig`` is an argument of each at once.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import torch

from .._validation import check_choice, check_positive, check_positive_int
from ..schedules import EpsLike, resolve_eps, validate_eps
from .criteria import Criterion, per_sample
from .domain import Bounds, InputDomain, Normalization
from .model_state import BN_MODES
from .norms import NORMS

__all__ = ["OUT_OF_BOUNDS", "PRECISIONS", "STEP_RULES", "AttackConfig", "AttackKind"]

# The attack's own autocast dtype; None keeps the caller's context (fp32, or the caller's autocast).
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}
OUT_OF_BOUNDS = ("raise", "clamp")
# How the attack steps, and its step size when none is given: PGD's fixed 2.5·ε/steps (Madry et al. 2018);
# FGM's ε from the clean input, or 1.25·ε after a random start (FGSM-RS, Wong et al. 2020); APGD's
# adaptive per-sample step from 2ε, with momentum (Croce & Hein 2020).
STEP_RULES = ("pgd", "fgm", "apgd")


@dataclass(frozen=True)
class AttackConfig:
    """The settings of a PGD/FGM attack, validated at construction; ``dataclasses.replace`` re-validates.

    Args:
        eps: ball radius in pixel units, or a schedule of the training step (a callable).
        norm: ``"linf"`` or ``"l2"``.
        steps: gradient steps (k of PGD-k; 1 for FGM).
        step_size: step length; ``None`` takes ``step_rule``'s default.
        step_rule: ``"pgd"`` (default step ``2.5 * eps / steps``), ``"fgm"`` (``eps``; ``1.25 * eps`` after
            a random start) or ``"apgd"`` (APGD's adaptive steps from ``2 * eps``; :mod:`advhooks.attacks.apgd`).
        random_start: start uniformly inside the ball (else at the clean input).
        restarts: independent starts; each sample keeps its worst perturbation (for evaluation).
        targeted: minimise the criterion towards the given targets instead of maximising it.
        criterion: ``criterion(logits, targets) -> per-sample loss``, what the attack maximises; ``None`` is
            cross-entropy. A loss module with a ``reduction`` is used with ``reduction="none"``.
        bounds: ``(low, high)`` in pixel units (numbers or per-channel values), ``None`` for unbounded
            inputs, or a prepared :class:`InputDomain`.
        normalization: ``(mean, std)`` per channel when the inputs are normalised before the model.
        out_of_bounds: ``"raise"`` (default) for inputs outside ``bounds``, or ``"clamp"`` them.
        bn: ``"eval"`` or ``"train"``; see :func:`advhooks.attacks.attack_mode`.
        compile: run the attack's forwards through ``torch.compile``.
        precision: ``"bf16"``/``"fp16"``: the attack's own autocast dtype; ``None`` keeps the caller's.
        cuda_graph: capture the whole k-step loop as one CUDA graph per batch shape (CUDA only; one start,
            no ``compile``).
        eot: APGD only: each step's loss and gradient are the mean over this many forwards (expectation over
            transformation, for models with randomness at test time); 1 for a deterministic model.

    Example:
        >>> config = AttackConfig(8 / 255, steps=10)
        >>> round(config.step_size_for(8 / 255) * 255, 6), config.criterion_fn.__name__
        (2.0, 'cross_entropy')
    """

    eps: EpsLike
    norm: str = "linf"
    steps: int = 10
    step_size: float | None = None
    step_rule: str = "pgd"
    random_start: bool = True
    restarts: int = 1
    targeted: bool = False
    criterion: Criterion | None = None
    bounds: Bounds | InputDomain = (0.0, 1.0)
    normalization: Normalization = None
    out_of_bounds: str = "raise"
    bn: str = "eval"
    compile: bool = False
    precision: str | None = None
    cuda_graph: bool = False
    eot: int = 1
    domain: InputDomain = field(init=False, repr=False, compare=False)
    criterion_fn: Criterion = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("eps", validate_eps(self.eps))
        put("norm", check_choice("norm", self.norm, NORMS))
        put("steps", check_positive_int("steps", self.steps))
        if self.step_size is not None:
            put("step_size", check_positive("step_size", self.step_size))
        put("step_rule", check_choice("step_rule", self.step_rule, STEP_RULES))
        put("restarts", check_positive_int("restarts", self.restarts))
        put("eot", check_positive_int("eot", self.eot))
        if self.eot > 1 and self.step_rule != "apgd":
            raise ValueError(f"eot={self.eot} averages APGD's gradients over draws of a randomised model: use "
                             "step_rule='apgd' (APGD) or eot=1")
        for flag in ("random_start", "targeted", "compile", "cuda_graph"):
            put(flag, bool(getattr(self, flag)))
        put("criterion_fn", per_sample(self.criterion))
        bounds = self.bounds
        put("domain", bounds if isinstance(bounds, InputDomain) else InputDomain(bounds, self.normalization))
        if not callable(self.eps):
            self.domain.check_eps(self.eps, self.norm)
        put("out_of_bounds", check_choice("out_of_bounds", self.out_of_bounds, OUT_OF_BOUNDS))
        put("bn", check_choice("bn", self.bn, BN_MODES))
        if self.precision is not None:
            put("precision", check_choice("precision", self.precision, tuple(PRECISIONS)))
        if self.cuda_graph:
            if not torch.cuda.is_available():
                raise ValueError("cuda_graph=True needs a CUDA device (torch.cuda.is_available() is False); leave it "
                                 "off on the CPU, where eager PyTorch already runs at the attack's compute limit")
            if self.restarts > 1 or self.compile or self.eot > 1:
                raise ValueError("cuda_graph=True captures one start of the attack: use restarts=1, compile=False "
                                 "and eot=1")

    @property
    def custom_criterion(self) -> bool:
        """Whether the attack was given its own criterion (else AdversarialStep's criterion stands in)."""
        return self.criterion is not None

    @property
    def precision_dtype(self) -> torch.dtype | None:
        """The autocast dtype of ``precision``, or ``None``."""
        return None if self.precision is None else PRECISIONS[self.precision]

    def eps_at(self, step: int = 0) -> float:
        """The attack strength at training step ``step``."""
        return resolve_eps(self.eps, step)

    def step_size_for(self, eps: float) -> float:
        """The step length at strength ``eps``: ``step_size`` if given, else ``step_rule``'s default."""
        if self.step_size is not None:
            return self.step_size
        if self.step_rule == "fgm":
            return 1.25 * eps if self.random_start else eps
        if self.step_rule == "apgd":
            return 2.0 * eps
        return 2.5 * eps / self.steps

    def settings(self) -> dict[str, Any]:
        """The constructor's arguments, as given after validation (for ``repr`` and records)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


@dataclass(frozen=True)
class AttackKind:
    """One kind of attack as its keyword arguments see it: the :class:`AttackConfig` settings it ``fixes`` (not
    arguments) and the ``defaults`` it changes; every other field of ``AttackConfig`` is an argument with the
    field's own default.

    Example:
        >>> fgm = AttackKind("FGM", fixed={"steps": 1, "step_rule": "fgm"}, defaults={"random_start": False})
        >>> config = fgm.config(eps=0.1, norm="l2")
        >>> config.steps, config.random_start, "steps" in fgm.arguments()
        (1, False, False)
    """

    name: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def arguments(self) -> dict[str, Any]:
        """Each argument's name and default (``inspect.Parameter.empty`` for ``eps``), in ``AttackConfig``'s order."""
        out = {}
        for f in fields(AttackConfig):
            if f.init and f.name not in self.fixed:
                default = f.default if f.default is not MISSING else inspect.Parameter.empty
                out[f.name] = self.defaults.get(f.name, default)
        return out

    def config(self, **given: Any) -> AttackConfig:
        """The validated config of these arguments (an unknown or fixed name is a ``TypeError``, as in a call)."""
        allowed = self.arguments()
        unknown = [name for name in given if name not in allowed]
        if unknown:
            raise TypeError(f"{self.name}() got an unexpected keyword argument {unknown[0]!r} (its settings: "
                            f"{', '.join(allowed)})")
        return AttackConfig(**{**self.defaults, **given, **self.fixed})

    def signature(self, leading: list[inspect.Parameter]) -> inspect.Signature:
        """A call's signature: ``leading`` parameters, then the arguments (``eps`` first, the rest keyword-only)."""
        params = list(leading)
        for name, default in self.arguments().items():
            kind = inspect.Parameter.KEYWORD_ONLY
            if name == "eps" and not any(p.kind == inspect.Parameter.KEYWORD_ONLY for p in params):
                kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
            params.append(inspect.Parameter(name, kind, default=default))
        return inspect.Signature(params)
