"""Top-k gates: Gumbel-top-k draws, the Plackett-Luce law P(S), relaxation, `topk-toy` specs."""

import itertools
import math

import pytest
import torch
from scipy import stats

from estimator_lab.graphs.topk import (
    MAX_CHOSEN,
    TopKToy,
    inclusion_probabilities,
    parse_topk_toy,
    relaxed_topk,
    topk_gates,
    topk_log_prob,
    topk_subsets,
)


def _logits(k=5, seed=3):
    return torch.randn(k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _law_by_orderings(logits, subset):
    """P(S) written out from its definition: successive softmax draws without replacement."""
    total = 0.0
    weights = logits.exp().tolist()
    for order in itertools.permutations(subset):
        prob, remaining = 1.0, sum(weights)
        for j in order:
            prob *= weights[j] / remaining
            remaining -= weights[j]
        total += prob
    return total


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_law_sums_to_one_and_matches_its_definition(k):
    logits = _logits()
    subsets = topk_subsets(5, k)
    assert subsets.shape == (math.comb(5, k), 5)
    probs = topk_log_prob(logits, subsets, k).exp()
    assert abs(float(probs.sum()) - 1) < 1e-12
    for mask, prob in zip(subsets, probs, strict=True):
        subset = mask.nonzero().flatten().tolist()
        assert abs(float(prob) - _law_by_orderings(logits, subset)) < 1e-13


def test_k1_is_the_softmax():
    logits = _logits()
    probs = topk_log_prob(logits, torch.eye(5, dtype=torch.float64), 1).exp()
    assert torch.allclose(probs, torch.softmax(logits, -1), rtol=0, atol=1e-15)
    assert torch.allclose(inclusion_probabilities(logits, 1), torch.softmax(logits, -1),
                          rtol=0, atol=1e-15)


def test_two_of_three_closed_form():
    logits = _logits(3)
    p = torch.softmax(logits, -1).tolist()
    for i, j in itertools.combinations(range(3), 2):
        mask = torch.zeros(3, dtype=torch.float64)
        mask[[i, j]] = 1
        expected = p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j])
        assert abs(float(topk_log_prob(logits, mask, 2).exp()) - expected) < 1e-15


@pytest.mark.statistical
def test_gumbel_top_k_draws_follow_the_law():
    # 200,000 draws of 2 of 5 (10 subsets); Pearson chi-square with 9 degrees of freedom,
    # rejected at p < 1e-4: false-failure rate 1e-4. Per-subset z-tests at |z| < 5 add at most
    # 10 * 5.7e-7 (normal approximation of a binomial count).
    n, k = 200_000, 2
    logits = _logits()
    u = torch.rand(n, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    masks = topk_gates(logits, u, k)
    assert torch.equal(masks.sum(-1), torch.full((n,), float(k), dtype=torch.float64))
    subsets = topk_subsets(5, k)
    counts = (masks @ subsets.T == k).sum(0).double()
    assert int(counts.sum()) == n
    expected = n * topk_log_prob(logits, subsets, k).exp()
    chi2 = float(((counts - expected).square() / expected).sum())
    assert stats.chi2.sf(chi2, df=len(subsets) - 1) > 1e-4
    p = expected / n
    z = (counts / n - p) / (p * (1 - p) / n).sqrt()
    assert float(z.abs().max()) < 5


def test_inclusion_probabilities_sum_to_k_and_match_the_law():
    logits = _logits()
    pi = inclusion_probabilities(logits, 3)
    assert abs(float(pi.sum()) - 3) < 1e-12
    subsets = topk_subsets(5, 3)
    probs = topk_log_prob(logits, subsets, 3).exp()
    assert abs(float(pi[2]) - float(probs[subsets[:, 2] > 0].sum())) < 1e-15


def test_log_prob_is_vmappable_and_stable_in_float32():
    logits = torch.randn(7, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u = torch.rand(7, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    masks = topk_gates(logits, u, 3)
    plain = topk_log_prob(logits, masks, 3)
    mapped = torch.func.vmap(lambda t, m: topk_log_prob(t, m, 3))(logits, masks)
    assert torch.allclose(plain, mapped, rtol=0, atol=1e-14)
    single = topk_log_prob(logits.float(), masks.float(), 3)
    assert torch.allclose(single.double(), plain, rtol=0, atol=1e-5)
    scaled = topk_log_prob(30 * logits, masks, 3)  # peaked logits: finite, at most 0
    assert bool(torch.isfinite(scaled).all()) and float(scaled.max()) <= 0


def test_relaxation_sums_to_k_and_hardens_as_temperature_falls():
    logits = _logits(6)
    u = torch.rand(50, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    scores = logits + -torch.log(-torch.log(u))
    for tau in (2.0, 0.5):
        soft = relaxed_topk(scores, 3, tau)
        assert torch.allclose(soft.sum(-1), torch.full((50,), 3.0, dtype=torch.float64),
                              rtol=0, atol=1e-12)
        assert float(soft.min()) >= 0
    hard = topk_gates(logits, u, 3)
    ordered = scores.sort(-1, descending=True).values
    clear = (ordered[:, :-1] - ordered[:, 1:]).min(-1).values > 0.05  # no near-ties
    assert int(clear.sum()) > 25
    error = (relaxed_topk(scores, 3, 1e-3) - hard).abs()[clear]
    assert float(error.max()) < 1e-6


def test_topk_toy_with_k1_is_cat_toy_loss():
    toy = TopKToy(_logits(4).view(1, 4), num_chosen=1, target=0.3)
    prepared = toy.prepare(toy.example_batch())
    losses = toy.loss(prepared, torch.eye(4, dtype=torch.float64).view(4, 1, 1, 4))
    expected = (torch.arange(4, dtype=torch.float64) / 3 - 0.3).square().view(4, 1)
    assert torch.allclose(losses, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": "abc"}, "k must be int"),
        ({"classes": "1"}, "at least 2 classes"),
        ({"classes": "4", "k": "4"}, "1 <= k < 4"),
        ({"classes": "12", "k": str(MAX_CHOSEN + 1)}, f"at most k={MAX_CHOSEN}"),
        ({"n": "0"}, "n >= 1"),
        ({"t": "nan"}, "finite"),
        ({"batch": "0"}, "batch must be >= 1"),
    ],
)
def test_bad_specs_say_why_in_one_line(options, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_topk_toy(options, max_configurations=2**22)
    assert "\n" not in str(info.value)


def test_size_guard_refuses_before_building():
    with pytest.raises(ValueError, match="C\\(20,3\\)\\^1000000000 configurations") as info:
        parse_topk_toy({"n": "1000000000", "classes": "20", "k": "3"}, max_configurations=2**22)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="C\\(4,2\\)\\^3 = 216 configurations, more than"):
        parse_topk_toy({"n": "3", "classes": "4", "k": "2"}, max_configurations=215)
    options = {"n": "2", "classes": "4", "k": "2", "extra": "1"}
    graph, (x,) = parse_topk_toy(options, max_configurations=36)
    assert options == {"extra": "1"} and graph.num_configurations == 36 and x.shape == (1, 0)
