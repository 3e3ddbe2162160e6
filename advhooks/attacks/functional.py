"""PGD and FGM as pure functions on tensors: the hot path of advhooks.

:func:`perturb` does the work for every attack path: it takes the inputs and one :class:`AttackConfig`.
``pgd_perturb`` and ``fgm_perturb`` are its keyword forms, and the attack classes only store a config.
The perturbation δ is one batched buffer updated in place. Each iteration is exactly one forward and
one input-gradient pass (``torch.autograd.grad`` with δ as the only input, so no parameter gradient is
computed or touched) plus a few element-wise ops; nothing reads a tensor value on the host, so the
loop can be compiled or captured as a CUDA graph.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from .._outputs import call_model
from ..schedules import check_eps_value
from .apgd import apgd_ascend_
from .checks import InputChecks, check_call, check_model_matches
from .config import AttackConfig, AttackKind
from .criteria import Criterion
from .domain import InputDomain
from .model_state import attack_mode, autocast_loss_scale, unwrap_parallel
from .norms import Region, project_, random_in_ball_, steepest_direction_
from .sample_noise import SampleNoise

__all__ = ["Watch", "fgm_perturb", "perturb", "pgd_perturb"]

Watch = Callable[[torch.Tensor, torch.Tensor], None]  # watch(adversarial_inputs, logits), on the device

_compiled_call = None


def _compiled_call_model(module, inputs, input_key, kwargs):
    """``call_model`` through one ``torch.compile``d function; dynamo specialises it per module and mode."""
    global _compiled_call
    if _compiled_call is None:
        _compiled_call = torch.compile(call_model, dynamic=False)
    return _compiled_call(module, inputs, input_key, kwargs)


PGD_FUNCTION = AttackKind("pgd_perturb", fixed={"step_rule": "pgd", "cuda_graph": False})
FGM_FUNCTION = AttackKind("fgm_perturb", fixed={"steps": 1, "step_rule": "fgm", "cuda_graph": False},
                          defaults={"random_start": False})


def pgd_perturb(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, input_key: str | None = None,
                model_kwargs: Mapping[str, Any] | None = None, generator: torch.Generator | SampleNoise | None = None,
                **settings: Any) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018): adversarial inputs in the ε-ball of ``norm``.

    ``settings`` are :class:`AttackConfig`'s (see there for each; ``eps`` a number, required); the call's own
    arguments:

    Args:
        model: the classifier; DDP wrappers are looked through. Left exactly as found.
        inputs: a batch ``(N, ...)``. If it requires grad (embeddings), the result keeps that graph.
        targets: what ``criterion`` compares the logits with (labels; target labels when ``targeted``;
            reference log-probabilities for TRADES' KL criterion).
        eps: radius of the ball, in pixel units (before any normalisation).
        step_size: step length; default ``2.5 * eps / steps``.
        input_key: pass the adversarial tensor as this keyword (``"pixel_values"``, ``"inputs_embeds"``).
        model_kwargs: further keyword arguments for every forward (attention masks, ...).
        generator: random generator for the starts.
        compile: measured on the CPU: 0.87× eager time for PreActResNet18, 1.5× for a small MNIST CNN, hence
            off by default.
        precision: ``"bf16"`` takes 0.5× the fp32 time of PGD-10 on PreActResNet18 on an AVX512-BF16 CPU; see
            ``benchmarks/fused_path.py`` for the attack strength it keeps.

    Returns:
        ``inputs + δ`` with δ detached, inside the ball and the bounds.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
        >>> adv = pgd_perturb(net, x, y, eps=0.1, steps=3)
        >>> bool((adv - x).abs().max() <= 0.1 + 1e-6)
        True
    """
    return perturb(model, inputs, targets, _config(PGD_FUNCTION, settings), input_key=input_key,
                   model_kwargs=model_kwargs, generator=generator)


def fgm_perturb(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, input_key: str | None = None,
                model_kwargs: Mapping[str, Any] | None = None, generator: torch.Generator | SampleNoise | None = None,
                **settings: Any) -> torch.Tensor:
    """Fast gradient method: one step to the ball's boundary (FGSM for ``norm="linf"``).

    With ``random_start`` it is FGSM-RS of Wong et al. (2020): a uniform start, then one step of
    ``1.25 * eps`` projected back onto the ball. Other arguments as in :func:`pgd_perturb`.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(8, 1, 2, 2) * 0.5 + 0.25, torch.randint(0, 3, (8,))
        >>> adv = fgm_perturb(net, x, y, eps=0.1)
        >>> bool(torch.allclose((adv - x).abs(), torch.full_like(x, 0.1)))
        True
    """
    return perturb(model, inputs, targets, _config(FGM_FUNCTION, settings), input_key=input_key,
                   model_kwargs=model_kwargs, generator=generator)


def _config(kind: AttackKind, settings: dict[str, Any]) -> AttackConfig:
    if "eps" not in settings:
        raise TypeError(f"{kind.name}() missing the keyword argument 'eps'")
    return kind.config(**{**settings, "eps": check_eps_value(settings["eps"])})


def perturb(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, config: AttackConfig, *,
            eps: float | None = None, step: int = 0, criterion: Criterion | None = None,
            input_key: str | None = None, model_kwargs: Mapping[str, Any] | None = None,
            generator: torch.Generator | SampleNoise | None = None, watch: Watch | None = None,
            stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """Adversarial inputs for ``(inputs, targets)`` under ``config``; the model is left exactly as found.

    Args:
        model: the classifier; DDP wrappers are looked through.
        inputs / targets: a batch; see :func:`pgd_perturb`.
        config: the attack's settings.
        eps: the strength of this call; default the config's ε at ``step``.
        step: training step, for ε schedules.
        criterion: overrides the config's criterion for this call (TRADES' KL).
        input_key, model_kwargs, generator: as in :func:`pgd_perturb`.
        watch: called as ``watch(adversarial_inputs, logits)`` (both detached) at every point the attack
            evaluates, before its loss; it must not read values on the host (robust-accuracy evaluation keeps
            the first misclassified point with it).
        stop: APGD only: asked every :data:`~advhooks.attacks.apgd.STOP_EVERY` steps (a host read each, when
            given) whether to end early, e.g. once ``watch`` has seen every sample misclassified.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
        >>> adv = perturb(net, x, y, AttackConfig(0.1, norm="l2", steps=3))
        >>> bool(((adv - x).flatten(1).norm(dim=1) <= 0.1 + 1e-6).all())
        True
    """
    eps, criterion = check_call(config, inputs, targets, eps, step, criterion)
    check_model_matches(unwrap_parallel(model), inputs, config.precision)
    domain = config.domain
    placed = domain.place(inputs)
    checks = None  # the input checks: device flags, read on the host once, at the first forward
    if config.out_of_bounds == "clamp":
        if domain.is_bounded:
            inputs = torch.clamp(inputs, placed.input_low, placed.input_high)
    else:
        checks = InputChecks(inputs.detach(), domain, placed)
    if eps == 0.0:
        if checks is not None:
            checks.read(None, targets)
        return inputs.clone()
    delta = _search(model, inputs.detach(), targets, config, eps, criterion, placed, checks,
                    input_key, dict(model_kwargs or {}), generator, watch, stop)
    return apply_delta(inputs, delta, domain, placed)


def _search(model, x, targets, config, eps, criterion, placed, checks, input_key, kwargs, generator,
            watch, stop) -> torch.Tensor:
    """δ of the attack (of its worst restart per sample), in pixel units."""
    low, high = delta_box(x, config.domain, placed, config.norm, eps)
    inv_std = placed.inv_std
    sign = -1.0 if config.targeted else 1.0
    device_type = x.device.type
    autocast = nullcontext() if config.precision is None else torch.autocast(device_type, config.precision_dtype)
    run_model = _compiled_call_model if config.compile else call_model
    with attack_mode(model, config.bn) as module, torch.enable_grad(), autocast:  # callers may be under no_grad
        loss_scale = autocast_loss_scale(device_type)

        def forward(delta: torch.Tensor) -> torch.Tensor:
            adv = x + delta if inv_std is None else x + delta * inv_std
            logits = run_model(module, adv, input_key, kwargs)
            if watch is not None:
                watch(adv.detach(), logits.detach())
            return logits

        def read_checks(logits: torch.Tensor) -> None:  # one host read per call, before any loss
            nonlocal checks
            if checks is not None:
                checks.read(logits, targets)
                checks = None

        best = None
        for _ in range(config.restarts):
            delta = torch.zeros_like(x)
            if config.random_start:
                random_in_ball_(delta, config.norm, eps, generator)
                if low is not None:
                    delta.clamp_(low, high)
            delta = ascent(config)(delta, forward, criterion, targets, region=Region(config.norm, eps, low, high),
                                   steps=config.steps, step_size=config.step_size_for(eps), sign=sign,
                                   loss_scale=loss_scale, on_first_logits=read_checks, **_apgd_options(config, stop))
            if config.restarts == 1:
                return delta
            best = _keep_worst(best, delta, forward, criterion, targets, sign)
    return best[0]


def _apgd_options(config: AttackConfig, stop: Callable[[], bool] | None) -> dict[str, Any]:
    """The keyword arguments only APGD's loop takes."""
    options: dict[str, Any] = {} if stop is None else {"should_stop": stop}
    if config.eot > 1:
        options["eot"] = config.eot
    return options


def _keep_worst(best: tuple[torch.Tensor, torch.Tensor] | None, delta: torch.Tensor, forward: Any,
                criterion: Criterion, targets: torch.Tensor, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the restart with the highest (signed) criterion so far: ``(delta, score)``."""
    with torch.no_grad():
        score = criterion(forward(delta), targets)
        if score.ndim != 1:
            raise ValueError("restarts > 1 needs a criterion that returns one loss per sample")
        score = score.float() * sign
    if best is None:
        return delta, score
    better = (score > best[1]).reshape((-1,) + (1,) * (delta.ndim - 1))
    return torch.where(better, delta, best[0]), torch.maximum(score, best[1])


def apply_delta(inputs: torch.Tensor, delta: torch.Tensor, domain: InputDomain, placed: Any) -> torch.Tensor:
    """``inputs + δ`` (δ in pixel units, scaled into normalised units), clamped into the bounds."""
    adv = inputs + (delta if placed.inv_std is None else delta * placed.inv_std)
    if domain.is_bounded:
        adv = torch.clamp(adv, placed.input_low, placed.input_high)
    return adv


def delta_box(x: torch.Tensor, domain: InputDomain, placed: Any, norm: str,
              eps: float) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """δ's box in pixel units, ``low <= pixel(x) + δ <= high`` (and the L∞ ball folded in); ``None`` unbounded."""
    if not domain.is_bounded:
        return None, None
    # The clamp absorbs normalise/denormalise rounding so that δ's box always contains 0.
    x_pixels = torch.clamp(domain.pixels(x, placed), placed.low, placed.high)
    low, high = placed.low - x_pixels, placed.high - x_pixels
    if norm == "linf":  # one clamp then projects onto ball ∩ box exactly
        low, high = low.clamp_min(-eps), high.clamp_max(eps)
    return low, high


def ascent(config: AttackConfig) -> Any:
    """The iteration loop of ``config``'s step rule: :func:`ascend_` (PGD, FGM) or APGD's."""
    return apgd_ascend_ if config.step_rule == "apgd" else ascend_


def ascend_(delta: torch.Tensor, forward: Any, criterion: Criterion, targets: torch.Tensor, *, region: Region,
            steps: int, step_size: float, sign: float, loss_scale: float, on_first_logits: Any = None) -> torch.Tensor:
    """PGD's iterations from ``delta`` (updated in place): ``steps`` steepest-ascent steps, each projected onto
    ``region``.

    The one loop every path runs (eager, compiled, captured as a CUDA graph): no host read, no branch on a
    tensor value. ``on_first_logits(logits)`` runs once, before the first loss (the eager path's input checks).
    """
    delta.requires_grad_(True)
    for i in range(steps):
        logits = forward(delta)
        if i == 0 and on_first_logits is not None:
            on_first_logits(logits)
        loss = criterion(logits, targets)
        if loss_scale != 1.0:
            loss = loss * loss_scale
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        with torch.no_grad():
            if loss_scale != 1.0:  # an fp16 overflow must not poison δ
                torch.nan_to_num_(grad, nan=0.0, posinf=1.0, neginf=-1.0)
            delta.add_(steepest_direction_(grad, region.norm), alpha=sign * step_size)
            project_(delta, *region)
    return delta.detach()


for _fn, _kind in ((pgd_perturb, PGD_FUNCTION), (fgm_perturb, FGM_FUNCTION)):  # help() shows AttackConfig's settings
    _leading = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("model", "inputs", "targets")]
    _calls = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None)
              for n in ("input_key", "model_kwargs", "generator")]
    _signature = _kind.signature(_leading)
    _params = list(_signature.parameters.values())
    _fn.__signature__ = _signature.replace(parameters=[
        *_params[:3], *[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in _params[3:]], *_calls])
