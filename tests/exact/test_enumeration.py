"""Exact gradients by enumeration against finite differences and closed forms (float64)."""

import pytest
import torch

from estimator_lab.exact import (
    EnumerationTooLarge,
    check_enumerable,
    configurations,
    exact_gradient,
    log_prob_and_loss,
)
from estimator_lab.graphs.specs import build_problem

SPECS = ["toy:n=5,t=0.45", "sbn:3-3-2,inputs=5,batch=2", "sbn:6,inputs=4,batch=3"]


def central_difference(graph, batch, param, index, step=1e-6):
    with torch.no_grad():
        original = param[index].item()
        param[index] = original + step
        plus, _ = exact_gradient(graph, batch, parameters=[], include_logits=False)
        param[index] = original - step
        minus, _ = exact_gradient(graph, batch, parameters=[], include_logits=False)
        param[index] = original
    return ((plus - minus) / (2 * step)).item()


def check_against_finite_differences(spec, seed=0):
    problem = build_problem(spec, seed=seed)
    graph, batch = problem.graph, problem.batch
    _, grads = exact_gradient(graph, batch)
    generator = torch.Generator().manual_seed(seed)
    for name, param in graph.named_parameters():
        for _ in range(3):  # three random coordinates of each parameter
            index = tuple(int(torch.randint(0, s, (1,), generator=generator)) for s in param.shape)
            numeric = central_difference(graph, batch, param, index)
            exact = grads[name][index].item()
            # Central differences of a smooth float64 function with step 1e-6 are accurate to
            # ~1e-9 absolute; relative 1e-6 with an absolute floor for near-zero entries.
            assert abs(exact - numeric) <= 1e-6 * abs(numeric) + 1e-9, (spec, name, index)


@pytest.mark.parametrize("spec", SPECS)
def test_exact_gradient_matches_central_differences(spec):
    check_against_finite_differences(spec)


@pytest.mark.network
def test_exact_gradient_matches_central_differences_on_tiny_conditional(mnist_env):
    check_against_finite_differences("tiny-conditional:gates=6,hidden=4,batch=2")


def test_toy_gradient_matches_the_closed_form_to_1e12():
    problem = build_problem("toy:n=8,t=0.45", seed=3)
    value, grads = exact_gradient(problem.graph, problem.batch)
    closed = problem.graph.true_gradient()["theta"]
    torch.testing.assert_close(grads["theta"], closed, rtol=1e-12, atol=0)
    torch.testing.assert_close(grads["gate_logits"][0], closed, rtol=1e-12, atol=0)
    torch.testing.assert_close(value, problem.graph.expected_loss().detach(), rtol=1e-12, atol=0)


def test_chunking_does_not_change_the_result():
    problem = build_problem("sbn:4-3,inputs=5,batch=2", seed=1)
    _, whole = exact_gradient(problem.graph, problem.batch, chunk_size=2**7)
    _, pieces = exact_gradient(problem.graph, problem.batch, chunk_size=5)
    for name in whole:
        torch.testing.assert_close(whole[name], pieces[name], rtol=1e-12, atol=1e-15)


def test_probabilities_of_all_configurations_sum_to_one():
    problem = build_problem("sbn:3-2-2,inputs=4,batch=3", seed=2)
    prepared = problem.graph.prepare(problem.batch)
    log_prob, losses = log_prob_and_loss(problem.graph, prepared, configurations(7, 0, 128))
    torch.testing.assert_close(log_prob.exp().sum(0), torch.ones(3, dtype=torch.float64))
    assert losses.shape == (128, 3)


def test_configurations_are_the_binary_codes():
    assert configurations(3, 0, 8, dtype=torch.int64).tolist() == [
        [0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]
    ]


def test_guard_refuses_large_graphs_and_says_the_size():
    with pytest.raises(EnumerationTooLarge, match=r"30 gates make 2\^30 = 1,073,741,824"):
        check_enumerable(30, max_configurations=2**20)
    problem = build_problem("toy:n=6", max_configurations=2**6)
    with pytest.raises(EnumerationTooLarge, match="limit of 32"):
        exact_gradient(problem.graph, problem.batch, max_configurations=32)
