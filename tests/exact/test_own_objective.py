"""Exact gradients of the STS and noisy-rectifier objectives (float64)."""

import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.exact import exact_moments, noisy_rectifier_exact_gradient, sts_exact_gradient
from estimator_lab.graphs.specs import build_problem
from estimator_lab.testing import conditional_problem


def finite_difference(function, graph, batch, name, index, step=1e-6):
    param = dict(graph.named_parameters())[name]
    values = []
    for shift in (step, -2 * step, step):
        with torch.no_grad():
            param[index] += shift
        values.append(function(graph, batch)[0])
    return ((values[0] - values[1]) / (2 * step)).item()


def two_gate_network():
    """A float64 2-gate net at its initialisation on 3 uniform inputs, labels 0, 2, 1."""
    graph, (x, _) = conditional_problem(2, num_inputs=5, num_gater_hidden=3, output_scale=1.0,
                                        inputs="uniform", batch_seed=1)
    return graph, (x, torch.tensor([0, 2, 1]))


@pytest.mark.parametrize("function", [
    sts_exact_gradient,
    lambda graph, batch: noisy_rectifier_exact_gradient(graph, batch, quadrature_points=12),
    lambda graph, batch: noisy_rectifier_exact_gradient(graph, batch, noise="logistic",
                                                        quadrature_points=12),
], ids=["sts", "rectifier-gaussian", "rectifier-logistic"])
def test_exact_gradients_match_central_differences(function):
    graph, batch = two_gate_network()
    _, grads = function(graph, batch)
    for name, index in [("gater_out.weight", (1, 2)), ("gater_hidden.bias", (0,)),
                        ("output.weight", (2, 1)), ("expert.bias", (1,))]:
        numeric = finite_difference(function, graph, batch, name, index)
        assert abs(grads[name][index].item() - numeric) <= 1e-6 * abs(numeric) + 1e-9, name


def test_noisy_rectifier_estimator_is_exactly_unbiased_for_its_own_objective():
    """The same quadrature rule on both sides (8 nodes a cell keeps it fast): the mean
    pathwise draw over the nodes is the derivative of the quadrature of E[L]."""
    graph, batch = two_gate_network()
    for noise in ("gaussian", "logistic"):
        _, grads = noisy_rectifier_exact_gradient(graph, batch, noise=noise,
                                                  quadrature_points=8)
        estimator = get_estimator("noisy-rectifier", noise=noise)
        mean = exact_moments(graph, estimator, batch, quadrature_points=8).mean
        for name, value in grads.items():
            torch.testing.assert_close(mean[name], value, rtol=1e-9, atol=1e-12)


def test_sts_estimator_is_biased_for_its_own_objective():
    problem = build_problem("toy:n=2,t=0.45", seed=1)
    _, grads = sts_exact_gradient(problem.graph, problem.batch)
    mean = exact_moments(problem.graph, get_estimator("sts"), problem.batch).mean
    assert not torch.allclose(mean["theta"], grads["theta"], rtol=0.05)


def test_limits_are_clear():
    problem = build_problem("toy:n=3")
    with pytest.raises(ValueError, match="at most 2 gates"):
        noisy_rectifier_exact_gradient(problem.graph, problem.batch)
    sbn = build_problem("sbn:2-2")
    with pytest.raises(ValueError, match="one gate layer"):
        sts_exact_gradient(sbn.graph, sbn.batch)
