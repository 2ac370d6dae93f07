"""Fourth-moment standard errors of the variance.

Note [Randomized statistical tests]: seeded; the coverage check uses 400 replications of
normal data, where the 95% interval's coverage count is Binomial(400, ~0.95): we require at
least 360 (P(Binomial(400, 0.95) < 360) < 1e-4).
"""

import numpy as np
import pytest
import torch

from estimator_lab.montecarlo import MomentAccumulator
from estimator_lab.stats.variance import variance_with_error


def moments(x):
    acc = MomentAccumulator(higher_moments=True)
    acc.update({"w": torch.tensor(x)})
    return acc["w"]


def test_standard_error_formula():
    x = np.random.default_rng(0).standard_t(6, size=(500, 3))
    result = variance_with_error(moments(x))
    n = 500
    s2 = x.var(0, ddof=1)
    m4 = ((x - x.mean(0)) ** 4).mean(0)
    np.testing.assert_allclose(result.estimate, s2, rtol=1e-12)
    np.testing.assert_allclose(result.standard_error,
                               np.sqrt((m4 - s2**2 * (n - 3) / (n - 1)) / n), rtol=1e-10)
    frame = result.to_frame()
    assert (frame["variance_low"] < frame["variance"]).all()
    assert (frame["variance"] < frame["variance_high"]).all()


@pytest.mark.statistical
def test_interval_covers_the_true_variance_of_normal_draws():
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(400):
        low, high = variance_with_error(moments(rng.normal(0, 2.0, size=(300, 1)))) \
            .confidence_interval(0.95)
        covered += bool(low[0] <= 4.0 <= high[0])
    assert covered >= 360, covered


def test_needs_fourth_moment_and_four_draws():
    acc = MomentAccumulator()
    acc.update({"w": torch.ones(5, 2)})
    with pytest.raises(ValueError, match="higher_moments=True"):
        variance_with_error(acc["w"])
    with pytest.raises(ValueError, match="at least 4 draws"):
        variance_with_error(moments(np.ones((3, 1))))
