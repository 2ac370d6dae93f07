"""Exact estimator moments against Monte Carlo and against closed forms.

Note [Randomized statistical tests]: seeds are fixed. The Monte Carlo checks compare a mean of
N = 10^5 draws with its exact value by z-tests with Holm's correction at family-wise level
1e-3 (false-failure rate <= 1e-3 per test), and a sample variance with its exact value using
the fourth-moment standard error of the variance, again at 1e-3 with Holm.
"""

import numpy as np
import pytest
import torch
from scipy import stats
from statsmodels.stats.multitest import multipletests

from estimator_lab.estimators import get_estimator
from estimator_lab.exact import NotComputable, exact_gradient, exact_moments
from estimator_lab.graphs.specs import build_problem
from estimator_lab.montecarlo.engine import GATE_LOGITS, gradient_draws
from estimator_lab.noise import uniform_noise

ALPHA = 1e-3
NUM_DRAWS = 100_000


def draws_of(problem, name, num_draws, seed):
    estimator = get_estimator(name)
    prepared = problem.graph.prepare(problem.batch)
    noise = uniform_noise(seed, range(num_draws), estimator.noise_shape(problem.graph, prepared),
                          dtype=torch.float64)
    return gradient_draws(problem.graph, estimator, problem.batch, noise, parameters=[])[
        GATE_LOGITS].reshape(num_draws, -1).numpy()


@pytest.mark.statistical
@pytest.mark.parametrize("spec", ["toy:n=4,t=0.45", "sbn:2-2,inputs=4,batch=2"])
@pytest.mark.parametrize("name", ["reinforce", "st"])
def test_exact_mean_and_variance_agree_with_monte_carlo(spec, name):
    problem = build_problem(spec, seed=0)
    exact = exact_moments(problem.graph, get_estimator(name), problem.batch, parameters=[])
    draws = draws_of(problem, name, NUM_DRAWS, seed=11)
    mean, variance = exact.mean[GATE_LOGITS].flatten().numpy(), exact.variance[
        GATE_LOGITS].flatten().numpy()
    centred = draws - draws.mean(0)
    # Standard error of the sample variance: sqrt((m4 - s^4 (n-3)/(n-1)) / n).
    s2 = centred.var(0, ddof=1)
    m4 = (centred**4).mean(0)
    variance_se = np.sqrt((m4 - s2**2 * (NUM_DRAWS - 3) / (NUM_DRAWS - 1)) / NUM_DRAWS)
    z = np.concatenate([
        (draws.mean(0) - mean) / np.sqrt(s2 / NUM_DRAWS),
        (s2 - variance) / variance_se,
    ])
    rejected, *_ = multipletests(2 * stats.norm.sf(np.abs(z)), alpha=ALPHA, method="holm")
    assert not rejected.any(), z


def test_reinforce_is_exactly_unbiased_and_st_is_not():
    problem = build_problem("sbn:3-2,inputs=5,batch=2", seed=4)
    _, gradient = exact_gradient(problem.graph, problem.batch)
    for name, unbiased in [("reinforce", True), ("st", False)]:
        exact = exact_moments(problem.graph, get_estimator(name), problem.batch)
        for key, value in gradient.items():
            close = torch.allclose(exact.mean[key], value, rtol=1e-10, atol=1e-13)
            if unbiased:
                assert close, key
        if not unbiased:
            assert not torch.allclose(exact.mean[GATE_LOGITS], gradient[GATE_LOGITS], atol=1e-3)


def test_toy_reinforce_variance_closed_form():
    """One gate, L = (b - t)^2: the REINFORCE draw is L(b)(b - p), so
    Var = p (1-t)^4 (1-p)^2 + (1-p) t^4 p^2 - (p(1-p)(1-2t))^2."""
    problem = build_problem("toy:logits=0.7,t=0.3")
    exact = exact_moments(problem.graph, get_estimator("reinforce"), problem.batch)
    p, t = torch.sigmoid(torch.tensor(0.7, dtype=torch.float64)), 0.3
    second_moment = p * (1 - t) ** 4 * (1 - p) ** 2 + (1 - p) * t**4 * p**2
    closed = second_moment - (p * (1 - p) * (1 - 2 * t)) ** 2
    torch.testing.assert_close(exact.variance["theta"][0], closed, rtol=1e-12, atol=0)


def test_quadrature_for_continuous_noise_and_its_limits():
    """An estimator without discrete noise is integrated by quadrature on <= 2 uniforms."""

    class ContinuousReinforce(type(get_estimator("reinforce"))):
        discrete_noise = False

    problem = build_problem("toy:n=2,t=0.45", seed=1)
    by_quadrature = exact_moments(problem.graph, ContinuousReinforce(), problem.batch)
    by_enumeration = exact_moments(problem.graph, get_estimator("reinforce"), problem.batch)
    assert by_quadrature.method == "quadrature" and by_enumeration.method == "enumeration"
    for key in by_enumeration.mean:
        torch.testing.assert_close(by_quadrature.mean[key], by_enumeration.mean[key], rtol=1e-12,
                                   atol=1e-15)
        torch.testing.assert_close(by_quadrature.variance[key], by_enumeration.variance[key],
                                   rtol=1e-12, atol=1e-15)
        # Enumeration has no error estimate; the quadrature's is rounding (piecewise-constant
        # draws between the breakpoints: every rule is exact).
        assert not by_enumeration.mean_error[key].any()
        assert not by_enumeration.variance_error[key].any()
        assert float(by_quadrature.mean_error[key].max()) <= 1e-14
        assert float(by_quadrature.variance_error[key].max()) <= 1e-14
    with pytest.raises(NotComputable, match="3 uniforms per example"):
        exact_moments(build_problem("toy:n=3").graph, ContinuousReinforce(),
                      build_problem("toy:n=3").batch)
    with pytest.raises(ValueError, match="quadrature_points must be >= 2"):
        exact_moments(problem.graph, ContinuousReinforce(), problem.batch, quadrature_points=1)


def test_quadrature_error_estimate_is_the_half_node_rule_difference_and_sets_the_label():
    """`mean_error` is `|Q_k - Q_{k/2}|` per coordinate, summed over examples and divided by
    `B` like the mean; past `quadrature_rtol` of the tensor's largest value the result is
    labelled `"approximate quadrature"`. At `tau = 1` on two gates the 8- and 4-node rules
    differ by up to 2.8e-9 of the largest value (measured): inside a tolerance of 1e-4,
    outside one of 1e-12."""
    problem = build_problem("toy:n=2,t=0.45", seed=1)
    estimator = get_estimator("gumbel")
    run = {k: exact_moments(problem.graph, estimator, problem.batch, quadrature_points=k)
           for k in (4, 8)}
    torch.testing.assert_close(run[8].mean_error["theta"],
                               (run[8].mean["theta"] - run[4].mean["theta"]).abs(),
                               rtol=1e-12, atol=1e-17)
    assert float(run[8].mean_error["theta"].max()) > 0
    labels = [exact_moments(problem.graph, estimator, problem.batch, quadrature_points=8,
                            quadrature_rtol=rtol).method for rtol in (1e-4, 1e-12)]
    assert labels == ["quadrature", "approximate quadrature"]


@pytest.mark.parametrize(("name", "hyper"), [
    ("sts", {}), ("noisy-rectifier", {}), ("noisy-rectifier", {"noise": "logistic"}),
    ("gumbel", {}), ("disarm", {}),
])
def test_quadrature_converges_with_the_estimators_breakpoints(name, hyper):
    """Split where each draw jumps or kinks (STS at sqrt(p), the rectifier at its kink and
    graded towards its unbounded tails), quadrature with 16 and 24 nodes per cell agrees."""
    problem = build_problem("toy:n=2,t=0.45", seed=1)
    estimator = get_estimator(name, **hyper)
    coarse, fine = (exact_moments(problem.graph, estimator, problem.batch, quadrature_points=k)
                    for k in (16, 24))
    torch.testing.assert_close(coarse.mean["theta"], fine.mean["theta"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(coarse.variance["theta"], fine.variance["theta"], rtol=1e-8,
                               atol=1e-12)
