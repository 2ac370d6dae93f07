"""Categorical estimators against exact enumeration: unbiasedness, exact moments vs Monte Carlo,
known closed forms, and the Gumbel-Rao question (are the conditional Gumbels differentiated?)."""

import math

import numpy as np
import pytest
import torch

from estimator_lab.estimators import available, get_estimator
from estimator_lab.estimators.categorical import (
    available_categorical,
    estimator_for,
    get_categorical_estimator,
)
from estimator_lab.estimators.categorical.gumbel import GumbelRao
from estimator_lab.estimators.categorical.straight_through import gapped_logits
from estimator_lab.estimators.prepare import warmed_up_state
from estimator_lab.exact.categorical import (
    categorical_configurations,
    categorical_exact_gradient,
    categorical_exact_moments,
    enumeration_atoms,
)
from estimator_lab.graphs.categorical import (
    CategoricalToy,
    categorical_gates,
    conditional_gumbel,
    softmax_jacobian_product,
)
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.noise import uniform_noise
from estimator_lab.testing.categorical_contract import categorical_probe

UNBIASED = ["indecater", "local-expectation", "reinforce", "reinforce-optimal", "rloo"]
DISCRETE = [n for n in available_categorical() if get_categorical_estimator(n).discrete_noise]


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def _monte_carlo(graph, estimator, batch, num_draws, seed, state=None):
    """`num_draws x d` draws (every tracked tensor flattened), in chunks of 2000."""
    with torch.no_grad():
        shape = estimator.noise_shape(graph, graph.prepare(batch))
    rows = []
    for start in range(0, num_draws, 2000):
        noise = uniform_noise(seed, range(start, min(start + 2000, num_draws)), shape,
                              dtype=torch.float64)
        draws = gradient_draws(graph, estimator, batch, noise, state=state)
        rows.append(torch.cat([d.reshape(d.shape[0], -1) for d in draws.values()], 1))
    return torch.cat(rows)


def test_names_dispatch_on_the_graph_distribution_and_leave_the_bernoulli_registry_alone():
    assert {"reinforce", "rloo", "st", "reinmax", "gumbel-rao", "gst", "indecater"} <= set(
        available_categorical())
    assert estimator_for("reinforce", "categorical").distribution == "categorical"
    assert type(estimator_for("reinforce", "bernoulli")) is type(get_estimator("reinforce"))
    assert all(get_estimator(n).distribution != "categorical" for n in available()
               if n not in ("reinforce-oracle",))
    with pytest.raises(KeyError, match="did you mean gumbel-rao"):
        get_categorical_estimator("gumbel-roa")


@pytest.mark.parametrize("name", UNBIASED)
def test_unbiased_estimators_have_the_exact_gradient_as_exact_mean(name):
    # Deterministic: enumeration of every configuration, float64, on the non-separable probe.
    graph, batch = categorical_probe()
    estimator = get_categorical_estimator(name)
    state = warmed_up_state(estimator, graph, batch, warmup_steps=50, seed=3)
    _, exact = categorical_exact_gradient(graph, batch)
    moments = categorical_exact_moments(graph, estimator, batch, state=state)
    difference = (_flat(moments.mean) - _flat(exact)).abs().max()
    assert float(difference) < 1e-12 * float(_flat(exact).abs().max())


@pytest.mark.statistical
@pytest.mark.parametrize("name", ["reinforce", "rloo", "indecater"])
def test_unbiased_estimators_monte_carlo_mean_matches_the_closed_form(name):
    # 20,000 draws on cat-toy:n=3,k=4,t=0.45; per-coordinate |z| < 5 on 24 coordinates
    # (gate logits and theta of one example): false-failure rate below 24 * 5.7e-7. The
    # standard error of REINFORCE's mean is at most 0.006 here, so a bias of 0.03 (a tenth of
    # the largest gradient coordinate) would be caught. IndeCateR has zero variance on this
    # separable loss: its draws must equal the closed form to rounding.
    toy = CategoricalToy.seeded(3, 4, 0.45)
    batch = toy.example_batch()
    estimator = get_categorical_estimator(name)
    draws = _monte_carlo(toy, estimator, batch, 20_000, seed=11)
    closed = toy.true_gradient()["theta"].reshape(-1)
    truth = torch.cat([closed, closed])  # gate logits (B = 1) and theta
    se = draws.std(0) / math.sqrt(draws.shape[0])
    rounding = 1e-14 * float(truth.abs().max())
    z = (draws.mean(0) - truth) / (se + rounding)
    assert float(z.abs().max()) < 5


@pytest.mark.statistical
@pytest.mark.parametrize("name", DISCRETE)
def test_exact_moments_agree_with_monte_carlo(name):
    # 10,000 draws on the probe graph (74 coordinates). Mean: z with the exact standard error;
    # variance: z with the sample fourth moment's standard error of the sample variance.
    # Both |z| < 5: over the 8 estimators and 2 x 74 tests each, the false-failure rate is below
    # 1184 * 5.7e-7 = 7e-4 (normal approximations).
    graph, batch = categorical_probe()
    estimator = get_categorical_estimator(name)
    state = warmed_up_state(estimator, graph, batch, warmup_steps=50, seed=3)
    moments = categorical_exact_moments(graph, estimator, batch, state=state)
    mean, variance = _flat(moments.mean), _flat(moments.variance)
    draws = _monte_carlo(graph, estimator, batch, 10_000, seed=5, state=state)
    n = draws.shape[0]
    live = variance > 1e-24  # the unused parameter's draws are exactly zero
    assert bool((draws[:, ~live] == mean[~live]).all())
    z_mean = (draws.mean(0) - mean)[live] / (variance[live] / n).sqrt()
    centred = draws - draws.mean(0)
    fourth = centred.pow(4).mean(0)
    sample_variance = centred.square().sum(0) / (n - 1)
    variance_se = ((fourth - variance.square())[live] / n).sqrt()
    z_variance = (sample_variance - variance)[live] / variance_se
    assert float(z_mean.abs().max()) < 5
    assert float(z_variance.abs().max()) < 5


class _LinearToy(CategoricalToy):
    """cat-toy's loss written linearly in the one-hot: `(1/N) sum_ij D_ij v_j` (same values on
    the vertices, so the same expected loss and closed-form gradient)."""

    def loss(self, prepared, gates):
        values = (self.class_values() - self.target).square()
        return (gates * values).sum(-1).mean(-1)


@pytest.mark.parametrize("name", ["st", "reinmax"])
def test_straight_through_and_reinmax_are_exact_for_a_loss_linear_in_the_one_hot(name):
    toy = _LinearToy(CategoricalToy.seeded(3, 4, 0.3).theta.detach(), 0.3)
    moments = categorical_exact_moments(toy, get_categorical_estimator(name), toy.example_batch())
    closed = toy.true_gradient()["theta"]
    assert float((moments.mean["theta"] - closed).abs().max()) < 1e-15
    if name == "st":  # J(p) v whatever the sample
        assert float(moments.variance["theta"].max()) < 1e-30
    # cat-toy's own loss is quadratic in the one-hot: straight-through is biased there
    quadratic = CategoricalToy(toy.theta.detach(), 0.3)
    moments = categorical_exact_moments(quadratic, get_categorical_estimator("st"),
                                        quadratic.example_batch())
    assert float((moments.mean["theta"] - closed).abs().max()) > 1e-3


def test_reinmax_is_exact_on_the_quadratic_toy_and_biased_on_the_cubic_probe():
    # At tau = 1, E[J((D + p) / 2)] = 3/4 J(p), so the mean draw is J(p) E-weighted: exact for
    # losses at most quadratic in each gate's one-hot (cat-toy); the cubic probe shows bias.
    toy = CategoricalToy.seeded(3, 4, 0.45)
    estimator = get_categorical_estimator("reinmax")
    _, exact = categorical_exact_gradient(toy, toy.example_batch())
    moments = categorical_exact_moments(toy, estimator, toy.example_batch())
    assert float((moments.mean["theta"] - exact["theta"]).abs().max()) < 1e-15
    assert float(moments.variance["theta"].max()) > 1e-6  # exact, but not constant
    graph, batch = categorical_probe()
    _, exact = categorical_exact_gradient(graph, batch)
    moments = categorical_exact_moments(graph, estimator, batch)
    bias = float((_flat(moments.mean) - _flat(exact)).norm() / _flat(exact).norm())
    assert bias > 1e-3
    hot = get_categorical_estimator("reinmax", temperature=2.0)
    moments = categorical_exact_moments(toy, hot, toy.example_batch())
    _, exact = categorical_exact_gradient(toy, toy.example_batch())
    assert float((moments.mean["theta"] - exact["theta"]).abs().max()) > 1e-4


def test_gapped_logits_put_the_sample_on_top_by_the_gap():
    logits = torch.randn(50, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    index = torch.randint(0, 5, (50,), generator=torch.Generator().manual_seed(1))
    gates = torch.eye(5, dtype=torch.float64)[index]
    perturbed = gapped_logits(logits, gates, gap=1.0)
    chosen = (perturbed * gates).sum(-1)
    others = perturbed.masked_fill(gates > 0, -math.inf).max(-1).values
    assert bool((perturbed.argmax(-1) == index).all())
    assert bool((chosen - others >= 1.0 - 1e-12).all())
    # the sampled class is raised to the top log-probability exactly
    top = torch.log_softmax(logits, -1).max(-1).values
    assert torch.allclose(chosen, top, rtol=0, atol=1e-14)


def test_optimal_baseline_reduces_reinforce_variance():
    # Exact variances (enumeration) on the probe, after 200 warm-up updates of the averages.
    graph, batch = categorical_probe()
    plain = categorical_exact_moments(graph, get_categorical_estimator("reinforce"), batch)
    estimator = get_categorical_estimator("reinforce-optimal")
    state = warmed_up_state(estimator, graph, batch, warmup_steps=200, seed=0)
    centred = categorical_exact_moments(graph, estimator, batch, state=state)
    total = lambda m: float(m.variance["gate_logits"].sum())  # noqa: E731
    assert total(centred) < 0.5 * total(plain)


class _GumbelRaoThroughConditional(GumbelRao):
    """Gumbel-Rao differentiating through the conditional sampler `x~(theta, D, v)`."""

    def conditional_scores(self, logits, gates, noise):
        return conditional_gumbel(logits, gates, noise)


def _gumbel_rao_mean(estimator, toy, batch, nodes):
    """`E[draw]` for `M = 1`: enumeration of `D` times a Gauss-Laguerre rule in the
    exponentials `E = -log v` of the conditional Gumbels (`K` dims, `nodes` per dim)."""
    k = toy.num_classes
    x, w = np.polynomial.laguerre.laggauss(nodes)
    grid = np.stack([g.ravel() for g in np.meshgrid(*[x] * k, indexing="ij")], -1)
    weight = np.prod(np.stack([g.ravel() for g in np.meshgrid(*[w] * k, indexing="ij")], -1), -1)
    v = torch.exp(-torch.as_tensor(grid)).view(-1, 1, 1, 1, k)
    weight = torch.as_tensor(weight).view(-1, 1, 1)
    prepared = toy.prepare(batch)
    total = 0
    for j in range(k):
        sample, p = enumeration_atoms(prepared, 1, categorical_configurations(1, k, j, j + 1))
        noise = torch.cat([sample.view(1, 1, 1, 1, k).expand_as(v), v], 1)  # atoms x 2 x 1 x 1 x K
        draws = gradient_draws(toy, estimator, batch, noise)["theta"]
        total = total + p * (weight * draws).sum(0)
    return total


@pytest.mark.statistical
def test_gumbel_rao_holds_the_conditional_gumbels_fixed():
    # Settles the question by quadrature: E[Gumbel-Rao] must equal E[ST-Gumbel] (Rao-Blackwell).
    # ST-Gumbel's mean from 100,000 draws (standard errors 7e-5 to 5e-4). The quadrature
    # converges slowly (log singularities of the Gumbels at E -> 0; the change halves about
    # every 4 nodes): it must move by less than a tenth of a standard error between 24 and 32
    # nodes per dim (it moves by 4e-6), which bounds its remaining error to a fraction of a
    # standard error, so it does not matter to z. Held fixed: |z| < 5 on 3 coordinates
    # (false-failure rate below 2e-6); differentiated through: off by more than 20 standard
    # errors (about 100 here).
    toy = CategoricalToy(torch.tensor([[0.4, -0.3, 0.9]], dtype=torch.float64), target=0.45)
    batch = toy.example_batch()
    fixed = _gumbel_rao_mean(GumbelRao(1.0, num_samples=1), toy, batch, 32)
    coarse = _gumbel_rao_mean(GumbelRao(1.0, num_samples=1), toy, batch, 24)
    through = _gumbel_rao_mean(_GumbelRaoThroughConditional(1.0, num_samples=1), toy, batch, 32)
    draws = _monte_carlo(toy, get_categorical_estimator("st-gumbel"), batch, 100_000, seed=2)
    st_mean, se = draws[:, 3:].mean(0), draws[:, 3:].std(0) / math.sqrt(draws.shape[0])
    assert bool(((fixed - coarse).reshape(-1).abs() < se / 10).all())
    assert float(((fixed.reshape(-1) - st_mean) / se).abs().max()) < 5
    assert float(((through.reshape(-1) - st_mean) / se).abs().max()) > 20


def test_gst_draw_is_the_softmax_jacobian_at_the_gapped_point_times_dl_dd():
    # g_theta = J(s) dL/dD / tau, s = softmax(gapped_logits / tau): cat-toy's dL/dD_ij is
    # 2 (z_i/(K-1) - t) c_j / N at the sampled gates. Deterministic (rounding only).
    toy = CategoricalToy.seeded(3, 4, 0.45, seed=1)
    estimator = get_categorical_estimator("gst", temperature=0.7, gap=1.0)
    noise = uniform_noise(0, range(20), (1, 3, 4), dtype=torch.float64)
    draws = gradient_draws(toy, estimator, toy.example_batch(), noise)["theta"]
    logits = toy.theta.detach()
    gates = categorical_gates(logits, noise[:, 0])  # 20 x 3 x 4
    values = toy.class_values()
    d_loss = 2 * ((gates * values).sum(-1, keepdim=True) - 0.45) * values / 3
    soft = torch.softmax(gapped_logits(logits, gates, 1.0) / 0.7, -1)
    expected = softmax_jacobian_product(soft, d_loss) / 0.7
    assert torch.allclose(draws, expected, rtol=0, atol=1e-14)
