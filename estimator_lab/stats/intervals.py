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


def relative_bias_interval(squared_bias_low, squared_bias_high, reference_norm):
    """An interval for the relative bias `||E g - r|| / ||r||` from one for `||E g - r||^2`.

    The squared bias is non-negative, so an interval `[l, h]` of it maps through
    `sqrt(max(., 0)) / ||r||` to one of the relative bias whose coverage is at least that of
    `[l, h]`: a true value `b^2 >= 0` inside `[l, h]` is inside `[max(l, 0), max(h, 0)]`. A
    lower end of 0 means no bias is detectable at these draws. `r` is taken as exact (for a
    noisy reference its own error is left out). The interval inherits the approximation of
    `[l, h]`: the summary's t interval over batch-means groups covers about 95% in the
    regimes of `tests/stats/test_intervals.py`, but about 89% with one coordinate, 20 groups
    and a bias below the noise of one group's mean (measured, 1,000 replications).

    Args:
        squared_bias_low: lower end(s) `l` (a float or an array; NaN propagates).
        squared_bias_high: upper end(s) `h`.
        reference_norm: `||r||` (positive).

    Returns:
        `(low, high)`, floats or arrays like the inputs.

    Example:
        >>> relative_bias_interval(-0.5, 4.0, 2.0)
        (0.0, 1.0)
    """
    low, high = (np.sqrt(np.maximum(bound, 0.0)) / reference_norm
                 for bound in (squared_bias_low, squared_bias_high))
    return (float(low), float(high)) if np.ndim(low) == 0 else (low, high)


def snr_interval(mean_norm, draws, variance_low, variance_high, *,
                 ball_level: float = 0.975):
    """An interval for the signal-to-noise ratio `||E g|| / sqrt(tr Sigma)` of one draw.

    With `N` draws the mean draw `m` is close to `N(E g, Sigma / N)`, and then
    `||m - E g||^2 <= z^2 tr(Sigma) / N` with probability at least `ball_level`, where
    `z = Phi^{-1}((1 + ball_level) / 2)`, whatever the covariance: a Gaussian quadratic form
    `sum_i l_i Z_i^2` with `sum_i l_i = 1` exceeds an upper `chi^2_1` quantile above 1.5364
    (of level `<= 0.215`) with probability at most that level (Szekely and Bakirov 2003).
    The triangle inequality turns that ball into `||m|| - radius <= ||E g|| <= ||m|| +
    radius`; an interval `[T_l, T_h]` of `tr(Sigma)` bounds the radius by `z sqrt(T_h / N)`
    and the denominator, so the interval below holds with probability at least
    `ball_level + level(T) - 1` (Bonferroni): 95% with two 97.5% parts.

    `low = max(||m|| - z sqrt(T_h / N), 0) / sqrt(T_h)` and
    `high = (||m|| + z sqrt(T_h / N)) / sqrt(T_l)` (infinite for `T_l <= 0`). A lower end of
    0 means the signal is not distinguishable from Monte Carlo noise at these draws.

    Args:
        mean_norm: `||m||`, the norm of the mean of the draws.
        draws: `N`.
        variance_low: `T_l`, lower end of an interval of `tr(Sigma)`.
        variance_high: `T_h`, its upper end.
        ball_level: the coverage of the ball around `E g` (at least 0.785).

    Returns:
        `(low, high)` floats (NaN where an input is NaN, e.g. a run without groups).

    Raises:
        ValueError: `ball_level` outside `[0.785, 1)`.

    Example:
        >>> low, high = snr_interval(3.0, 100, 0.9, 1.1)
        >>> round(low, 3), round(high, 3)
        (2.636, 3.41)

    References:
        G. J. Szekely and N. K. Bakirov, "Extremal probabilities for Gaussian quadratic
        forms", Probability Theory and Related Fields 126 (2003) 184-202.
    """
    if not 0.785 <= ball_level < 1:
        raise ValueError(f"ball_level must be in [0.785, 1), got {ball_level}")
    z = scipy_stats.norm.ppf(0.5 + ball_level / 2)
    if np.isnan([mean_norm, draws, variance_low, variance_high]).any():
        return np.nan, np.nan
    if variance_high == 0:  # no noise: the ratio is infinite (or undefined for a zero mean)
        return (np.inf, np.inf) if mean_norm > 0 else (np.nan, np.nan)
    radius = z * np.sqrt(variance_high / draws)
    low = max(mean_norm - radius, 0.0) / np.sqrt(variance_high)
    high = (mean_norm + radius) / np.sqrt(variance_low) if variance_low > 0 else np.inf
    return float(low), float(high)
