"""The run-to-run spread of an ε* estimate: what one training run cannot show about another.

Two training runs of one setting (another seed: initialisation, data order, random starts) end at other weights,
so at another R̂(θ̂(ε), ε), and the clean run behind the benchmark at another R*(0). On small data this spread,
not the sampling error of R̂ on a fixed subset, is the largest error of ε*; and where R̂(ε) is flat near R*(0) it
moves the crossing far. Every band of :mod:`.crossing` therefore gives each point of the curve the error

    sampling error (R̂ on its subset)  ⊕  run-to-run spread,

the spread being the largest of what the runs show and a floor:

- several runs at one ε: their variance (the grid's and the records' runs are independent, so their mean has
  ``1/runs`` of it; the fine-tune's repeats share the clean weights θ̂(0) they start from, so the floor stays);
- one run per ε: the points' departure from a curve that rises with ε (:func:`monotone_departure`: a drop of
  R̂ from one ε to a larger one is training noise, not sampling error);
- the floor ``RUN_SPREAD[method] · R̂``, the relative spread between runs of one setting that a single monotone
  run hides, chosen on MNIST-1D and checked on the bundled digits (and the other way round, docs/paper.md).

R*(0) is drawn from its bootstrap (the test set's sampling) plus ``BENCHMARK_SPREAD · s.e. · z`` (another clean
run: its spread between seeds, in units of the test set's standard error s.e., measured on MNIST-1D and checked
on the digits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Relative standard deviation of R̂ at one ε between runs of one setting that the method's own points cannot
# show, per method: the grid's runs from scratch each stop at their own epoch (0.12); the fine-tunes of one clean
# model need none beyond their sampling error and R*(0)'s (0). Chosen on MNIST-1D as the floors whose seed
# coverage is nearest 80 %, checked on the digits (docs/paper.md, "What a band holds, and how it was checked").
RUN_SPREAD = {"grid": 0.12, "records": 0.12, "finetune": 0.0}
# Standard deviation of R*(0) between clean runs of one setting (same test set), in units of R*(0)'s own test-set
# standard error (both grow with the spread of the per-sample losses): 0.49 on MNIST-1D, 0.34 on the digits.
BENCHMARK_SPREAD = 0.49


def _pooled_blocks(values: Sequence[float]) -> list[list[float]]:
    """Pool adjacent violators (equal weights): the blocks ``[sum, count]`` of the non-decreasing fit."""
    blocks: list[list[float]] = []
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return blocks


def _fitted(blocks: list[list[float]]) -> list[float]:
    """Each value's fitted level: its block's mean."""
    return [total / count for total, count in blocks for _ in range(int(count))]


def isotonic(values: Sequence[float]) -> list[float]:
    """The non-decreasing least-squares fit of ``values`` (pool adjacent violators, equal weights).

    Example:
        >>> isotonic([1.0, 3.0, 2.0, 4.0])
        [1.0, 2.5, 2.5, 4.0]
    """
    return _fitted(_pooled_blocks(values))


def monotone_departure(values: Sequence[float]) -> float:
    """The relative run-to-run spread that a curve's departures from rising show: the root mean square of
    log R̂ about its non-decreasing fit, per degree of freedom the fit pooled (0 for a rising curve).

    A pair out of order by a factor ``r`` gives ``|ln r| / √2``: the standard deviation of one of two runs whose
    difference is ``ln r``.

    Example:
        >>> round(monotone_departure([0.069, 0.030, 0.171]), 3)
        0.589
    """
    logs = [math.log(max(v, 1e-12)) for v in values]
    blocks = _pooled_blocks(logs)
    pooled = len(logs) - len(blocks)
    if pooled <= 0:
        return 0.0
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(logs, _fitted(blocks), strict=True)) / pooled)


def point_errors(runs_at_eps: Sequence[Sequence[tuple[float, float]]], method: str) -> tuple[list[float], list[float]]:
    """Each ε's mean R̂ and its error for the band (the module's docstring): ``runs_at_eps[i]`` holds the
    ``(R̂, sampling s.e.)`` of every run at the i-th ε, in increasing ε."""
    means = [float(np.mean([v for v, _ in runs])) for runs in runs_at_eps]
    floor = RUN_SPREAD.get(method, RUN_SPREAD["grid"])
    single = all(len(runs) == 1 for runs in runs_at_eps)
    departure = monotone_departure(means) if single else 0.0
    shared_start = method == "finetune"
    errors = []
    for runs, mean in zip(runs_at_eps, means, strict=True):
        values = np.array([v for v, _ in runs])
        sampling = float(np.mean([se ** 2 for _, se in runs])) / values.size
        measured = (values.var(ddof=1) if values.size > 1 else (departure * mean) ** 2) / values.size
        floor_var = (floor * mean) ** 2 / (1 if shared_start else values.size)
        errors.append(math.sqrt(sampling + max(measured, floor_var)))
    return means, errors


def benchmark_draws(r_star: np.ndarray, stderr: float, rng: np.random.Generator) -> np.ndarray:
    """Draws of R*(0) (its test-set bootstrap, whose standard error is ``stderr``) with another clean run's spread
    on top."""
    spread = BENCHMARK_SPREAD * (stderr if math.isfinite(stderr) else 0.0)
    return r_star + spread * rng.standard_normal(r_star.shape)
