"""The law of total variance over minibatches, against exact per-minibatch moments.

Note [Randomized statistical tests]: seeded. On the same M = 40 minibatches, the estimated
terms are compared with the exact ones (enumeration per minibatch). With n = 400 draws per
minibatch, the mean of each minibatch carries Monte Carlo noise of variance w_m / n; to first
order the between term's error has standard deviation
`2 sqrt(b w / (n (M - 1))) + sqrt(2 / (M - 1)) w / n` and the within term's
`sqrt(sum_m Var[s_m^2]) / M` with `Var[s^2] ~ (m4 - s^4 (n-3)/(n-1)) / n`. Each of the 4
coordinates must be within 4 standard deviations (two-sided 6e-5 each; < 5e-4 for the test).
"""

import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.exact import exact_moments
from estimator_lab.montecarlo.minibatches import run_minibatch_stream
from estimator_lab.testing import conditional_problem


def setup():
    net, (x, y) = conditional_problem(batch_size=200, output_scale=6.0, batch_seed=1)
    pick = torch.Generator().manual_seed(2)
    fixed = [torch.randint(0, 200, (2,), generator=pick) for _ in range(40)]
    return net, lambda m: (x[fixed[m]], y[fixed[m]])


@pytest.mark.statistical
def test_within_and_between_match_exact_values():
    net, batches = setup()
    estimator = get_estimator("reinforce")
    result = run_minibatch_stream(net, {"r": estimator}, batches, num_minibatches=40,
                                  draws_per_minibatch=400, seed=0, chunk_size=400)["r"]
    exact = [exact_moments(net, estimator, batches(m)) for m in range(40)]
    name = "gater_out.bias"
    within = torch.stack([e.variance[name] for e in exact]).mean(0)
    between = torch.stack([e.mean[name] for e in exact]).var(0)
    m, n = 40, 400
    # Within: a sample variance's standard error needs the fourth moment; REINFORCE draws are
    # bounded, so 3 s^4 (the normal value) times 4 bounds m4 generously.
    within_sd = (torch.stack([e.variance[name] for e in exact]).square() * 12 / n).sum(0).sqrt() / m
    between_sd = 2 * (between * within / (n * (m - 1))).sqrt() + (2 / (m - 1)) ** 0.5 * within / n
    assert ((result.within[name] - within).abs() <= 4 * within_sd).all()
    assert ((result.between[name] - between).abs() <= 4 * between_sd).all()
    assert (result.within[name] > result.between[name]).all()  # REINFORCE noise dominates


def test_bad_sizes_raise():
    net, batches = setup()
    with pytest.raises(ValueError, match="at least 2 minibatches"):
        run_minibatch_stream(net, {"r": get_estimator("reinforce")}, batches,
                             num_minibatches=1, draws_per_minibatch=5, seed=0)
