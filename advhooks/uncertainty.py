"""Uncertainty bands: a measured mean with its standard error, and intervals carried through to ρ and ε*.

Every verdict and estimate advhooks prints carries a band. Three sources of error enter it:

- R*(0) is a mean over a finite test set: its standard error (or a bootstrap of the stored per-sample
  test losses) bounds how well the benchmark itself is known;
- R̂(θ̂(ε), ε) evaluated on a random subset of the training set has a sampling error (with the
  finite-population correction: a full pass has none);
- runs with other seeds spread; where there are several, their spread enters too.

Ratios use the delta method on the log scale (:func:`ratio_interval`); crossings (ε where the loss curve
meets R*(0)) are carried through by Monte Carlo (:func:`propagate`): every input drawn from its error
distribution, the estimator applied to each draw, the interval read off the quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["DEFAULT_LEVEL", "MeanEstimate", "bootstrap_means", "normal_draws", "propagate", "ratio_interval",
           "z_value"]

# The default coverage of a band: 80 % (a band that claims 95 % on 3 seeds is mostly its own width).
DEFAULT_LEVEL = 0.8


def z_value(level: float) -> float:
    """The two-sided normal quantile for ``level`` (1.2816 for 0.8, 1.96 for 0.95)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(stats.norm.ppf((1.0 + level) / 2.0))


@dataclass(frozen=True)
class MeanEstimate:
    """A mean of per-sample values with its standard error.

    Attributes:
        mean: the mean.
        stderr: its standard error (0 for an exact value, e.g. a full pass over a fixed set).
        n: how many samples entered the mean.
        population: how many samples the mean stands for (the set the subset was drawn from); equal to ``n``
            for a full pass.
    """

    mean: float
    stderr: float
    n: int
    population: int

    @classmethod
    def of(cls, values: np.ndarray | Sequence[float], population: int | None = None) -> MeanEstimate:
        """From per-sample values drawn without replacement from ``population`` samples (default: all of them).

        Example:
            >>> m = MeanEstimate.of([1.0, 2.0, 3.0, 4.0], population=4)
            >>> m.mean, m.stderr
            (2.5, 0.0)
        """
        v = np.asarray(values, dtype=np.float64)
        n = int(v.size)
        if n < 2:  # (the same edge cases as from_sums)
            return cls.from_sums(float(v.sum()), float((v * v).sum()), n, population)
        estimate = cls.from_sums(float(v.sum()), float((v * v).sum()), n, population)
        fpc = math.sqrt(max(0.0, (estimate.population - n) / max(estimate.population - 1, 1)))
        # The two-pass standard deviation: what the sums give, without their cancellation for bunched values.
        return cls(float(v.mean()), float(v.std(ddof=1) / math.sqrt(n) * fpc), n, estimate.population)

    @classmethod
    def from_sums(cls, total: float, squares: float, n: int, population: int | None = None) -> MeanEstimate:
        """From the sum and the sum of squares of ``n`` per-sample values (what processes add up), as :meth:`of`.

        Example:
            >>> m = MeanEstimate.from_sums(10.0, 30.0, 4, population=8)
            >>> m.mean, round(m.stderr, 3)
            (2.5, 0.488)
        """
        if n < 1:
            raise ValueError("a mean needs at least one value")
        population = n if population is None else int(population)
        if population < n:
            raise ValueError(f"population ({population}) must be >= the number of values ({n})")
        mean = total / n
        if n < 2:
            return cls(mean, math.nan if population > n else 0.0, n, population)
        variance = max(0.0, (squares - n * mean * mean) / (n - 1))
        fpc = math.sqrt(max(0.0, (population - n) / max(population - 1, 1)))  # finite-population correction
        return cls(mean, math.sqrt(variance / n) * fpc, n, population)

    def interval(self, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
        """A normal interval of the mean at ``level``."""
        half = z_value(level) * (self.stderr if math.isfinite(self.stderr) else 0.0)
        return self.mean - half, self.mean + half


def ratio_interval(numerator: MeanEstimate, denominator: MeanEstimate,
                   level: float = DEFAULT_LEVEL) -> tuple[float, float, float]:
    """ρ = numerator / denominator and its interval (delta method on log ρ; both means > 0).

    Example:
        >>> rho, lo, hi = ratio_interval(MeanEstimate(0.2, 0.0, 100, 100), MeanEstimate(0.1, 0.01, 50, 50))
        >>> round(rho, 3), lo < 2.0 < hi
        (2.0, True)
    """
    if numerator.mean <= 0 or denominator.mean <= 0:
        raise ValueError("ratio_interval needs positive means")
    rho = numerator.mean / denominator.mean
    rel = [m.stderr / m.mean for m in (numerator, denominator) if math.isfinite(m.stderr)]
    half = z_value(level) * math.sqrt(sum(r * r for r in rel))
    return rho, rho * math.exp(-half), rho * math.exp(half)


def normal_draws(means: Sequence[float], stderrs: Sequence[float], draws: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``(draws, k)`` samples, column j normal around ``means[j]`` with ``stderrs[j]`` (NaN counts as 0)."""
    means, stderrs = np.asarray(means, dtype=np.float64), np.asarray(stderrs, dtype=np.float64)
    if means.shape != stderrs.shape or means.ndim != 1:
        raise ValueError("means and stderrs must be 1-d and of the same length")
    return means + rng.standard_normal((draws, means.size)) * np.nan_to_num(stderrs, nan=0.0)


def bootstrap_means(values: Sequence[float] | np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``draws`` bootstrap resamples of the mean of ``values`` (resampled with replacement)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("bootstrap_means needs at least one value")
    return v[rng.integers(0, v.size, size=(draws, v.size))].mean(axis=1)


def propagate(estimator: Callable[[np.ndarray], float | None], samples: np.ndarray, *,
              level: float = DEFAULT_LEVEL, min_defined: float = 0.5) -> tuple[float, float] | None:
    """An interval of ``estimator(inputs)`` over draws of its inputs (Monte Carlo).

    Args:
        estimator: maps one draw of the inputs (a 1-d array) to the estimate, or ``None`` where it is
            undefined (no crossing in this draw).
        samples: ``(draws, k)``: each row one draw of the k inputs (see :func:`normal_draws`,
            :func:`bootstrap_means`).
        level: the interval's coverage.
        min_defined: the fraction of draws that must give a finite value; below it the interval is ``None``.

    Returns:
        ``(low, high)`` quantiles of the draws' estimates, or ``None`` when too few draws were defined.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> lo, hi = propagate(lambda row: row[0] * 2, normal_draws([1.0], [0.1], 4000, rng))
        >>> round(lo, 1), round(hi, 1)
        (1.7, 2.3)
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2:
        raise ValueError("samples must be a (draws, k) array")
    values = [estimator(row) for row in samples]
    defined = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if defined.size == 0 or defined.size < min_defined * samples.shape[0]:
        return None
    lo, hi = np.quantile(defined, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
