"""The zero-mean test and the detectable-bias formula.

Note [Randomized statistical tests]: seeded. The power check simulates 2000 z-tests at the
detectable bias, where the detection count is Binomial(2000, 0.8): we require 1500..1700
(false-failure probability < 1e-6).
"""

import numpy as np
import torch
from scipy import stats

from estimator_lab.montecarlo.accumulators import Moments
from estimator_lab.stats import detectable_bias, zero_mean_test


def test_zero_mean_test_flags_exact_offsets_and_not_rounding():
    mean = torch.tensor([0.0, 1e-17, 0.3], dtype=torch.float64)
    m2 = torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64)
    result = zero_mean_test(Moments(100, mean, m2), rounding=np.array([0.0, 1e-15, 0.0]))
    assert result.pvalues[0] == 1.0 and result.pvalues[1] > 0.9
    assert result.pvalues[2] < 0.05 and result.rejected.tolist() == [False, False, True]
    frame = result.to_frame()
    assert list(frame.columns) == ["index", "estimate", "stderr", "z", "pvalue",
                                   "pvalue_adjusted"]


def test_detectable_bias_has_the_stated_power():
    rng = np.random.default_rng(0)
    n, m, alpha = 400, 10, 0.05
    delta = detectable_bias(np.full(m, 1.0), n, alpha=alpha, power=0.8)[0]
    threshold = stats.norm.ppf(1 - alpha / (2 * m))
    means = delta + rng.normal(0, 1 / np.sqrt(n), size=2000)  # one biased coordinate, 2000 runs
    detected = (np.abs(means) * np.sqrt(n) > threshold).sum()
    assert 1500 <= detected <= 1700, detected


def test_adjusted_pvalues_match_statsmodels():
    from statsmodels.stats.multitest import multipletests

    from estimator_lab.stats.unbiasedness import adjust_pvalues

    rng = np.random.default_rng(5)
    pvalues = np.concatenate([rng.uniform(size=200), rng.uniform(0, 1e-4, size=20), [0.3, 0.3]])
    for method in ("holm", "fdr_bh", "bonferroni"):
        np.testing.assert_allclose(adjust_pvalues(pvalues, method),
                                   multipletests(pvalues, method=method)[1], rtol=1e-14)
