"""Group means, t intervals, bootstrap intervals and paired ratios."""

import numpy as np
import pytest
from scipy import stats

from estimator_lab.stats.intervals import (
    group_mean,
    paired_ratio,
    relative_bias_interval,
    snr_interval,
)


def test_group_mean_matches_scipy_t_test_and_interval():
    values = np.random.default_rng(0).normal(0.3, 1.0, size=40)
    result = group_mean(values)
    reference = stats.ttest_1samp(values, 0.0, alternative="greater")
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert result.pvalue == pytest.approx(reference.pvalue, rel=1e-10)
    low, high = result.confidence_interval(0.9)
    expected = stats.t.interval(0.9, 39, loc=values.mean(), scale=stats.sem(values))
    assert (low, high) == pytest.approx(expected, rel=1e-12)
    boot_low, boot_high = result.bootstrap_interval(0.9, seed=1)
    assert boot_low < values.mean() < boot_high
    assert abs((boot_high - boot_low) - (high - low)) < 0.25 * (high - low)


def test_rounding_floor_keeps_exact_zeros_insignificant():
    tiny = np.full(10, 1e-35)
    assert group_mean(tiny).pvalue < 1e-100  # no spread: any positive mean is "significant"
    assert group_mean(tiny, rounding=1e-30).pvalue > 0.4


def test_paired_ratio_uses_the_pairing():
    rng = np.random.default_rng(2)
    common = rng.gamma(5.0, size=200)
    a = 2.0 * common + rng.normal(0, 0.05, 200)
    b = common + rng.normal(0, 0.05, 200)
    paired = paired_ratio(a, b)
    shuffled = paired_ratio(a, rng.permutation(b))
    assert paired.estimate == pytest.approx(a.mean() / b.mean())
    assert paired.log_standard_error < 0.2 * shuffled.log_standard_error
    low, high = paired.confidence_interval()
    boot = paired.bootstrap_interval(seed=0)
    assert low < 2.0 < high and boot[0] < paired.estimate < boot[1]


def test_bad_input_raises():
    with pytest.raises(ValueError, match="at least 2 complete groups"):
        group_mean([1.0])
    with pytest.raises(ValueError, match="paired values"):
        paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive means"):
        paired_ratio([-1.0, -2.0], [1.0, 2.0])


def _coverage_threshold(replications: int, level: float = 0.95, rate: float = 1e-3) -> float:
    """The lowest coverage count an interval of true coverage >= `level` falls below with
    probability <= `rate` (binomial lower quantile), as a fraction of `replications`."""
    return stats.binom.ppf(rate, replications, level) / replications


def _gaussian_groups(rng, mean, factor, draws, group_size):
    """Draws `N(mean, factor factor^T)` split into groups: the mean draw, group variances
    (total of the per-coordinate unbiased variances) and group squared norms of `mean_g - r`
    need `r`, so the `G x m x d` groups are returned too."""
    x = mean + rng.standard_normal((draws, len(mean))) @ factor.T
    groups = x.reshape(draws // group_size, group_size, len(mean))
    return x.mean(0), groups, groups.var(1, ddof=1).sum(1)


@pytest.mark.statistical
@pytest.mark.parametrize("mean, factor", [
    (np.zeros(1), np.eye(1)),  # the worst case of the ball: one coordinate, no signal
    (np.array([0.05, 0.0, 0.02, 0.0]), np.tril(np.full((4, 4), 0.6)) + 0.4 * np.eye(4)),
    (np.array([2.0, -1.0, 0.5, 1.0]), np.tril(np.full((4, 4), 0.6)) + 0.4 * np.eye(4)),
])
def test_snr_interval_covers_the_true_snr(mean, factor):
    """2,000 replications of 1,000 Gaussian draws in groups of 50 (seeded): the 95% interval
    (97.5% ball, 97.5% t interval of the total variance) covers the true SNR at least as often
    as 95% allows; false-failure rate <= 1e-3 for a true coverage >= 95% (binomial)."""
    rng = np.random.default_rng(7)
    truth = np.linalg.norm(mean) / np.sqrt(np.trace(factor @ factor.T))
    replications, covered = 2000, 0
    for _ in range(replications):
        mean_draw, _, within = _gaussian_groups(rng, mean, factor, 1000, 50)
        low, high = group_mean(within).confidence_interval(0.975)
        snr_low, snr_high = snr_interval(float(np.linalg.norm(mean_draw)), 1000, low, high)
        covered += snr_low <= truth <= snr_high
    assert covered / replications >= _coverage_threshold(replications), covered


@pytest.mark.statistical
@pytest.mark.parametrize("dimension, bias", [(16, 0.0), (16, 0.1), (16, 1.0), (1, 0.0),
                                             (1, 1.0)])
def test_relative_bias_interval_covers_the_true_relative_bias(dimension, bias):
    """2,000 replications of 1,000 unit-variance Gaussian draws in groups of 50 (seeded), bias
    `bias` on one coordinate against `r = 1`: the mapped 95% squared-bias interval covers the
    true relative bias at least as often as 95% allows (false-failure rate <= 1e-3 for a true
    coverage >= 95%). The regimes are those where the t interval over 20 groups holds; with one
    coordinate and a bias below the per-group noise (0.05-0.1 here) it covers about 89%."""
    rng = np.random.default_rng(11)
    reference = np.ones(dimension)
    mean = reference.copy()
    mean[0] += bias
    truth = bias / np.linalg.norm(reference)
    replications, covered = 2000, 0
    for _ in range(replications):
        _, groups, within = _gaussian_groups(rng, mean, np.eye(dimension), 1000, 50)
        squared = ((groups.mean(1) - reference) ** 2).sum(1) - within / 50
        low, high = relative_bias_interval(*group_mean(squared).confidence_interval(0.95),
                                           np.linalg.norm(reference))
        covered += low <= truth <= high
    assert covered / replications >= _coverage_threshold(replications), covered


def test_relative_bias_interval_is_the_root_of_the_clipped_squared_bias_interval():
    assert relative_bias_interval(-0.5, 4.0, 2.0) == (0.0, 1.0)
    assert relative_bias_interval(-2.0, -1.0, 1.0) == (0.0, 0.0)
    low, high = relative_bias_interval(np.array([9.0, np.nan]), np.array([16.0, 1.0]), 2.0)
    np.testing.assert_array_equal(low, [1.5, np.nan])
    np.testing.assert_array_equal(high, [2.0, 0.5])


def test_snr_interval_formula_and_edge_cases():
    z = stats.norm.ppf(0.5 + 0.975 / 2)
    low, high = snr_interval(3.0, 100, 0.9, 1.1)
    radius = z * np.sqrt(1.1 / 100)
    assert low == pytest.approx((3.0 - radius) / np.sqrt(1.1), rel=1e-14)
    assert high == pytest.approx((3.0 + radius) / np.sqrt(0.9), rel=1e-14)
    assert snr_interval(0.01, 100, 0.9, 1.1)[0] == 0.0  # inside the ball: not detectable
    assert snr_interval(1.0, 100, -0.1, 1.1)[1] == np.inf
    assert snr_interval(1.0, 100, 0.0, 0.0) == (np.inf, np.inf)
    assert np.isnan(snr_interval(1.0, 100, np.nan, np.nan)).all()
    with pytest.raises(ValueError, match="ball_level"):
        snr_interval(1.0, 100, 0.9, 1.1, ball_level=0.5)
