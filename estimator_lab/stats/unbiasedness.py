"""Tests of unbiasedness from the moments of paired differences of draws."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from estimator_lab.montecarlo.accumulators import Moments


@dataclass(frozen=True)
class UnbiasednessResult:
    """Per-coordinate z-tests of `E[x] = 0` with a family-wise correction (scipy.stats style).

    Attributes:
        statistic: the largest `|z|` over coordinates.
        pvalue: the family-wise p-value, the smallest corrected per-coordinate p-value; a value
            below `alpha` rejects "all coordinates have zero mean" at level `alpha`.
        estimate: a `d` array of mean differences.
        standard_error: a `d` array of their standard errors.
        pvalues: a `d` array of raw two-sided p-values.
        pvalues_adjusted: a `d` array of corrected p-values.
        alpha: the family-wise level used for `rejected`.
        method: the statsmodels `multipletests` method.
        count: the number of draws.
    """

    statistic: float
    pvalue: float
    estimate: np.ndarray
    standard_error: np.ndarray
    pvalues: np.ndarray
    pvalues_adjusted: np.ndarray
    alpha: float
    method: str
    count: int

    @property
    def rejected(self) -> np.ndarray:
        """A `d` boolean array: coordinates whose mean differs from zero at level `alpha`."""
        return self.pvalues_adjusted < self.alpha

    def to_frame(self) -> pd.DataFrame:
        """One tidy row per coordinate: index, estimate, stderr, z, pvalue, pvalue_adjusted."""
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(self.standard_error > 0, self.estimate / self.standard_error,
                         np.where(self.estimate == 0, 0.0, np.inf))
        return pd.DataFrame(
            {
                "index": np.arange(self.estimate.size),
                "estimate": self.estimate,
                "stderr": self.standard_error,
                "z": z,
                "pvalue": self.pvalues,
                "pvalue_adjusted": self.pvalues_adjusted,
            }
        )


def adjust_pvalues(pvalues: np.ndarray, method: str = "holm") -> np.ndarray:
    """Holm (family-wise) or Benjamini-Hochberg (false discovery rate) adjusted p-values.

    The same values as `statsmodels.stats.multitest.multipletests(..., method)[1]` for
    `"holm"` and `"fdr_bh"`, without its per-call garbage collection (a quarter of a second
    per call in a process holding many tensors). Other methods go to statsmodels.
    """
    pvalues = np.asarray(pvalues, dtype=np.float64)
    m = pvalues.size
    order = np.argsort(pvalues, kind="stable")
    ranked = pvalues[order]
    if method == "holm":
        steps = np.maximum.accumulate(ranked * np.arange(m, 0, -1))
    elif method == "fdr_bh":
        steps = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    else:
        return multipletests(pvalues, method=method)[1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted


def zero_mean_test(
    moments: Moments,
    *,
    alpha: float = 0.05,
    method: str = "holm",
    rounding: np.ndarray | float = 0.0,
) -> UnbiasednessResult:
    """Tests that every coordinate of a sequence of i.i.d. draws has mean zero.

    Applied to the moments of paired differences `x_k = g_k - r_k` of an estimator `g` and an
    unbiased reference `r` drawn from the same noise (common random numbers), a rejection says
    that `E[g] != E[r]`. Each coordinate gets a two-sided z-test `z = mean / stderr` (normal
    approximation to the mean of `n` draws), then `multipletests` controls the family-wise
    error (Holm) or the false discovery rate (`"fdr_bh"`). Coordinates with zero variance and
    zero mean are exact agreements (p = 1); with zero variance and non-zero mean, p = 0.

    Floating-point rounding is not bias: `rounding` (per coordinate or scalar) is added in
    quadrature to the standard error, `se' = sqrt(se^2 + rounding^2)`, so an estimator whose
    draws are nearly constant is not flagged for differences at the level of machine precision.
    `rounding_scale` gives a sensible value.

    Args:
        moments: count, mean and M2 of `n` draws of a `d`-vector.
        alpha: the level for `rejected`.
        method: a statsmodels `multipletests` method.
        rounding: the size of floating-point error in the mean difference (default 0).

    Returns:
        an `UnbiasednessResult`.
    """
    if moments.count < 2:
        raise ValueError(f"need at least 2 draws, got {moments.count}")
    estimate = moments.mean.cpu().numpy()
    stderr = np.hypot(moments.standard_error.cpu().numpy(), rounding)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(stderr > 0, estimate / stderr, np.where(estimate == 0, 0.0, np.inf))
    pvalues = 2 * scipy_stats.norm.sf(np.abs(z))
    adjusted = adjust_pvalues(pvalues, method)
    return UnbiasednessResult(
        statistic=float(np.abs(z).max()),
        pvalue=float(adjusted.min()),
        estimate=estimate,
        standard_error=stderr,
        pvalues=pvalues,
        pvalues_adjusted=adjusted,
        alpha=alpha,
        method=method,
        count=moments.count,
    )


def rounding_scale(*values: np.ndarray, dtype=np.float64, ulps: float = 64.0) -> np.ndarray:
    """`ulps` units in the last place of the largest of `values`, per coordinate.

    Args:
        *values: arrays of the quantities being compared (e.g. the mean draw and the exact
            gradient), broadcastable to each other.
        dtype: the floating dtype the draws were computed in.
        ulps: how many units of rounding to allow (accumulated error of a sum of a few terms).
    """
    largest = np.max(np.abs(np.broadcast_arrays(*values)), axis=0)
    return ulps * np.finfo(dtype).eps * largest


def detectable_bias(
    variance: np.ndarray,
    num_draws: int,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    num_coordinates: int | None = None,
) -> np.ndarray:
    """The smallest per-coordinate bias the unbiasedness test detects with the given power.

    A two-sided z-test at the Bonferroni level `alpha / m` (`m` coordinates; Holm is at least
    as powerful) rejects a bias `delta` with probability `power` when
    `|delta| >= (z_{1 - alpha/(2m)} + z_{power}) sqrt(variance / N)`.

    Args:
        variance: per-coordinate variance of one draw (of the paired difference, when the test
            runs on differences against a reference).
        num_draws: `N`.
        alpha: family-wise level.
        power: the probability of detection.
        num_coordinates: `m` (default: the size of `variance`).

    Returns:
        an array like `variance` of detectable absolute biases.

    Example:
        >>> float(detectable_bias(np.array([1.0]), 10_000, alpha=0.05, power=0.8)[0])
        0.028015...
    """
    variance = np.asarray(variance, dtype=np.float64)
    m = variance.size if num_coordinates is None else num_coordinates
    z = scipy_stats.norm.ppf(1 - alpha / (2 * m)) + scipy_stats.norm.ppf(power)
    return z * np.sqrt(variance / num_draws)
