"""Robust accuracy a reviewer accepts: attacks run in order on the points still robust, and each sample
counts as robust only if every attack of the suite failed on it (its worst case).

An attack's success is checked at every point it evaluates (``watch`` of :func:`~advhooks.attacks.perturb`),
so a sample that is misclassified at any iterate counts as broken even when the attack's final point is
not: the protocol of AutoAttack (Croce & Hein 2020). An APGD attack ends early once every sample of the
batch is broken (one host read at each of its checkpoints, and one before each APGD-T target). Suites:

- ``"apgd"``: APGD-CE (100 steps), then APGD-T (targeted DLR, 100 steps against each of the 9 most likely
  other classes, or all of them with fewer classes). AutoAttack's standard suite minus FAB-T and Square
  (see the README for what those two add on the models measured here).
- ``"fast"``: APGD-CE (20 steps), then APGD-T against the 3 most likely other classes (20 steps each): a
  cheaper check for per-epoch use, named as such in reports.
- ``"pgd"``: PGD-20 with early stopping (a sample stops counting once misclassified), the customary
  training-time evaluation; weaker than the APGD suites.
"""

from __future__ import annotations

import time
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

__all__ = ["SUITES", "RobustnessReport", "SuiteAttack", "attack_batch", "robust_accuracy"]


@dataclass(frozen=True)
class SuiteAttack:
    """One attack of a suite: ``kind`` is ``"apgd-ce"``, ``"apgd-t"`` (targeted DLR) or ``"pgd"``."""

    name: str
    kind: str
    steps: int
    targets: int = 0  # APGD-T: how many of the most likely other classes are tried

    def attack(self, eps: float, norm: str, bounds: Bounds, normalization: Normalization) -> Attack:
        if self.kind == "pgd":
            return PGD(eps, norm=norm, steps=self.steps, bounds=bounds, normalization=normalization)
        return APGD(eps, norm=norm, steps=self.steps, criterion="ce", bounds=bounds, normalization=normalization)


SUITES: dict[str, tuple[SuiteAttack, ...]] = {
    "apgd": (SuiteAttack("apgd-ce", "apgd-ce", 100), SuiteAttack("apgd-t", "apgd-t", 100, targets=9)),
    "fast": (SuiteAttack("apgd-ce-20", "apgd-ce", 20), SuiteAttack("apgd-t-20", "apgd-t", 20, targets=3)),
    "pgd": (SuiteAttack("pgd-20", "pgd", 20),),
}


@dataclass
class RobustnessReport:
    """The suite's result: clean accuracy, robust accuracy after each attack (in order) and overall, times."""

    suite: str
    eps: float
    norm: str
    n: int
    clean_accuracy: float
    robust_accuracy: float
    after: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A few aligned lines for people."""
        rows = [("samples", str(self.n)), ("clean accuracy", f"{100 * self.clean_accuracy:.2f} %")]
        rows += [(f"robust after {name}", f"{100 * acc:.2f} %  ({self.seconds.get(name, 0.0):.1f} s)")
                 for name, acc in self.after.items()]
        rows.append((f"robust accuracy ({self.suite} suite)", f"{100 * self.robust_accuracy:.2f} %"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def attack_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: str = "linf",
                 suite: str | Iterable[SuiteAttack] = "apgd", bounds: Bounds = (0.0, 1.0),
                 normalization: Normalization = None, seed: int = 0,
                 seconds: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One batch through the suite: the adversarial inputs (the clean input where nothing broke the sample)
    and, per attack, the mask of samples still robust after it (cumulative; the first entry ``"clean"``)."""
    attacks = SUITES[suite] if isinstance(suite, str) else tuple(suite)
    with torch.no_grad(), eval_mode(model):
        clean_logits = logits_of(model(x))
    robust = clean_logits.argmax(1) == y
    adv, masks = x.clone(), {"clean": robust.clone()}
    for spec in attacks:
        started = time.perf_counter()
        idx = robust.nonzero().squeeze(1)  # one host read per attack and batch, outside every loop
        if idx.numel():
            broken, found = _run(model, x[idx], y[idx], clean_logits[idx], spec, eps, norm, bounds, normalization,
                                 seed)
            robust[idx] = ~broken
            adv[idx] = torch.where(broken.reshape((-1,) + (1,) * (x.ndim - 1)), found, x[idx])
        masks[spec.name] = robust.clone()
        if seconds is not None:
            seconds[spec.name] = seconds.get(spec.name, 0.0) + time.perf_counter() - started
    return adv, masks


def _run(model, x, y, clean_logits, spec, eps, norm, bounds, normalization, seed):
    """Which samples ``spec`` breaks at any evaluated point, and the first breaking input of each."""
    attack = spec.attack(eps, norm, bounds, normalization)
    broken = torch.zeros_like(y, dtype=torch.bool)
    found = x.clone()
    view = (-1,) + (1,) * (x.ndim - 1)

    def watch(inputs: torch.Tensor, logits: torch.Tensor) -> None:
        new = (logits.argmax(1) != y) & ~broken
        found.copy_(torch.where(new.reshape(view), inputs, found))
        broken.logical_or_(new)

    def all_broken() -> bool:  # one host read, at APGD's checkpoints and between targets
        return bool(broken.all())

    def run(**kwargs: Any) -> None:
        generator = torch.Generator(device=x.device).manual_seed(seed)
        out = attack(model, x, y, generator=generator, watch=watch, stop=all_broken if spec.kind != "pgd" else None,
                     **kwargs)
        with torch.no_grad(), eval_mode(model):
            watch(out, logits_of(model(out)))  # the final point, which the loop may not have evaluated

    if spec.kind != "apgd-t":
        run()
        return broken, found
    order = clean_logits.argsort(dim=1, descending=True)
    for rank in range(1, min(spec.targets, clean_logits.shape[1] - 1) + 1):
        if all_broken():
            break
        target = order[:, rank]
        run(criterion=lambda logits, labels, t=target: targeted_dlr_loss(logits, labels, t))
    return broken, found


def robust_accuracy(model: nn.Module, data: Dataset | Iterable, eps: float, *, norm: str = "linf",
                    suite: str = "apgd", n: int | None = None, batch_size: int = 256,
                    device: torch.device | str | None = None, bounds: Bounds = (0.0, 1.0),
                    normalization: Normalization = None, seed: int = 0,
                    progress: Callable[[int], None] | None = None) -> RobustnessReport:
    """Clean and robust accuracy of ``model`` on ``data`` under the ``suite`` at strength ``eps``.

    Args:
        model: the classifier (evaluated in eval mode; left as found).
        data: a dataset of ``(input, label)`` or an iterable of batches.
        eps: the attack strength in pixel units; ``norm``: ``"linf"`` or ``"l2"``.
        suite: ``"apgd"`` (the default, see the module docs), ``"fast"`` or ``"pgd"``.
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
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {', '.join(map(repr, SUITES))}, got {suite!r}")
    if isinstance(data, Dataset):
        data = DataLoader(Subset(data, range(min(n, len(data)))) if n else data, batch_size=batch_size)
    seconds: dict[str, float] = {}
    counts = {"clean": 0, **{a.name: 0 for a in SUITES[suite]}}
    total = 0
    for x, y in data:
        if n is not None and total >= n:
            break
        if device is not None:
            x, y = x.to(device), y.to(device)
        _, masks = attack_batch(model, x, y, eps, norm=norm, suite=suite, bounds=bounds,
                                normalization=normalization, seed=seed, seconds=seconds)
        for name, mask in masks.items():
            counts[name] += int(mask.sum())
        total += y.shape[0]
        if progress is not None:
            progress(total)
    if total == 0:
        raise ValueError("no samples to evaluate")
    last = SUITES[suite][-1].name
    return RobustnessReport(suite=suite, eps=float(eps), norm=norm, n=total, clean_accuracy=counts["clean"] / total,
                            robust_accuracy=counts[last] / total,
                            after={a.name: counts[a.name] / total for a in SUITES[suite]}, seconds=seconds)
