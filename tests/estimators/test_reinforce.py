"""REINFORCE is unbiased: paired against local-expectation draws from the same noise.

Note [Randomized statistical tests]: each test fixes its seed, so it is deterministic; the
false-failure rate stated is the probability, over seeds, that a correct implementation fails.
`zero_mean_test` runs one z-test per coordinate of the mean paired difference and controls the
family-wise error with Holm's method, so at level `ALPHA` a correct estimator is flagged with
probability at most `ALPHA` (up to the normal approximation of a mean of 4000 bounded draws,
whose calibration `test_zero_mean_test_is_calibrated` measures).
"""

from functools import partial

import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.montecarlo import MomentAccumulator, iter_draw_chunks
from estimator_lab.montecarlo.accumulators import Moments
from estimator_lab.stats import zero_mean_test
from estimator_lab.testing import conditional_problem

ALPHA = 1e-3  # false-failure rate of the unbiasedness test
NUM_DRAWS = 4000  # the power test below shows this budget detects straight-through's bias


small_problem = partial(conditional_problem, 16, 4, num_inputs=20, num_gater_hidden=8,
                        num_classes=4, output_scale=8.0, inputs="uniform")
"""A float64 conditional net with 16 gates on 4 uniform examples (64 gate-logit coordinates),
its output weights times 8 so that the loss depends visibly on the gates."""


def paired_differences(graph, batch, name: str, seed: int, num_draws: int, **kwargs):
    """Moments of `name` draws minus `local-expectation` draws under common random numbers."""
    estimators = {name: get_estimator(name), "reference": get_estimator("local-expectation")}
    differences = MomentAccumulator()
    for _, chunk, _ in iter_draw_chunks(
        graph, estimators, batch, num_draws=num_draws, seed=seed, chunk_size=500, **kwargs
    ):
        differences.update({k: chunk[name][k] - chunk["reference"][k] for k in chunk[name]})
    return differences


@pytest.mark.statistical
def test_reinforce_matches_local_expectation_on_gate_logits_and_parameters():
    graph, batch = small_problem(seed=0)
    differences = paired_differences(graph, batch, "reinforce", seed=1, num_draws=NUM_DRAWS)
    # One family: every coordinate of every tensor, so Holm keeps the rate at ALPHA.
    family = Moments(
        NUM_DRAWS,
        torch.cat([differences[n].mean for n in differences.names()]),
        torch.cat([differences[n].m2 for n in differences.names()]),
    )
    result = zero_mean_test(family, alpha=ALPHA)
    assert result.pvalue >= ALPHA, result.statistic
    # The pathwise parts (expert and output layers) see identical gates: exactly equal draws.
    assert torch.equal(differences["output.weight"].m2, torch.zeros_like(
        differences["output.weight"].m2))


@pytest.mark.statistical
def test_straight_through_is_flagged_biased():
    """Power: the same test, same budget, rejects the biased straight-through estimator."""
    graph, batch = small_problem(seed=0)
    differences = paired_differences(
        graph, batch, "st", seed=1, num_draws=NUM_DRAWS, parameters=[]
    )
    result = zero_mean_test(differences["gate_logits"], alpha=ALPHA)
    assert result.pvalue < 1e-12
    assert result.rejected.mean() > 0.5


@pytest.mark.statistical
@pytest.mark.slow
def test_zero_mean_test_is_calibrated():
    """Over 200 seeds at level 0.05, a correct estimator is flagged in about 5% of runs.

    The count of rejections is Binomial(200, q) with q <= 0.05 for a calibrated (Holm is
    conservative) test; we fail above 20 rejections, P(Binomial(200, 0.05) > 20) ~ 0.1%.
    """
    graph, batch = small_problem(seed=0)
    rejections = 0
    for seed in range(200):
        differences = paired_differences(
            graph, batch, "reinforce", seed=seed, num_draws=NUM_DRAWS, parameters=[]
        )
        rejections += zero_mean_test(differences["gate_logits"], alpha=0.05).pvalue < 0.05
    assert rejections <= 20, rejections
