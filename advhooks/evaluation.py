"""The paper's R̂ in one function: the mean adversarial loss of *fixed* weights over a data set.

R̂(θ, ε) = mean over the training set of ℓ(f_θ(x + A_ε(x)), y) (the paper's eq. 2) is defined for one θ.
Every piece of advhooks that needs it (the monitor's verdict, the grid and fine-tune estimators, the
demo) evaluates it here, at the early-stopped weights θ̂(ε), on the training set or on a fixed random
subset whose sampling error enters the band. The per-epoch running mean of the training loss (what
Rice et al.'s logs show) mixes the weights of a whole epoch; it is reported beside R̂, never instead.
The same function gives the adversarial *test* loss that selects θ̂(ε).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ._distributed import Reducer, rank, sum_across_processes, world_size
from ._outputs import logits_of
from .attacks import Attack, SampleNoise, eval_mode
from .attacks.criteria import Criterion, per_sample
from .uncertainty import MeanEstimate

__all__ = ["FixedSubset", "evaluate_adversarial_loss", "loss_sums"]


@dataclass(frozen=True)
class FixedSubset:
    """``size`` samples of a data set drawn once with ``seed``: the same samples at every evaluation.

    Example:
        >>> data = torch.utils.data.TensorDataset(torch.rand(10, 2), torch.zeros(10, dtype=torch.long))
        >>> len(FixedSubset(4, seed=1).of(data)), FixedSubset(4, seed=1).indices(10) == FixedSubset(4, 1).indices(10)
        (4, True)
    """

    size: int
    seed: int = 0

    def indices(self, population: int) -> list[int]:
        """The chosen indices (all of them, in order, when ``size >= population``)."""
        if self.size >= population:
            return list(range(population))
        gen = torch.Generator().manual_seed(self.seed)
        return sorted(torch.randperm(population, generator=gen)[: self.size].tolist())

    def of(self, dataset: Dataset) -> Dataset:
        """The subset of ``dataset``."""
        return Subset(dataset, self.indices(len(dataset)))


def evaluate_adversarial_loss(
    model: nn.Module,
    data: Dataset | Iterable,
    attack: Attack | None,
    *,
    eps: float | None = None,
    subset: FixedSubset | int | None = None,
    criterion: Criterion | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    split: bool = False,
    reducer: Reducer | None = None,
    seed: int | None = 0,
) -> tuple[MeanEstimate, float]:
    """R̂(θ, ε) for the model's current weights: the mean per-sample adversarial loss, with its s.e.

    The model is evaluated in eval mode (and left in the mode it was in); the attack leaves it untouched.

    Args:
        model: the model at the weights to evaluate (θ̂(ε) for the paper's R̂).
        data: a ``Dataset`` (then ``subset`` may pick a fixed random subset) or any iterable of
            ``(inputs, targets)`` batches (evaluated whole).
        attack: the attack; ``None`` or ε = 0 gives the clean loss.
        eps: the strength (default: the attack's configured ε).
        subset: a :class:`FixedSubset` or a size (seed 0); its sampling error (with the finite-population
            correction) is the returned standard error. ``None``: the whole set, standard error 0.
        criterion: per-sample loss, default cross-entropy.
        batch_size: for datasets.
        device: where to evaluate (default: where the data already is).
        split: share the work between the processes (every process must call it, with the same ``data``):
            the chosen samples are the same whatever the number of processes (drawn by index), process
            ``r`` of ``N`` evaluates every ``N``-th of them from the ``r``-th, and the sums are added across
            processes, so every process returns the same estimate, equal to one process's to summation order
            (random starts included: see ``seed``). Needs a ``Dataset``.
        reducer: sums a tensor across processes for ``split`` (e.g. ``lambda t: accelerator.reduce(t, "sum")``);
            default ``torch.distributed.all_reduce`` when a process group is initialised.
        seed: the attack's random starts are drawn per sample from ``(seed, sample index, ε)``
            (:class:`~advhooks.attacks.SampleNoise`; the index in ``data``, or the position in the iteration for
            batches), so the result is a function of the weights: the same on any number of processes and
            whatever training did to the global generator. ``None``: from the global generator.

    Returns:
        ``(MeanEstimate, accuracy)``: the mean loss with its standard error and sample counts, and the
        adversarial accuracy.
    """
    population, indices = None, None
    if isinstance(data, Dataset):
        population = len(data)
        chosen = subset if isinstance(subset, FixedSubset) or subset is None else FixedSubset(int(subset))
        indices = chosen.indices(population) if chosen is not None else list(range(population))
        if split:
            indices = indices[rank() :: world_size()]
        data = DataLoader(Subset(data, indices), batch_size=batch_size)
    elif subset is not None or split:
        raise ValueError("subset= and split= need a Dataset (a loader's batches cannot be chosen by index)")
    totals = loss_sums(model, data, attack, eps, per_sample(criterion), device, indices, seed)
    if split:
        totals = sum_across_processes(totals, reducer)
    total, squares, n, correct = totals.tolist()
    if n == 0:
        raise ValueError("the data is empty")
    estimate = MeanEstimate.from_sums(total, squares, int(n), population=population)
    return estimate, correct / n


def loss_sums(model: nn.Module, batches: Iterable, attack: Attack | None, eps: float | None, crit: Criterion,
              device: torch.device | str | None = None, indices: list[int] | None = None,
              seed: int | None = 0) -> torch.Tensor:
    """``[Σ loss, Σ loss², count, correct]`` over the batches (float64, on the evaluation's device), in eval mode:
    the one loop of every adversarial-loss evaluation (:func:`evaluate_adversarial_loss`, the monitor's ε* probe).
    The samples' ``indices`` in their data set (``None``: their positions in the iteration) key their random
    starts (``seed``; ``None``: the global generator)."""
    totals, seen = None, 0
    with eval_mode(model):
        for x, y in batches:
            if device is not None:
                x, y = x.to(device), y.to(device)
            n = int(y.shape[0])
            batch_indices = indices[seen : seen + n] if indices is not None else range(seen, seen + n)
            seen += n
            strength = attack.eps_at(0) if (attack is not None and eps is None) else eps
            if attack is not None and strength and strength > 0:
                starts = None if seed is None else SampleNoise(list(batch_indices), seed=seed, eps=strength)
                x = attack(model, x, y, eps=strength, generator=starts)
            with torch.no_grad():
                logits = logits_of(model(x))
                losses = crit(logits, y).double()
                batch = torch.stack([losses.sum(), (losses * losses).sum(), torch.tensor(float(losses.numel()),
                                     dtype=torch.float64, device=losses.device),
                                     (logits.argmax(1) == y).sum().double()])
            totals = batch if totals is None else totals + batch
    if totals is None:  # (a process whose share is empty still takes part in the sum)
        dev = torch.device(device) if device is not None else next(
            (p.device for p in model.parameters()), torch.device("cpu"))
        totals = torch.zeros(4, dtype=torch.float64, device=dev)
    return totals
