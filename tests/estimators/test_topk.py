"""Top-k estimators against exact enumeration: reinforce/rloo unbiased, st/relaxed biased."""

import pytest
import torch

from estimator_lab.estimators.categorical import get_categorical_estimator
from estimator_lab.estimators.topk import available_topk, get_topk_estimator
from estimator_lab.exact.moments import NotComputable
from estimator_lab.exact.topk import topk_exact_gradient, topk_exact_moments
from estimator_lab.graphs.base import PreparedBatch
from estimator_lab.graphs.categorical import CategoricalToy
from estimator_lab.graphs.topk import TopKGraph, TopKToy
from estimator_lab.montecarlo.engine import gradient_draws


class LinearTopK(TopKGraph):
    """`L = sum_ij w_ij m_ij`: straight-through through `pi` is exact on it."""

    def __init__(self, logits, weights, num_chosen):
        super().__init__()
        self.theta = torch.nn.Parameter(logits.clone())
        self.weights = weights
        self.num_gates, self.num_classes = logits.shape
        self.num_chosen = num_chosen

    def prepare(self, batch):
        return PreparedBatch(logits=self.theta.expand(batch[0].shape[0], -1, -1))

    def loss(self, prepared, gates):
        return (gates * self.weights).sum((-2, -1))


def _toy():
    toy = TopKToy.seeded(2, 4, 2, target=0.3, seed=5)
    return toy, toy.example_batch(2)


def _uniforms(estimator, graph, batch, num_draws, seed):
    shape = estimator.noise_shape(graph, graph.prepare(batch))
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(num_draws, *shape, generator=generator, dtype=torch.float64)


def test_registry_lists_the_four_families_and_explains_unknown_names():
    assert {"reinforce", "rloo", "st", "relaxed", "st-relaxed"} <= set(available_topk())
    with pytest.raises(KeyError, match="did you mean rloo"):
        get_topk_estimator("rlo")
    toy = CategoricalToy.seeded(1, 3)
    with pytest.raises(ValueError, match="needs top-k gates"):
        get_topk_estimator("reinforce").noise_shape(toy, toy.prepare(toy.example_batch()))


@pytest.mark.parametrize("name", ["reinforce", "rloo"])
def test_exact_mean_of_score_function_estimators_is_the_exact_gradient(name):
    toy, batch = _toy()
    _, exact = topk_exact_gradient(toy, batch)
    moments = topk_exact_moments(toy, get_topk_estimator(name), batch)
    for key in ("theta", "gate_logits"):
        assert torch.allclose(moments.mean[key], exact[key], rtol=0, atol=1e-13)


@pytest.mark.statistical
@pytest.mark.parametrize("name", ["reinforce", "rloo"])
def test_monte_carlo_draws_agree_with_exact_moments(name):
    # 20,000 draws; per-coordinate z-tests of the mean at |z| < 5 over 8 coordinates: false-
    # failure rate below 8 * 5.7e-7 (CLT). Variances within 15% (a 4th-moment bound: the
    # relative standard error of the sample variance is below 2% here, so 15% is > 7 SE).
    toy, batch = _toy()
    estimator = get_topk_estimator(name)
    exact = topk_exact_moments(toy, estimator, batch)
    draws = gradient_draws(toy, estimator, batch, _uniforms(estimator, toy, batch, 20_000, 1))
    theta = draws["theta"]
    z = (theta.mean(0) - exact.mean["theta"]) / (exact.variance["theta"] / len(theta)).sqrt()
    assert float(z.abs().max()) < 5
    ratio = theta.var(0) / exact.variance["theta"]
    assert float((ratio - 1).abs().max()) < 0.15


def test_straight_through_is_exact_on_a_linear_loss_and_biased_on_the_toy():
    logits = torch.randn(2, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    weights = torch.randn(2, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    linear = LinearTopK(logits, weights, 2)
    batch = (torch.zeros(1, 0, dtype=torch.float64),)
    _, exact = topk_exact_gradient(linear, batch)
    st = get_topk_estimator("st")
    moments = topk_exact_moments(linear, st, batch)
    assert torch.allclose(moments.mean["theta"], exact["theta"], rtol=0, atol=1e-13)
    assert float(moments.variance["theta"].max()) < 1e-25  # dL/dm = w in every draw
    toy, batch = _toy()
    _, exact = topk_exact_gradient(toy, batch)
    bias = topk_exact_moments(toy, st, batch).mean["theta"] - exact["theta"]
    assert float(bias.norm() / exact["theta"].norm()) > 0.05


@pytest.mark.statistical
@pytest.mark.parametrize("name", ["relaxed", "st-relaxed"])
def test_relaxations_are_measurably_biased(name):
    # 20,000 draws at tau = 1: the relative bias (about 0.3 to 1 on this toy) exceeds 5
    # standard errors of the mean difference on some coordinate; an unbiased estimator
    # would pass this test with probability below 8 * 5.7e-7.
    toy, batch = _toy()
    _, exact = topk_exact_gradient(toy, batch)
    estimator = get_topk_estimator(name, temperature=1.0)
    with pytest.raises(NotComputable):
        topk_exact_moments(toy, estimator, batch)
    theta = gradient_draws(toy, estimator, batch,
                           _uniforms(estimator, toy, batch, 20_000, 2))["theta"]
    z = (theta.mean(0) - exact["theta"]) / (theta.var(0) / len(theta)).sqrt()
    assert float(z.abs().max()) > 5


@pytest.mark.parametrize(("topk_name", "categorical_name", "hyper"), [
    ("reinforce", "reinforce", {}),
    ("rloo", "rloo", {"num_samples": 3}),
    ("st", "st", {}),
    ("relaxed", "gumbel", {"temperature": 0.7}),
    ("st-relaxed", "st-gumbel", {"temperature": 0.7}),
])
def test_k1_draws_equal_the_categorical_estimators(topk_name, categorical_name, hyper):
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    topk, categorical = TopKToy(logits, 1, 0.45), CategoricalToy(logits, 0.45)
    batch = topk.example_batch(2)
    ours = get_topk_estimator(topk_name, **hyper)
    theirs = get_categorical_estimator(categorical_name, **hyper)
    noise = _uniforms(ours, topk, batch, 16, 7)
    mine = gradient_draws(topk, ours, batch, noise)
    reference = gradient_draws(categorical, theirs, batch, noise)
    for key in ("theta", "gate_logits"):
        assert torch.allclose(mine[key], reference[key], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["reinforce", "rloo", "st", "relaxed", "st-relaxed"])
def test_vmap_and_loop_draws_agree_and_are_deterministic(name):
    toy, batch = _toy()
    estimator = get_topk_estimator(name)
    noise = _uniforms(estimator, toy, batch, 6, 8)
    mapped = gradient_draws(toy, estimator, batch, noise)
    looped = gradient_draws(toy, estimator, batch, noise, method="loop")
    again = gradient_draws(toy, estimator, batch, noise)
    for key in mapped:
        assert torch.allclose(mapped[key], looped[key], rtol=0, atol=1e-13)
        assert torch.equal(mapped[key], again[key])
