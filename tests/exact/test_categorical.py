"""Exact enumeration for categorical graphs: against the closed form, and exact moments."""

import pytest
import torch

from estimator_lab.configurations import EnumerationTooLarge
from estimator_lab.exact.categorical import (
    categorical_configurations,
    categorical_exact_gradient,
    check_categorical_enumerable,
    enumeration_atoms,
)
from estimator_lab.graphs.categorical import CategoricalToy, categorical_gates


@pytest.mark.parametrize(("n", "k", "t", "seed"),
                         [(1, 2, 0.45, 0), (3, 4, 0.45, 0), (2, 5, -0.3, 1), (4, 3, 1.7, 2)])
def test_enumerated_gradient_equals_the_closed_form(n, k, t, seed):
    toy = CategoricalToy.seeded(n, k, t, seed)
    value, grads = categorical_exact_gradient(toy, toy.example_batch(2), chunk_size=7)
    closed = toy.true_gradient()["theta"]
    assert float((grads["theta"] - closed).abs().max()) < 1e-12
    # each example's logits get its share (1/B) of the gradient
    assert float((grads["gate_logits"] - closed / 2).abs().max()) < 1e-12
    assert abs(float(value - toy.expected_loss().detach())) < 1e-12


def test_configurations_visit_every_assignment_once():
    configs = categorical_configurations(3, 4, 0, 64)
    assert configs.shape == (64, 3, 4) and bool((configs.sum(-1) == 1).all())
    assert len({tuple(c) for c in configs.argmax(-1).tolist()}) == 64


def test_guard_raises_past_the_limit():
    assert check_categorical_enumerable(3, 4, max_configurations=64) == 64
    with pytest.raises(EnumerationTooLarge, match=r"4\^4 = 256 configurations"):
        check_categorical_enumerable(4, 4, max_configurations=100)
    toy = CategoricalToy.seeded(4, 4)
    with pytest.raises(EnumerationTooLarge):
        categorical_exact_gradient(toy, toy.example_batch(), max_configurations=100)


def test_atoms_lie_in_their_cells_and_carry_their_probability():
    toy = CategoricalToy.seeded(2, 4, seed=3)
    prepared = toy.prepare(toy.example_batch())
    with torch.no_grad():  # toy logits with a wide spread, to stress the representative point
        prepared.logits = prepared.logits * 6
    configs = categorical_configurations(4, 4, 0, 256)  # 2 copies x 2 gates
    noise, weight = enumeration_atoms(prepared, 2, configs)
    assert noise.shape == (256, 2, 1, 2, 4)
    assert bool(((noise >= 0) & (noise < 1)).all())
    gates = categorical_gates(prepared.logits, noise)
    assert torch.equal(gates.view(256, 4, 4), configs)
    assert abs(float(weight.sum()) - 1) < 1e-12
