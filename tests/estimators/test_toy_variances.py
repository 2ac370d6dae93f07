"""Exact variances of the post-2020 Bernoulli estimators on `toy:n=4,t=0.45` against Monte Carlo.

`double-cv` depends on its noise only through the gates (`discrete_noise`): `exact_moments`
enumerates `2^{K G}` configurations. `bitflip`, `ugc` and `arms` (Dirichlet copula, `n = 2`)
are piecewise constant in their uniforms between the cells of `quadrature_breakpoints`, so
Gauss-Legendre quadrature split there is exact with any number of nodes (2 here).

Note [Randomized statistical tests]: seeds are fixed, so the tests are deterministic. Each
coordinate's `z = (s^2 - Var) / se(s^2)` (fourth-moment standard error, `NUM_DRAWS` draws) is
approximately standard normal for a correct implementation; the test fails when `|z| >= 5`
on any of the 4 coordinates, probability `4 * 5.7e-7 = 2.3e-6` per case and `< 2e-5` over
the 7 cases. Power: `NUM_DRAWS` is chosen so the standard error is under 5% of the variance
(checked), so a variance off by 25% or more gives `|z| > 5`.
"""

import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.exact import exact_gradient, exact_moments
from estimator_lab.graphs.specs import build_problem
from estimator_lab.montecarlo import GATE_LOGITS, run_draws
from estimator_lab.stats.variance import variance_with_error

NUM_DRAWS = 20_000
Z_LIMIT = 5.0
RELATIVE_SE = 0.05
EXACT_CELLS = {"quadrature_points": 2, "max_quadrature_dims": 5}

CASES = [
    ("double-cv", {}),
    ("double-cv", {"num_samples": 3}),
    ("double-cv", {"num_samples": 2, "alpha": 0.5}),
    ("bitflip", {}),
    ("ugc", {}),
    ("arms", {}),
    ("disarm", {}),  # the reference ugc is compared with in analyses/ugc_claim
]


@pytest.mark.statistical
@pytest.mark.parametrize(("name", "hyper"), CASES, ids=[f"{n}-{h}" for n, h in CASES])
def test_exact_variance_agrees_with_monte_carlo(name, hyper):
    problem = build_problem("toy:n=4,t=0.45")
    graph, batch = problem.graph, problem.batch
    estimator = get_estimator(name, **hyper)
    exact = exact_moments(graph, estimator, batch, **EXACT_CELLS)
    assert exact.method == ("enumeration" if estimator.discrete_noise else "quadrature")
    _, gradient = exact_gradient(graph, batch)
    torch.testing.assert_close(exact.mean[GATE_LOGITS], gradient[GATE_LOGITS],
                               rtol=1e-12, atol=1e-15)
    draws = run_draws(graph, {name: estimator}, batch, num_draws=NUM_DRAWS, seed=11,
                      chunk_size=5000, higher_moments=True)[name]
    measured = variance_with_error(draws[GATE_LOGITS])
    variance = exact.variance[GATE_LOGITS].flatten().numpy()
    assert (measured.standard_error < RELATIVE_SE * variance).all(), "too few draws for power"
    z = (measured.estimate - variance) / measured.standard_error
    assert (abs(z) < Z_LIMIT).all(), z
