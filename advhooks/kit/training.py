"""The paper's training recipes: clean training that records R*(0), and the reference adversarial loop
(shared by the estimators and the demo), with adversarial evaluation."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._outputs import logits_of
from ..attacks import Attack
from ..attacks.criteria import Criterion, cross_entropy, per_sample
from ..benchmark import SCHEDULES, CleanBenchmark, Recipe, dataset_fingerprint, evaluate_clean
from ..best_epoch import BestEpoch
from ..evaluation import evaluate_adversarial_loss
from ..monitor import PhaseMonitor
from ..step import AdversarialStep

log = logging.getLogger(__name__)

__all__ = ["PassCounter", "adversarial_loss", "record_clean_benchmark", "train_adversarially"]


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


def train_adversarially(model: nn.Module, train_loader: DataLoader, attack: Attack, eps: float, recipe: Recipe, *,
                        test_loader: DataLoader | None = None, eval_attack: Attack | None = None,
                        device: torch.device | str = "cpu", counter: PassCounter | None = None,
                        monitor: PhaseMonitor | None = None, progress: Callable[[str], None] | None = None,
                        on_epoch: Callable[[dict[str, Any]], bool | None] | None = None) -> list[dict[str, Any]]:
    """The reference adversarial training loop used by the estimators and the demo.

    SGD with the recipe's epochs, learning rate, momentum and weight decay, and its schedule (``"step_decay"``:
    the learning rate / 10 at 1/2 and 3/4 of the epochs; ``"constant"``: none); per epoch the running mean of the
    adversarial training loss, and with ``test_loader`` the adversarial test loss and accuracy under
    ``eval_attack``. With ``monitor`` every batch is fed to it and each epoch's :class:`PhaseReport` is in
    ``"report"``. ``eps = 0`` trains cleanly. The loader's batch size is the loader's (``recipe.batch_size`` is not
    read here).

    Args:
        model, train_loader, attack, eps, recipe: what to train, on what, how hard, how.
        test_loader, eval_attack: per-epoch adversarial evaluation (optional).
        device: where to train.
        counter: counts per-sample forward/backward passes (see :class:`PassCounter`).
        monitor: a PhaseMonitor to feed.
        progress: called with a line of text after each epoch.
        on_epoch: called with each epoch's record; training stops early when it returns True.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from advhooks.attacks import FGM
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> data = DataLoader(TensorDataset(torch.rand(8, 4), torch.randint(0, 2, (8,))), batch_size=4)
        >>> len(train_adversarially(net, data, FGM(0.1), 0.1, Recipe(epochs=2, schedule="constant")))
        2
    """
    epochs = recipe.epochs
    _say_how_the_schedule_is_trained(recipe)
    counter = counter or PassCounter()
    device = torch.device(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, recipe.lr_factor)
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
        if on_epoch is not None and on_epoch(record):
            break
    return history


_SCHEDULES_SAID: set[str] = set()  # each schedule's warning once per process, not once per run of a grid


def _say_how_the_schedule_is_trained(recipe: Recipe) -> None:
    """A warning, once per schedule name, when the recipe names a schedule the kit does not train as named
    (:meth:`Recipe.lr_factor`)."""
    if recipe.schedule not in SCHEDULES and recipe.schedule not in _SCHEDULES_SAID:
        _SCHEDULES_SAID.add(recipe.schedule)
        log.warning("the recipe's schedule %r is trained as step_decay (the kit trains %s)", recipe.schedule,
                    " or ".join(SCHEDULES))


class _OneEpoch:
    """One pass over a loader whose batch order is fixed at construction; sized, for progress bars."""

    def __init__(self, loader: DataLoader) -> None:
        self._batches, self._length = iter(loader), len(loader)

    def __len__(self) -> int:
        return self._length

    def __iter__(self):
        return self._batches


DEFAULT_RECIPE = Recipe()  # the embedded default's recipe (frozen: safe as a default argument)


def record_clean_benchmark(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    *,
    recipe: Recipe = DEFAULT_RECIPE,
    criterion: Criterion | None = None,
    train_eval_set: Dataset | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    on_epoch: Callable[[int, float, float], None] | None = None,
    progress: Callable[[Iterable, int], Iterable] | None = None,
    training: dict[str, Any] | None = None,
) -> CleanBenchmark:
    """Train ``model`` cleanly from its current weights and return the benchmark of its best epoch.

    As in the paper: SGD with momentum, the learning rate divided by 10 at 1/2 and 3/4 of the epochs,
    and early stopping at the epoch with the smallest clean test loss, whose weights are kept.

    Args:
        model: a freshly initialised model (trained in place; ends with the best epoch's weights).
        train_set / test_set: the data, yielding ``(image, label)``.
        recipe: epochs, batch size and SGD's settings (:class:`~advhooks.benchmark.Recipe`; its defaults are
            the embedded default's), stored in the benchmark.
        criterion: per-sample training loss; default cross-entropy.
        train_eval_set: the training set without augmentation, for R̂(θ̂(0), 0); default ``train_set``.
        device: where to train.
        seed: seeds the shuffling.
        on_epoch: called with ``(epoch, train_loss, test_loss)`` after each epoch.
        progress: wraps each epoch's batch iterator (a progress bar), called as ``progress(loader, epoch)``.
        training: extra fields for the record's ``training`` entry.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be an advhooks.benchmark.Recipe, got {type(recipe).__name__}")
    epochs, batch_size = recipe.epochs, recipe.batch_size
    device = torch.device(device)
    crit = per_sample(criterion)
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=gen)
    test_loader = DataLoader(test_set, batch_size=max(batch_size, 256))
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, recipe.lr_factor)
    _say_how_the_schedule_is_trained(recipe)
    best, best_state = BestEpoch(), None
    for epoch in range(1, epochs + 1):
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        # The epoch's order is drawn here, once: a progress wrapper that calls iter() twice (tqdm.auto does)
        # would otherwise draw from the loader's generator again and train on another order.
        batches = _OneEpoch(train_loader)
        batches = progress(batches, epoch) if progress else batches
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            loss = crit(logits_of(model(x)), y).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().double() * y.shape[0]
            count += y.shape[0]
        sched.step()
        if not torch.isfinite(total):  # one read per epoch; the weights are poisoned from here on
            raise ValueError(f"the clean training loss became {float(total)} in epoch {epoch}: NaN or inf in the "
                             "training data, or the learning rate is too large for this model")
        test_losses, _ = evaluate_clean(model, test_loader, criterion, device)
        test_loss = float(test_losses.mean())
        if on_epoch:
            on_epoch(epoch, float(total) / max(count, 1), test_loss)
        if best.update(epoch, test_loss):
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    eval_train = DataLoader(train_eval_set or train_set, batch_size=max(batch_size, 256))
    info = {**recipe.to_dict(), "seed": seed, **(training or {})}
    bench = CleanBenchmark.measure(model, test_loader, eval_train, criterion, device, best_epoch=best.epoch,
                                   training=info)
    bench.dataset = dataset_fingerprint(train_eval_set or train_set, test_set)
    return bench
