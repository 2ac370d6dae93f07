"""Group means, t intervals, bootstrap intervals and paired ratios."""

import numpy as np
import pytest
from scipy import stats

from estimator_lab.stats.intervals import group_mean, paired_ratio


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
