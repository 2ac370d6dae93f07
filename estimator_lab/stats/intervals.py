"""Means of i.i.d. group summaries: t intervals and bootstrap intervals (scipy.stats style)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats


@dataclass(frozen=True)
class GroupMeanResult:
    """The mean of `G` i.i.d. group values and its uncertainty.

    Attributes:
        estimate: the mean of the group values.
        standard_error: their standard deviation over `sqrt(G)`.
        groups: `G`.
        statistic: the t statistic of `estimate` against `null` (one-sided alternatives are
            read from `pvalue`).
        pvalue: one-sided p-value of `mean > null` (for squared bias: of bias > 0).
        values: the group values, kept for the bootstrap.
    """

    estimate: float
    standard_error: float
    groups: int
    statistic: float
    pvalue: float
    values: np.ndarray

    def confidence_interval(self, confidence_level: float = 0.95) -> tuple[float, float]:
        """Student-t interval on `G - 1` degrees of freedom."""
        half = scipy_stats.t.ppf(0.5 + confidence_level / 2, self.groups - 1)
        return (self.estimate - half * self.standard_error,
                self.estimate + half * self.standard_error)

    def bootstrap_interval(
        self, confidence_level: float = 0.95, *, resamples: int = 2000, seed: int = 0
    ) -> tuple[float, float]:
        """BCa bootstrap interval of the mean over groups (`scipy.stats.bootstrap`)."""
        result = scipy_stats.bootstrap(
            (self.values,), np.mean, confidence_level=confidence_level, n_resamples=resamples,
            method="BCa", random_state=np.random.default_rng(seed),
        )
        return float(result.confidence_interval.low), float(result.confidence_interval.high)

    def to_frame(self, confidence_level: float = 0.95) -> pd.DataFrame:
        """One tidy row: estimate, stderr, low, high, groups, pvalue."""
        low, high = self.confidence_interval(confidence_level)
        return pd.DataFrame([{"estimate": self.estimate, "stderr": self.standard_error,
                              "low": low, "high": high, "groups": self.groups,
                              "pvalue": self.pvalue}])


def group_mean(values, *, null: float = 0.0, rounding: float = 0.0) -> GroupMeanResult:
    """Mean, standard error and one-sided t-test (`mean > null`) of i.i.d. group values.

    Args:
        values: the `G` group values.
        null: the value under the null hypothesis.
        rounding: the size of floating-point error in the values, added in quadrature to the
            standard error so that values equal to `null` up to rounding are not significant.

    Raises:
        ValueError: with fewer than two groups.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        raise ValueError(f"need at least 2 complete groups, got {values.size}")
    estimate = float(values.mean())
    stderr = float(np.hypot(values.std(ddof=1) / np.sqrt(values.size), rounding))
    if stderr > 0:
        statistic = (estimate - null) / stderr
    else:
        statistic = np.inf if estimate > null else (0.0 if estimate == null else -np.inf)
    pvalue = float(scipy_stats.t.sf(statistic, values.size - 1))
    return GroupMeanResult(estimate, stderr, values.size, float(statistic), pvalue, values)


@dataclass(frozen=True)
class RatioResult:
    """A ratio of two means of paired group values, with a delta-method interval on the log.

    Attributes:
        estimate: `mean(a) / mean(b)`.
        log_standard_error: standard error of its log, from the paired group values
            (`var(log R) ~ var(a)/(G a^2) + var(b)/(G b^2) - 2 cov(a, b)/(G a b)`).
        groups: `G`.
        pairs: the `G x 2` paired values, kept for the bootstrap.
    """

    estimate: float
    log_standard_error: float
    groups: int
    pairs: np.ndarray

    def confidence_interval(self, confidence_level: float = 0.95) -> tuple[float, float]:
        """`R exp(±z se_log)`."""
        z = scipy_stats.norm.ppf(0.5 + confidence_level / 2)
        spread = float(np.exp(z * self.log_standard_error))
        return self.estimate / spread, self.estimate * spread

    def bootstrap_interval(
        self, confidence_level: float = 0.95, *, resamples: int = 2000, seed: int = 0
    ) -> tuple[float, float]:
        """Percentile bootstrap resampling groups as pairs (keeps the common random numbers)."""
        rng = np.random.default_rng(seed)
        index = rng.integers(0, self.groups, size=(resamples, self.groups))
        sums = self.pairs[index].sum(1)
        ratios = sums[:, 0] / sums[:, 1]
        tail = (1 - confidence_level) / 2
        return float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1 - tail))

    def to_frame(self, confidence_level: float = 0.95) -> pd.DataFrame:
        low, high = self.confidence_interval(confidence_level)
        return pd.DataFrame([{"ratio": self.estimate, "log_stderr": self.log_standard_error,
                              "low": low, "high": high, "groups": self.groups}])


def paired_ratio(a, b) -> RatioResult:
    """Ratio of the means of paired group values `a_g`, `b_g` (same draws indices: common
    random numbers make them positively correlated, which tightens the interval).

    Raises:
        ValueError: for unpaired lengths, fewer than two groups, or a non-positive mean.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"need paired values of at least 2 groups, got {a.shape} and {b.shape}")
    mean_a, mean_b = a.mean(), b.mean()
    if mean_a <= 0 or mean_b <= 0:
        raise ValueError("a ratio of variances needs positive means")
    covariance = np.cov(a, b, ddof=1)
    g = a.size
    log_var = (covariance[0, 0] / mean_a**2 + covariance[1, 1] / mean_b**2
               - 2 * covariance[0, 1] / (mean_a * mean_b)) / g
    return RatioResult(float(mean_a / mean_b), float(np.sqrt(max(log_var, 0.0))), g,
                       np.stack([a, b], 1))
