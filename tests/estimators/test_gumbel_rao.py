"""Bernoulli Gumbel-Rao: the two-class case of the categorical estimator, draw by draw; the mean of
`st-gumbel` (exact, by quadrature) whatever `M`, and a smaller variance; and the question of
differentiating through the conditional Gumbels, settled here for Bernoulli gates too.

Note [Randomized statistical tests]: seeded. The z-tests are |z| < 5 on one coordinate each
(a false-failure rate below 6e-7 per test, normal approximation of a mean of 200,000 draws).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.estimators import gumbel_rao as gumbel_rao_module
from estimator_lab.estimators.categorical import get_categorical_estimator
from estimator_lab.exact import exact_moments
from estimator_lab.exact.categorical import enumeration_atoms
from estimator_lab.graphs.categorical import (
    CategoricalToy,
    categorical_gates,
    conditional_gumbel,
)
from estimator_lab.graphs.toy import ToyGraph
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.noise import uniform_noise


def test_bernoulli_draws_are_the_two_class_categorical_draws():
    # Gate i on (u_i < p_i) is class 1 of a categorical with logits (0, a_i); the categorical
    # conditional pairs are the Bernoulli pairs in (off, on) order. ToyGraph sums over its 3
    # gates where cat-toy averages, hence the factor 3. Deterministic (rounding only).
    logits = torch.tensor([0.7, -1.2, 0.1], dtype=torch.float64)
    toy = ToyGraph(logits, target=0.3)
    two_class = CategoricalToy(torch.stack([torch.zeros(3), logits], -1), target=0.3)
    bernoulli = get_estimator("gumbel-rao", temperature=0.7, num_samples=4)
    categorical = get_categorical_estimator("gumbel-rao", temperature=0.7, num_samples=4)
    noise = uniform_noise(3, range(200), (9, 1, 3), dtype=torch.float64)  # 1 + 2M, B, G
    gates = (noise[:, 0] < torch.sigmoid(logits)).to(torch.float64)  # 200 x 1 x 3
    one_hot = torch.stack([1 - gates, gates], -1)  # 200 x 1 x 3 x 2: class 1 is "on"
    prepared = two_class.prepare(two_class.example_batch())
    sample = enumeration_atoms(prepared, 200, one_hot.reshape(1, 600, 2))[0].view(200, 1, 3, 2)
    pairs = noise[:, 1:].unflatten(1, (4, 2)).flip(2).movedim(2, -1)  # 200 x M x 1 x 3 x 2
    cat_noise = torch.cat([sample.unsqueeze(1), pairs], 1)
    assert torch.equal(categorical_gates(prepared.logits, cat_noise[:, 0]), one_hot)
    binary = gradient_draws(toy, bernoulli, toy.example_batch(), noise)["theta"]
    draws = gradient_draws(two_class, categorical, two_class.example_batch(), cat_noise)["theta"]
    assert torch.allclose(binary, 3 * draws[..., 1], rtol=0, atol=1e-14)
    assert torch.allclose(binary, -3 * draws[..., 0], rtol=0, atol=1e-14)


def _draws(estimator, toy, num_draws, seed):
    shape = estimator.noise_shape(toy, toy.prepare(toy.example_batch()))
    noise = uniform_noise(seed, range(num_draws), shape, dtype=torch.float64)
    return gradient_draws(toy, estimator, toy.example_batch(), noise)["theta"][:, 0]


def _st_gumbel_given_the_gate(toy, temperature, nodes):
    """`P(b)`, `E[st-gumbel draw | b]` and `Var[st-gumbel draw | b]` for b = 1, 0 on a one-gate
    toy: Gauss-Legendre with `nodes` nodes on each gate's cell of `u`, `[0, p)` and `[p, 1)`."""
    estimator = get_estimator("st-gumbel", temperature=temperature)
    p = float(torch.sigmoid(toy.theta.detach()[0]))
    x, w = np.polynomial.legendre.leggauss(nodes)
    result = []
    for low, high in ((0.0, p), (p, 1.0)):
        u = torch.as_tensor(low + (high - low) * (x + 1) / 2).view(-1, 1, 1)
        draws = gradient_draws(toy, estimator, toy.example_batch(), u)["theta"][:, 0]
        weight = torch.as_tensor(w / 2)
        mean = float((weight * draws).sum())
        result.append((high - low, mean, float((weight * (draws - mean).square()).sum())))
    return result


@pytest.mark.statistical
@pytest.mark.parametrize("num_samples", [1, 10])
def test_the_mean_is_st_gumbel_exact_mean_and_the_variance_is_rao_blackwells(num_samples):
    # Given b, the M conditional terms are i.i.d. copies of st-gumbel's draw given b, so
    # E = E[st-gumbel] and Var_M = Var_b(E[st | b]) + E_b[Var(st | b)] / M, both exact here
    # (1-D quadrature per cell, converged: 32 and 64 nodes agree to 1e-12). Mean: |z| < 5 with
    # the sample standard error; variance: |z| < 5 with the fourth-moment standard error.
    toy = ToyGraph([0.8], target=0.45)
    cells = _st_gumbel_given_the_gate(toy, 0.5, 64)
    coarse = _st_gumbel_given_the_gate(toy, 0.5, 32)
    assert max(abs(a - b) for c, d in zip(cells, coarse, strict=True)
               for a, b in zip(c, d, strict=True)) < 1e-12
    mean = sum(q * m for q, m, _ in cells)
    variance = (sum(q * (m - mean) ** 2 for q, m, _ in cells)
                + sum(q * v for q, _, v in cells) / num_samples)
    exact = exact_moments(toy, get_estimator("st-gumbel", temperature=0.5), toy.example_batch())
    assert abs(float(exact.mean["theta"]) - mean) < 1e-9  # the library's own quadrature
    draws = _draws(get_estimator("gumbel-rao", temperature=0.5, num_samples=num_samples), toy,
                   200_000, seed=4)
    n = draws.numel()
    assert abs(float(draws.mean()) - mean) / math.sqrt(float(draws.var()) / n) < 5
    fourth = float((draws - draws.mean()).pow(4).mean())
    assert abs(float(draws.var()) - variance) / math.sqrt((fourth - variance**2) / n) < 5
    if num_samples > 1:
        assert variance < float(exact.variance["theta"])  # below st-gumbel's


@pytest.mark.statistical
def test_differentiating_through_the_conditional_gumbels_changes_the_mean(monkeypatch):
    # The same estimator with x~(a, b, v) differentiated (conditional_gumbel instead of the
    # held-fixed scores): its mean is many standard errors off st-gumbel's exact mean, which
    # the held-fixed estimator matches (previous test). Here the exact mean is 0.0585, the
    # differentiated one's about half of it, some 250 standard errors (1.2e-4) away.
    toy = ToyGraph([0.8], target=0.45)
    exact = exact_moments(toy, get_estimator("st-gumbel", temperature=0.5), toy.example_batch())
    monkeypatch.setattr(gumbel_rao_module, "fixed_conditional_scores", conditional_gumbel)
    draws = _draws(get_estimator("gumbel-rao", temperature=0.5, num_samples=1), toy, 200_000,
                   seed=4)
    z = (float(draws.mean()) - float(exact.mean["theta"])) / math.sqrt(
        float(draws.var()) / draws.numel())
    assert abs(z) > 20


def test_bad_num_samples_are_refused():
    with pytest.raises(ValueError, match="num_samples >= 1"):
        get_estimator("gumbel-rao", num_samples=0)
