"""Robust accuracy a reviewer accepts: attacks run in order on the points still robust, and each sample
counts as robust only if every attack of the suite failed on it (its worst case).

An attack's success is checked at every point it evaluates (``watch`` of :func:`~advhooks.attacks.perturb`),
so a sample that is misclassified at any iterate counts as broken even when the attack's final point is
not: the protocol of AutoAttack (Croce & Hein 2020). A batch stops early once every sample is broken: APGD
asks every few steps (one host read, :data:`~advhooks.attacks.apgd.STOP_EVERY`), Square shrinks its batch to
the unbroken samples every 10 queries, and APGD-T and FAB-T run their first target, then the others together,
only on the samples still robust. Suites:

- ``"standard"``: AutoAttack's standard suite: APGD-CE (100 steps), APGD-T (targeted DLR, 100 steps against
  each of the 9 most likely other classes, or all of them with fewer classes), FAB-T (100 steps per target,
  the same 9 targets) and Square (5,000 queries). Square uses no gradient: it is the check against gradient
  masking. The suite for a final figure.
- ``"apgd"``: APGD-CE then APGD-T: the standard suite without FAB-T and Square.
- ``"fast"``: APGD-CE (20 steps), then APGD-T against the 3 most likely other classes (20 steps each): a
  cheaper check for per-epoch use, named as such in reports.
- ``"rand"``: for randomised models (AutoAttack's rand version): APGD-CE and APGD-DLR, 100 steps, each
  gradient the mean over 20 draws of the model (expectation over transformation); a sample counts as broken
  when the final point of an attack is misclassified (one draw), as AutoAttack judges it. On a deterministic
  model it warns: the 20 draws are wasted.
- ``"pgd"``: PGD-20 with early stopping (a sample stops counting once misclassified), the customary
  training-time evaluation; weaker than the APGD suites.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ._outputs import logits_of
from .attacks import APGD, PGD, Attack, eval_mode
from .attacks.apgd import targeted_dlr_loss
from .attacks.domain import Bounds, Normalization
from .attacks.fab import fab_targeted_perturb
from .attacks.square import square_perturb
from .masking import masking_warnings, randomised, zero_gradient_count

__all__ = ["SUITES", "RobustnessReport", "SuiteAttack", "attack_batch", "robust_accuracy"]

KINDS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "pgd")


@dataclass(frozen=True)
class SuiteAttack:
    """One attack of a suite.

    ``kind`` is one of ``"apgd-ce"``, ``"apgd-dlr"``, ``"apgd-t"`` (targeted DLR), ``"fab-t"``, ``"square"`` or
    ``"pgd"``; ``steps`` its iterations (Square: its queries); ``targets`` how many of the most likely other
    classes APGD-T and FAB-T try; ``eot`` the draws of a randomised model averaged per APGD step.
    """

    name: str
    kind: str
    steps: int
    targets: int = 0
    eot: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {self.kind!r}")

    def attack(self, eps: float, norm: str, bounds: Bounds, normalization: Normalization) -> Attack:
        """The gradient attack of an APGD or PGD kind."""
        if self.kind == "pgd":
            return PGD(eps, norm=norm, steps=self.steps, bounds=bounds, normalization=normalization)
        return APGD(eps, norm=norm, steps=self.steps, criterion="dlr" if self.kind == "apgd-dlr" else "ce",
                    bounds=bounds, normalization=normalization, eot=self.eot)


SUITES: dict[str, tuple[SuiteAttack, ...]] = {
    "standard": (SuiteAttack("apgd-ce", "apgd-ce", 100), SuiteAttack("apgd-t", "apgd-t", 100, targets=9),
                 SuiteAttack("fab-t", "fab-t", 100, targets=9), SuiteAttack("square", "square", 5000)),
    "apgd": (SuiteAttack("apgd-ce", "apgd-ce", 100), SuiteAttack("apgd-t", "apgd-t", 100, targets=9)),
    "fast": (SuiteAttack("apgd-ce-20", "apgd-ce", 20), SuiteAttack("apgd-t-20", "apgd-t", 20, targets=3)),
    "rand": (SuiteAttack("apgd-ce-eot", "apgd-ce", 100, eot=20), SuiteAttack("apgd-dlr-eot", "apgd-dlr", 100, eot=20)),
    "pgd": (SuiteAttack("pgd-20", "pgd", 20),),
}


@dataclass
class RobustnessReport:
    """The suite's result: clean accuracy, robust accuracy after each attack (in order) and overall, times, the
    share of samples with a zero input gradient and the signs of gradient masking seen (:mod:`advhooks.masking`:
    each a sentence, also logged as a warning)."""

    suite: str
    eps: float
    norm: str
    n: int
    clean_accuracy: float
    robust_accuracy: float
    after: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    zero_gradient_share: float = 0.0
    masking: list[str] = field(default_factory=list)

    @property
    def broken_by(self) -> dict[str, float]:
        """The share of all samples each attack broke (of those the attacks before it left robust)."""
        shares, before = {}, self.clean_accuracy
        for name, acc in self.after.items():
            shares[name], before = before - acc, acc
        return shares

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "broken_by": self.broken_by}

    def summary(self) -> str:
        """A few aligned lines for people: per attack, the robust accuracy after it and the share it broke."""
        rows = [("samples", str(self.n)), ("clean accuracy", f"{100 * self.clean_accuracy:.2f} %")]
        rows += [(f"robust after {name}", f"{100 * acc:.2f} %  (broke {100 * self.broken_by[name]:.2f} %, "
                                          f"{self.seconds.get(name, 0.0):.1f} s)")
                 for name, acc in self.after.items()]
        rows.append((f"robust accuracy ({self.suite} suite)", f"{100 * self.robust_accuracy:.2f} %"))
        rows += [("warning", sentence) for sentence in self.masking]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def attack_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: str = "linf",
                 suite: str | Iterable[SuiteAttack] = "standard", bounds: Bounds = (0.0, 1.0),
                 normalization: Normalization = None, seed: int = 0,
                 seconds: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One batch through the suite: the adversarial inputs (the clean input where nothing broke the sample)
    and, per attack, the mask of samples still robust after it (cumulative; the first entry ``"clean"``)."""
    attacks = _suite(suite)
    if x.ndim != 4 and any(a.kind == "square" for a in attacks):  # refused before any attack runs
        raise ValueError(f"the suite's Square attack needs image batches (N, C, H, W), got {tuple(x.shape)}: for "
                         "other inputs evaluate with suite='apgd' (APGD-CE, APGD-T)")
    with torch.no_grad(), eval_mode(model):
        clean_logits = logits_of(model(x))
        if any(a.eot > 1 for a in attacks):
            _warn_if_deterministic(model, x, clean_logits)
    robust = clean_logits.argmax(1) == y
    adv, masks = x.clone(), {"clean": robust.clone()}
    for spec in attacks:
        started = time.perf_counter()
        idx = robust.nonzero().squeeze(1)  # one host read per attack and batch, outside every loop
        if idx.numel():
            broken, found = _run(model, x[idx], y[idx], clean_logits[idx], spec, eps, norm, bounds, normalization,
                                 seed, x.shape[0])
            robust[idx] = ~broken
            adv[idx] = torch.where(broken.reshape((-1,) + (1,) * (x.ndim - 1)), found, x[idx])
        masks[spec.name] = robust.clone()
        if seconds is not None:
            seconds[spec.name] = seconds.get(spec.name, 0.0) + time.perf_counter() - started
    return adv, masks


def _suite(suite: str | Iterable[SuiteAttack]) -> tuple[SuiteAttack, ...]:
    if isinstance(suite, str):
        if suite not in SUITES:
            raise ValueError(f"suite must be one of {', '.join(map(repr, SUITES))}, got {suite!r}")
        return SUITES[suite]
    return tuple(suite)


def _warn_if_deterministic(model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> None:
    if torch.equal(logits_of(model(x)), logits):
        warnings.warn("the rand suite averages each gradient over 20 draws of a randomised model, but this model "
                      "gave the same logits twice: the draws are wasted; use suite='standard' for a deterministic "
                      "model", UserWarning, stacklevel=3)


TARGET_ROWS = 2048
"""The most rows (samples × targets) one run of APGD-T or FAB-T attacks at once, and never more than the batch
given (so a batch size chosen to fit the memory still fits)."""


def _run(model, x, y, clean_logits, spec, eps, norm, bounds, normalization, seed, rows):
    """Which samples ``spec`` breaks (at any evaluated point), and the first breaking input of each (``rows``: the
    caller's batch size, which a batch of targets does not exceed beyond :data:`TARGET_ROWS`).

    The targeted kinds try the most likely other class first, alone (it breaks most of what any target breaks),
    then the next targets together: each sample once per target in one batch of up to the caller's batch size,
    on the samples still robust. Fewer, larger passes: on a CPU or a small model the per-step overhead of nine
    sequential runs was most of their time. A sample counts as broken by any target; its point is the first
    target's (in order of likelihood) that broke it.
    """
    if spec.kind not in ("apgd-t", "fab-t"):
        return _attempt(model, x, y, None, spec, eps, norm, bounds, normalization, seed)
    broken, found = torch.zeros_like(y, dtype=torch.bool), x.clone()
    order = clean_logits.argsort(dim=1, descending=True)
    ranks = list(range(1, min(spec.targets, clean_logits.shape[1] - 1) + 1))
    while ranks:
        idx = (~broken).nonzero().squeeze(1)  # one host read per group of targets: the next ones try the rest
        if idx.numel() == 0:
            break
        group = ranks[:1] if ranks[0] == 1 else ranks[:max(1, min(TARGET_ROWS, rows) // idx.numel())]
        ranks = ranks[len(group):]
        n, t = idx.numel(), len(group)
        batch = x[idx].repeat((t,) + (1,) * (x.ndim - 1))  # target-major: all samples for group[0], then group[1] ...
        targets = order[idx][:, group].T.reshape(-1)
        hit, point = _attempt(model, batch, y[idx].repeat(t), targets, spec, eps, norm, bounds, normalization, seed)
        hit, point = hit.reshape(t, n), point.reshape(t, n, *x.shape[1:])
        first = hit.to(torch.uint8).argmax(0)  # the first target that broke each sample (0 where none did)
        chosen = point[first, torch.arange(n, device=x.device)]
        any_hit = hit.any(0)
        found[idx] = torch.where(any_hit.reshape((-1,) + (1,) * (x.ndim - 1)), chosen, found[idx])
        broken[idx] = any_hit
    return broken, found


def _attempt(model, x, y, target, spec, eps, norm, bounds, normalization, seed):
    """One run of ``spec`` (against ``target`` for the targeted kinds): ``(broken, breaking inputs)``."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    if spec.kind == "square":
        found, broken = square_perturb(model, x, y, eps=eps, norm=norm, n_queries=spec.steps, bounds=bounds,
                                       normalization=normalization, generator=generator)
        return broken, found
    if spec.kind == "fab-t":
        found, broken = fab_targeted_perturb(model, x, y, target, eps=eps, norm=norm, steps=spec.steps,
                                             bounds=bounds, normalization=normalization)
        return broken, found
    broken, found = torch.zeros_like(y, dtype=torch.bool), x.clone()
    view = (-1,) + (1,) * (x.ndim - 1)

    def watch(inputs: torch.Tensor, logits: torch.Tensor) -> None:
        new = (logits.argmax(1) != y) & ~broken
        found.copy_(torch.where(new.reshape(view), inputs, found))
        broken.logical_or_(new)

    kwargs: dict[str, Any] = {}
    if spec.kind == "apgd-t":
        kwargs["criterion"] = lambda logits, labels: targeted_dlr_loss(logits, labels, target)
    if spec.kind != "pgd" and spec.eot == 1:
        kwargs["stop"] = lambda: bool(broken.all())  # one host read, every few APGD steps
    out = spec.attack(eps, norm, bounds, normalization)(model, x, y, generator=generator,
                                                          watch=watch if spec.eot == 1 else None, **kwargs)
    with torch.no_grad(), eval_mode(model):
        watch(out, logits_of(model(out)))  # the final point, which the loop may not have evaluated
    return broken, found


def robust_accuracy(model: nn.Module, data: Dataset | Iterable, eps: float, *, norm: str = "linf",
                    suite: str | Iterable[SuiteAttack] = "standard", n: int | None = None, batch_size: int = 256,
                    device: torch.device | str | None = None, bounds: Bounds = (0.0, 1.0),
                    normalization: Normalization = None, seed: int = 0,
                    progress: Callable[[int], None] | None = None) -> RobustnessReport:
    """Clean and robust accuracy of ``model`` on ``data`` under the ``suite`` at strength ``eps``.

    Args:
        model: the classifier (evaluated in eval mode; left as found).
        data: a dataset of ``(input, label)`` or an iterable of batches.
        eps: the attack strength in pixel units; ``norm``: ``"linf"`` or ``"l2"``.
        suite: ``"standard"`` (the default: AutoAttack's), ``"apgd"``, ``"fast"``, ``"rand"`` or ``"pgd"``; see the
            module docs. Or a sequence of :class:`SuiteAttack` (reported as ``"custom"``).
        n: evaluate the first ``n`` samples only (a dataset), or stop after ``n`` (batches).
        batch_size / device: for a dataset; batches are moved to ``device`` when given.
        bounds / normalization: the input domain, as for the attacks.
        seed: seeds every attack's random start.
        progress: called with the number of samples done after each batch.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> data = torch.utils.data.TensorDataset(torch.rand(16, 1, 2, 2), torch.randint(0, 3, (16,)))
        >>> report = robust_accuracy(net, data, eps=0.0, suite="pgd")
        >>> report.robust_accuracy == report.clean_accuracy
        True
    """
    attacks = _suite(suite)
    if isinstance(data, Dataset):
        data = DataLoader(Subset(data, range(min(n, len(data)))) if n else data, batch_size=batch_size)
    seconds: dict[str, float] = {}
    counts = {"clean": 0, **{a.name: 0 for a in attacks}}
    total, zero_grads, is_randomised = 0, 0, None
    for x, y in data:
        if n is not None and total >= n:
            break
        if device is not None:
            x, y = x.to(device), y.to(device)
        _, masks = attack_batch(model, x, y, eps, norm=norm, suite=suite, bounds=bounds,
                                normalization=normalization, seed=seed, seconds=seconds)
        if is_randomised is None:  # (after the suite, which refuses inputs it cannot attack before any forward)
            is_randomised = randomised(model, x)
        zero_grads += zero_gradient_count(model, x, y, normalization)  # one more pass: the masking checks
        for name, mask in masks.items():
            counts[name] += int(mask.sum())
        total += y.shape[0]
        if progress is not None:
            progress(total)
    if total == 0:
        raise ValueError("no samples to evaluate")
    last = attacks[-1].name
    report = RobustnessReport(suite=suite if isinstance(suite, str) else "custom", eps=float(eps), norm=norm,
                              n=total, clean_accuracy=counts["clean"] / total, robust_accuracy=counts[last] / total,
                              after={a.name: counts[a.name] / total for a in attacks}, seconds=seconds,
                              zero_gradient_share=zero_grads / total)
    report.masking = masking_warnings(report.zero_gradient_share, report.broken_by,
                                      {a.name: a.kind for a in attacks}, bool(is_randomised), report.suite)
    return report
