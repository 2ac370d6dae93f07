"""Categorical gates and the `cat-toy` graph: sampling law, log-probability, spec errors."""

import math

import pytest
import torch

from estimator_lab.configurations import EnumerationTooLarge
from estimator_lab.graphs.categorical import (
    CategoricalToy,
    categorical_gates,
    categorical_log_prob,
    conditional_gumbel,
    gumbel_noise,
    gumbel_uniforms,
    parse_cat_toy,
    softmax_jacobian_product,
)

EULER_GAMMA = 0.5772156649015329


def _logits():
    return torch.tensor([0.3, -1.2, 1.1, 0.0], dtype=torch.float64)


@pytest.mark.statistical
def test_gumbel_max_draws_each_class_with_softmax_probability():
    # 200,000 draws; per-class z-tests at |z| < 5 over 4 classes: false-failure rate
    # below 4 * 5.7e-7 (normal approximation of a binomial count).
    n = 200_000
    logits = _logits()
    u = torch.rand(n, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gates = categorical_gates(logits, u)
    assert torch.equal(gates.sum(-1), torch.ones(n, dtype=torch.float64))
    p = torch.softmax(logits, -1)
    z = (gates.mean(0) - p) / (p * (1 - p) / n).sqrt()
    assert float(z.abs().max()) < 5


def test_log_prob_matches_torch_distributions():
    logits = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u = torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gates = categorical_gates(logits, u)
    expected = torch.distributions.Categorical(logits=logits).log_prob(gates.argmax(-1))
    assert torch.allclose(categorical_log_prob(logits, gates), expected, rtol=0, atol=1e-14)


def test_softmax_jacobian_product_is_the_softmax_jacobian():
    logits = _logits()
    vector = torch.tensor([0.5, -2.0, 1.0, 3.0], dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, -1), logits)
    expected = jacobian @ vector
    assert torch.allclose(softmax_jacobian_product(torch.softmax(logits, -1), vector), expected,
                          rtol=0, atol=1e-15)


def test_gumbel_uniforms_invert_gumbel_noise():
    logits = _logits()
    u = torch.tensor([0.1, 0.5, 0.9, 0.999], dtype=torch.float64)
    assert torch.allclose(gumbel_uniforms(logits, logits + gumbel_noise(u)), u, rtol=1e-12)


@pytest.mark.statistical
def test_conditional_gumbel_has_the_law_of_the_scores_given_the_argmax():
    # Unconditional Gumbel-max scores restricted to draws with argmax j against conditional
    # samples: per-coordinate mean comparisons (two-sample z, |z| < 5 on 4 coordinates,
    # false-failure rate below 4 * 5.7e-7); the top score is Gumbel(logsumexp) + gamma in mean.
    logits = _logits()
    generator = torch.Generator().manual_seed(3)
    scores = logits + gumbel_noise(torch.rand(400_000, 4, generator=generator, dtype=torch.float64))
    j = 1  # the least likely class (p = 0.08)
    kept = scores[scores.argmax(-1) == j]
    gates = torch.zeros(4, dtype=torch.float64)
    gates[j] = 1
    v = torch.rand(100_000, 4, generator=generator, dtype=torch.float64)
    conditional = conditional_gumbel(logits, gates, v)
    assert bool((conditional.argmax(-1) == j).all())
    difference = conditional.mean(0) - kept.mean(0)
    se = (conditional.var(0) / len(conditional) + kept.var(0) / len(kept)).sqrt()
    assert float((difference / se).abs().max()) < 5
    top_se = math.pi / math.sqrt(6) / math.sqrt(len(conditional))
    top_z = (conditional[:, j].mean() - torch.logsumexp(logits, -1) - EULER_GAMMA) / top_se
    assert abs(float(top_z)) < 5


def test_cat_toy_loss_reads_the_class_index():
    toy = CategoricalToy(torch.zeros(2, 3), target=0.25)
    prepared = toy.prepare(toy.example_batch(1))
    gates = torch.eye(3, dtype=torch.float64)[[2, 0]].unsqueeze(0)  # z = (2, 0)
    assert toy.loss(prepared, gates).item() == pytest.approx(((1 - 0.25) ** 2 + 0.25**2) / 2)


def test_category_losses_set_one_gate_to_each_class():
    toy = CategoricalToy.seeded(3, 4, 0.3, seed=5)
    prepared = toy.prepare(toy.example_batch(2))
    u = torch.rand(6, 2, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gates = categorical_gates(prepared.logits, u)
    losses = toy.category_losses(prepared, gates)
    assert losses.shape == (6, 2, 3, 4)
    for i in range(3):
        for k in range(4):
            replaced = gates.clone()
            replaced[..., i, :] = torch.eye(4, dtype=torch.float64)[k]
            assert torch.equal(losses[..., i, k], toy.loss(prepared, replaced))


def test_gate_flip_losses_refuse_categorical_gates():
    toy = CategoricalToy.seeded(2, 3)
    prepared = toy.prepare(toy.example_batch())
    with pytest.raises(NotImplementedError, match="category_losses"):
        toy.gate_flip_losses(prepared, torch.zeros(1, 2, 3, dtype=torch.float64))


def test_parse_cat_toy_builds_seeded_logits_and_consumes_its_keys():
    options = {"n": "3", "k": "4", "t": "0.45", "batch": "2", "q": "1"}
    graph, (x,) = parse_cat_toy(options, seed=7)
    assert graph.theta.shape == (3, 4) and graph.num_configurations == 64
    assert x.shape == (2, 0) and graph.target == 0.45
    assert options == {"q": "1"}  # left for the caller to report as unknown
    again, _ = parse_cat_toy({"n": "3", "k": "4"}, seed=7)
    assert torch.equal(graph.theta, again.theta)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"k": "1"}, ValueError, "k >= 2 classes, got k=1"),
        ({"k": "abc"}, ValueError, "k must be int, got 'abc'"),
        ({"n": "0"}, ValueError, "n >= 1 gates, got n=0"),
        ({"t": "nan"}, ValueError, "t must be finite"),
        ({"t": "inf"}, ValueError, "t must be finite"),
        ({"batch": "0"}, ValueError, "batch must be >= 1"),
        ({"n": "12", "k": "5"}, EnumerationTooLarge, "5^12 = 244,140,625 configurations"),
    ],
)
def test_parse_cat_toy_rejects_bad_specs_in_one_line(options, error, message):
    with pytest.raises(error, match=message.replace("^", r"\^")) as info:
        parse_cat_toy(options)
    assert "\n" not in str(info.value)
