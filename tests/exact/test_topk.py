"""Exact enumeration for top-k graphs: expected loss, gradient, cells of the noise."""

import itertools

import pytest
import torch

from estimator_lab.configurations import EnumerationTooLarge
from estimator_lab.exact.topk import cell_noise, iter_topk_chunks, topk_exact_gradient
from estimator_lab.graphs.categorical import CategoricalToy
from estimator_lab.graphs.topk import TopKToy, topk_gates, topk_subsets


def _expected_loss(toy, batch):
    value, _ = topk_exact_gradient(toy, batch, include_logits=False, parameters=[])
    return float(value)


def test_chunks_cover_every_configuration_once():
    configs = torch.cat(list(iter_topk_chunks(2, 4, 2, 7)))
    assert configs.shape == (36, 2, 4)
    codes = {tuple(c.flatten().tolist()) for c in configs}
    subsets = [tuple(s.tolist()) for s in topk_subsets(4, 2)]
    assert codes == {a + b for a, b in itertools.product(subsets, repeat=2)}


def test_exact_gradient_matches_central_differences():
    toy = TopKToy.seeded(2, 5, 2, target=0.3, seed=1)
    batch = toy.example_batch(2)
    _, grads = topk_exact_gradient(toy, batch)
    h = 1e-6
    numeric = torch.zeros_like(toy.theta)
    for index in itertools.product(range(2), range(5)):
        with torch.no_grad():
            toy.theta[index] += h
        up = _expected_loss(toy, batch)
        with torch.no_grad():
            toy.theta[index] -= 2 * h
        down = _expected_loss(toy, batch)
        with torch.no_grad():
            toy.theta[index] += h
        numeric[index] = (up - down) / (2 * h)
    # central differences in float64: truncation O(h^2) ~ 1e-12, rounding ~ 1e-16 / h ~ 1e-10
    assert torch.allclose(grads["theta"], numeric, rtol=0, atol=1e-8)
    # the two examples share theta: each owns half of the gradient through its logits
    assert torch.allclose(grads["gate_logits"].sum(0), grads["theta"], rtol=0, atol=1e-15)


def test_k1_is_cat_toy_closed_form():
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    toy = TopKToy(logits, num_chosen=1, target=0.45)
    _, grads = topk_exact_gradient(toy, toy.example_batch())
    closed = CategoricalToy(logits, target=0.45).true_gradient()["theta"]
    assert torch.allclose(grads["theta"], closed, rtol=0, atol=1e-12)


def test_guard_refuses_large_enumerations():
    toy = TopKToy.seeded(4, 8, 3)  # C(8,3)^4 = 56^4 > 10^6
    with pytest.raises(EnumerationTooLarge, match="C\\(8,3\\)\\^4"):
        topk_exact_gradient(toy, toy.example_batch(), max_configurations=10**6)


def test_cell_noise_lands_in_every_cell():
    logits = torch.tensor([4.0, -3.0, 0.5, 2.0, -1.0], dtype=torch.float64)
    subsets = topk_subsets(5, 3)
    for dtype in (torch.float64, torch.float32):
        noise = cell_noise(logits.to(dtype), subsets.to(dtype), 3)
        assert torch.equal(topk_gates(logits.to(dtype), noise, 3), subsets.to(dtype))
