"""A reference adversarial training loop and adversarial evaluation, shared by the estimators and the demo."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ._outputs import logits_of
from .attacks import Attack
from .attacks.objectives import cross_entropy
from .benchmark import step_decay
from .evaluation import evaluate_adversarial_loss
from .monitor import PhaseMonitor
from .step import AdversarialStep

__all__ = ["PassCounter", "adversarial_loss", "train_adversarially"]


class PassCounter:
    """Per-sample forward and backward passes; forwards counted by a hook on the model."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    def hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        """A forward hook: ``model.register_forward_hook(counter.hook)``."""
        if args and isinstance(args[0], torch.Tensor):
            self.forward += int(args[0].shape[0])


def adversarial_loss(model: nn.Module, loader: Iterable, attack: Attack | None, eps: float,
                     device: torch.device | str = "cpu") -> tuple[float, float]:
    """Mean per-sample cross-entropy and accuracy of ``model`` under ``attack`` at ``eps`` (eval mode).

    A shorthand for :func:`advhooks.evaluation.evaluate_adversarial_loss` without the standard error.
    """
    estimate, accuracy = evaluate_adversarial_loss(model, loader, attack, eps=eps, device=device)
    return estimate.mean, accuracy


def train_adversarially(model: nn.Module, train_loader: DataLoader, attack: Attack, eps: float, epochs: int,
                        lr: float, *, decay: bool = True, test_loader: DataLoader | None = None,
                        eval_attack: Attack | None = None,
                        device: torch.device | str = "cpu", counter: PassCounter | None = None,
                        momentum: float = 0.9, weight_decay: float = 0.0, monitor: PhaseMonitor | None = None,
                        progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The reference adversarial training loop used by the estimators and the demo.

    SGD with momentum, optionally the paper's step decay; per epoch the running mean of the adversarial
    training loss, and with ``test_loader`` the adversarial test loss and accuracy under ``eval_attack``.
    With ``monitor`` every batch is fed to it and each epoch's :class:`PhaseReport` is in ``"report"``.
    ``eps = 0`` trains cleanly.

    Args:
        model, train_loader, attack, eps, epochs, lr: what to train, on what, how hard, how long.
        decay: divide the learning rate by 10 at 1/2 and 3/4 of ``epochs`` (the clean benchmark's schedule).
        test_loader, eval_attack: per-epoch adversarial evaluation (optional).
        device, momentum, weight_decay: as usual.
        counter: counts per-sample forward/backward passes (see :class:`PassCounter`).
        monitor: a PhaseMonitor to feed.
        progress: called with a line of text after each epoch.
    """
    counter = counter or PassCounter()
    device = torch.device(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: step_decay(e, epochs) if decay else 1.0)
    step = AdversarialStep(model, attack)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=device)
        n = 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            out = step(x, y) if eps > 0 else None
            if monitor is not None and out is not None:
                monitor.update(out)
            if out is None:
                loss = cross_entropy(logits_of(model(x)), y).mean()
                batch_loss = loss.detach()
            else:
                loss, batch_loss = out.loss, out.adv_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            counter.backward += y.shape[0] * ((attack.steps if eps > 0 else 0) + 1)
            total += batch_loss.double() * y.shape[0]
            n += y.shape[0]
        sched.step()
        record = {"epoch": epoch, "train_loss": float(total) / max(n, 1)}
        if test_loader is not None:
            record["test_loss"], record["test_accuracy"] = adversarial_loss(model, test_loader, eval_attack, eps,
                                                                          device)
            if eval_attack is not None and eps > 0:
                counter.backward += len(test_loader.dataset) * eval_attack.steps
        if monitor is not None and eps > 0:
            record["report"] = monitor.epoch_end()
        history.append(record)
        if progress:
            progress(f"eps {eps:.4g} epoch {epoch}/{epochs} loss {record['train_loss']:.4f}")
    return history
