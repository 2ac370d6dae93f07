"""REBAR and RELAX: the conditional reparameterisation, exact means by quadrature on one gate,
Monte Carlo tests on a few gates, RELAX's variance training, and a planted bug.

Note [Randomized statistical tests]: the tests marked `statistical` fix their seeds, so they
are deterministic; the false-failure rate stated is the probability over seeds that a correct
implementation fails. `zero_mean_test` runs Holm-corrected per-coordinate z-tests at level
`ALPHA`, so a correct estimator fails with probability at most `ALPHA` (normal approximation of
a mean of `NUM_DRAWS` draws).
"""

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from estimator_lab.estimators import get_estimator
from estimator_lab.estimators.rebar import (
    conditional_logistic,
    logistic_gates,
    logistic_sample,
)
from estimator_lab.exact import exact_gradient, exact_moments
from estimator_lab.graphs.sbn import SigmoidBeliefNet
from estimator_lab.graphs.toy import ToyGraph
from estimator_lab.montecarlo import GATE_LOGITS, Moments, run_draws, uniform_noise
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.stats import rounding_scale, zero_mean_test
from estimator_lab.testing import conditional_problem
from estimator_lab.testing.planted import RebarWithoutConditionalNoisePath

ALPHA = 1e-3  # false-failure rate of each Monte Carlo unbiasedness test
NUM_DRAWS = 4000  # the planted REBAR bug is rejected at this budget with a wide margin
GATES = 4
LOGITS = [-3.0, -0.7, 0.0, 0.4, 2.5]


def trained_relax_state(net, batch, steps: int, learning_rate: float = 1e-2, seed: int = 7):
    """RELAX and its state after `steps` variance-minimising updates on `batch`."""
    relax = get_estimator("relax", learning_rate=learning_rate)
    state = relax.init(net)
    prepared = net.prepare(batch)
    noise = uniform_noise(seed, range(steps), relax.noise_shape(net, prepared),
                          dtype=torch.float64)
    for row in noise:
        state = relax.update(state, net, prepared, row)
    return relax, state


def gauss_legendre(points: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of the Gauss-Legendre rule on `[0, 1]`."""
    nodes, weights = np.polynomial.legendre.leggauss(points)
    return torch.as_tensor((nodes + 1) / 2), torch.as_tensor(weights / 2)


# The conditional reparameterisation z~ ~ p(z | b).


@pytest.mark.parametrize("logit", LOGITS)
def test_conditional_sample_inverts_the_conditional_cdf(logit):
    """Probability integral transform, exactly: `P(z < z~ | b = 1) = v` and
    `P(z < z~ | b = 0) = 1 - v`, where `P(z < t | b = 1) = (sigmoid(t - a) - sigmoid(-a)) /
    sigmoid(a)` on `t > 0` and `P(z < t | b = 0) = sigmoid(t - a) / sigmoid(-a)` on `t < 0`.
    So `z~ | b` has the law of `z | b` for uniform `v`, and `H(z~) = b`."""
    a = torch.tensor(logit, dtype=torch.float64)
    v = torch.linspace(1e-6, 1 - 1e-6, 1001, dtype=torch.float64)
    on = conditional_logistic(a, torch.ones(()), v)
    off = conditional_logistic(a, torch.zeros(()), v)
    assert (on > 0).all() and (off < 0).all()
    upper = (torch.sigmoid(on - a) - torch.sigmoid(-a)) / torch.sigmoid(a)
    torch.testing.assert_close(upper, v, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.sigmoid(off - a) / torch.sigmoid(-a), 1 - v,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("logit", LOGITS)
def test_conditional_sample_mixes_to_the_logistic_by_quadrature(logit):
    """`P(b=1) P(z~ <= t | b=1) + P(b=0) P(z~ <= t | b=0) = sigmoid(t - a)`, the mixed CDF from
    a midpoint sum over `2^14` values of `v` (error at most `2^-14` per branch, `z~` being
    monotone in `v`)."""
    a = torch.tensor(logit, dtype=torch.float64)
    theta = torch.sigmoid(a)
    v = (torch.arange(2**14, dtype=torch.float64) + 0.5) / 2**14
    t = torch.linspace(-8, 8, 81, dtype=torch.float64).view(-1, 1)
    on = (conditional_logistic(a, torch.ones(()), v) <= t).double().mean(-1)
    off = (conditional_logistic(a, torch.zeros(()), v) <= t).double().mean(-1)
    torch.testing.assert_close(theta * on + (1 - theta) * off, torch.sigmoid(t[:, 0] - a),
                               rtol=0, atol=2**-14)


@pytest.mark.statistical
def test_conditional_sample_passes_kolmogorov_smirnov_given_each_gate_value():
    """Joint sampling as REBAR does (`b` from `u`, `z~` from `v`), then KS tests of `z~ | b = 1`
    and `z~ | b = 0` against the truncated logistic CDFs, each at level `ALPHA / 2` (false
    failure <= `ALPHA`). A mixture test alone would miss a `z~` that ignores `b`; the negative
    control (the sign bug `a -> -a` in the formula) is rejected with p < 1e-12 at the same size."""
    a = torch.tensor(0.8, dtype=torch.float64)
    u, v = uniform_noise(11, range(1), (2, 20000), dtype=torch.float64)[0]
    gates = logistic_gates(a, u)
    theta, cdf = float(torch.sigmoid(a)), scipy_stats.logistic(loc=float(a)).cdf

    def conditional_cdfs(t):
        return np.where(t > 0, (cdf(t) - (1 - theta)) / theta, cdf(t) / (1 - theta))

    def pvalues(z_tilde):
        return [scipy_stats.kstest(z_tilde[gates == b].numpy(), conditional_cdfs).pvalue
                for b in (0, 1)]

    assert min(pvalues(conditional_logistic(a, gates, v))) >= ALPHA / 2
    assert min(pvalues(conditional_logistic(-a, gates, v))) < 1e-12


@pytest.mark.parametrize("logit", LOGITS)
def test_conditional_sample_gradient_has_the_closed_form(logit):
    """`z~ = log((1 + v e^a) / (1 - v))` for `b = 1`, so `dz~/da = sigmoid(a + log v)`; for
    `b = 0`, `z~ = -log((1 + v e^{-a}) / (1 - v))` and `dz~/da = sigmoid(-a + log v)`."""
    v = torch.linspace(1e-4, 1 - 1e-4, 101, dtype=torch.float64)
    for b, sign in ((1.0, 1.0), (0.0, -1.0)):
        a = torch.full_like(v, logit, requires_grad=True)
        (grad,) = torch.autograd.grad(conditional_logistic(a, torch.tensor(b), v).sum(), a)
        torch.testing.assert_close(grad, torch.sigmoid(sign * logit + v.log()))


@pytest.mark.parametrize("logit", LOGITS)
@pytest.mark.parametrize("detach", [False, True])
def test_control_variate_correction_has_mean_zero(logit, detach):
    """The identity REBAR rests on, by quadrature over `v` (64-node Gauss-Legendre per gate
    value, exact sum over `b`) and over `u` for the right side (with `lambda = 1/2` both
    integrands are rational in the uniform, analytic on `[0, 1]`):

        sum_b P(b) (E_v[f(z~)] (b - theta) + E_v[d/da f(z~)]) = d/da E_u[f(a + logit u)],

    for the relaxed loss `f(z) = (sigmoid(z / 0.5) - 0.3)^2`. With the path through `z~`
    detached (the planted bug) the left side misses `E[d/da f(z~)]` and the identity fails."""
    nodes, weights = gauss_legendre()

    def relaxed(z):
        return (torch.sigmoid(z / 0.5) - 0.3).square()

    a = torch.tensor(logit, dtype=torch.float64, requires_grad=True)
    theta = torch.sigmoid(a).detach()
    left = torch.zeros((), dtype=torch.float64)
    for b, prob in ((1.0, theta), (0.0, 1 - theta)):
        point = a.detach() if detach else a
        mean = (weights * relaxed(conditional_logistic(point, torch.tensor(b), nodes))).sum()
        path = 0.0 if detach else torch.autograd.grad(mean, a)[0]
        left = left + prob * (mean.detach() * (b - theta) + path)
    expected = (weights * relaxed(logistic_sample(a, nodes))).sum()
    (right,) = torch.autograd.grad(expected, a)
    if detach:
        assert (left - right).abs() > 1e-3
    else:
        torch.testing.assert_close(left, right, rtol=0, atol=1e-12)


# Exact means on one gate (quadrature over (u, v)).


def one_gate_problems():
    net, batch = conditional_problem(num_gates=1, batch_size=1)
    toy = ToyGraph([0.7], target=0.45)
    return [(net, batch), (toy, toy.example_batch())]


@pytest.mark.parametrize("index", range(2))
def test_one_gate_exact_mean_is_the_gradient(index):
    """REBAR's mean over `(u, v)` equals the enumerated gradient on every coordinate, so the
    control variate correction has mean zero; so does RELAX's with a trained network; the
    planted bug's mean is off by its bias (above 1e-3). Split Gauss-Legendre: the integrands
    are smooth inside the cells, but `sigmoid(z / lambda)` behaves like `u^(1 / lambda)` at the
    ends of `(0, 1)`. For REBAR's `lambda = 1/2` the integrand is rational in `u` and 24 nodes
    per cell and dimension reach 1e-16; for RELAX's learned `lambda` convergence is algebraic
    (on the toy the error is 2.6e-10 with 24 nodes, 6.2e-12 with 48, 1.4e-13 with 96), so it
    gets 48 nodes and both get the tolerance 1e-10."""
    graph, batch = one_gate_problems()[index]
    _, gradient = exact_gradient(graph, batch)
    relax, relax_state = trained_relax_state(graph, batch, steps=30)
    assert relax_state.params["w2"].abs().min() > 0  # the network is in use
    cases = [(get_estimator("rebar"), None, 24), (relax, relax_state, 48)]
    for estimator, state, points in cases:
        moments = exact_moments(graph, estimator, batch, state=state, quadrature_points=points)
        assert moments.method == "quadrature"
        for key, value in gradient.items():
            torch.testing.assert_close(moments.mean[key], value, rtol=0, atol=1e-10,
                                       msg=f"{estimator}: {key}")
    planted = exact_moments(graph, RebarWithoutConditionalNoisePath(), batch)
    assert (planted.mean[GATE_LOGITS] - gradient[GATE_LOGITS]).abs().min() > 1e-3


def test_one_gate_variance_is_far_below_reinforces():
    """Exact variances of the gate-logit draw on one gate: REBAR (quadrature) against
    REINFORCE without baseline (enumeration)."""
    net, batch = one_gate_problems()[0]
    rebar = exact_moments(net, get_estimator("rebar"), batch).variance[GATE_LOGITS]
    reinforce = exact_moments(net, get_estimator("reinforce"), batch).variance[GATE_LOGITS]
    assert (rebar < reinforce / 10).all(), (rebar, reinforce)


# RELAX's state and updates.


def test_relax_starts_as_rebar():
    """`w2 = b2 = 0` at `init`: the same draws as REBAR with the same `lambda`, `eta`."""
    net, batch = conditional_problem(GATES)
    noise = uniform_noise(4, range(6), (2, 3, GATES), dtype=torch.float64)
    relax = get_estimator("relax", temperature=0.7, eta=0.9)
    rebar = get_estimator("rebar", temperature=0.7, eta=0.9)
    expected = gradient_draws(net, rebar, batch, noise)
    for key, value in gradient_draws(net, relax, batch, noise, state=relax.init(net)).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-12, atol=1e-15, msg=key)


def test_relax_update_lowers_the_exact_variance():
    """100 Adam steps (step size 1e-2) on `||g_a||^2` lower the exact (quadrature) gate-logit
    variance of the one-gate net by more than 4 times (measured: 5.6 times, 4.1e-3 to 7.3e-4;
    the run is deterministic); the mean stays the gradient."""
    net, batch = one_gate_problems()[0]
    _, gradient = exact_gradient(net, batch)
    relax = get_estimator("relax")
    before = exact_moments(net, relax, batch).variance[GATE_LOGITS]
    _, state = trained_relax_state(net, batch, steps=100)
    after = exact_moments(net, relax, batch, state=state, quadrature_points=48)
    assert (after.variance[GATE_LOGITS] < before / 4).all(), (before, after.variance)
    torch.testing.assert_close(after.mean[GATE_LOGITS], gradient[GATE_LOGITS], rtol=0,
                               atol=1e-10)


def test_relax_state_is_isolated_from_the_graph():
    """`update` gives no graph parameter a gradient and returns detached tensors without
    changing the old state; `surrogate` gives the state no gradient."""
    net, batch = conditional_problem(GATES)
    relax = get_estimator("relax")
    state = relax.init(net)
    old = {k: p.clone() for k, p in state.params.items()}
    noise = uniform_noise(5, range(1), (2, 3, GATES), dtype=torch.float64)[0]
    new = relax.update(state, net, net.prepare(batch), noise)
    assert all(p.grad is None for p in net.parameters())
    assert new.step == 1 and not any(p.requires_grad for p in new.params.values())
    assert not torch.equal(new.params["w2"], old["w2"])
    for key, value in state.params.items():
        assert torch.equal(value, old[key]), key
    relax.surrogate(net, net.prepare(batch), noise, new).backward()
    assert all(p.grad is not None for p in net.parameters())
    assert all(p.grad is None and not p.requires_grad for p in new.params.values())
    assert isinstance(dataclasses.replace(new), type(state))


@pytest.mark.parametrize("name", ["rebar", "relax", "planted"])
def test_vmap_and_loop_agree(name):
    net, batch = conditional_problem(GATES)
    if name == "relax":
        estimator, state = trained_relax_state(net, batch, steps=5)
    else:
        estimator = RebarWithoutConditionalNoisePath() if name == "planted" else get_estimator(
            name)
        state = None
    noise = uniform_noise(1, range(5), (2, 3, GATES), dtype=torch.float64)
    vmapped = gradient_draws(net, estimator, batch, noise, state=state, method="vmap")
    looped = gradient_draws(net, estimator, batch, noise, state=state, method="loop")
    for key, value in vmapped.items():
        torch.testing.assert_close(value, looped[key], rtol=1e-12, atol=1e-14, msg=key)
    assert not torch.allclose(vmapped[GATE_LOGITS][0], vmapped[GATE_LOGITS][1])


@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_flags_surrogate_value_and_single_layer_guard(name):
    """Flags, the `2 x B x G` noise, the surrogate's value `mean_j L_j(b)` at `b = H(z)`, and
    exactly the pathwise gradient at `b` on the parameters the loss touches directly."""
    estimator = get_estimator(name)
    assert estimator.name == name and estimator.is_unbiased and not estimator.multilayer
    assert estimator.evaluations(ToyGraph([0.0])) == 3
    net, batch = conditional_problem(GATES)
    prepared = net.prepare(batch)
    assert estimator.noise_shape(net, prepared) == (2, 3, GATES)
    noise = uniform_noise(2, range(1), (2, 3, GATES), dtype=torch.float64)[0]
    value = estimator.surrogate(net, prepared, noise, estimator.init(net))
    gates = logistic_gates(prepared.logits, noise[0])
    hard = net.loss(prepared, gates).mean()
    torch.testing.assert_close(value, hard)
    direct = [net.output.weight, net.expert.weight]
    got_grads = torch.autograd.grad(value, direct, retain_graph=True)
    for got, want in zip(got_grads, torch.autograd.grad(hard, direct), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-15)
    sbn = SigmoidBeliefNet(3, (2, 2))
    with pytest.raises(ValueError, match="one gate layer"):
        estimator.surrogate(sbn, sbn.prepare((torch.ones(1, 3),)), torch.rand(2, 1, 4), None)


# Monte Carlo on four gates.


def bias_moments(accumulator, gradient):
    """Moments of `draw - exact` over every tracked coordinate, in the accumulator's order (one
    Holm family, so a test's false-failure rate is `ALPHA`), and the rounding floor."""
    names = accumulator.names()
    mean = torch.cat([accumulator[name].mean for name in names])
    exact = torch.cat([gradient[name].flatten() for name in names])
    m2 = torch.cat([accumulator[name].m2 for name in names])
    difference = Moments(accumulator[names[0]].count, mean - exact, m2)
    return difference, rounding_scale(mean.numpy(), exact.numpy())


@pytest.fixture(scope="module")
def four_gate_draws():
    """`NUM_DRAWS` draws of REBAR, trained RELAX, the planted bug and REINFORCE, one seed."""
    net, batch = conditional_problem(GATES)
    _, gradient = exact_gradient(net, batch)
    relax, relax_state = trained_relax_state(net, batch, steps=30)
    estimators = {
        "rebar": get_estimator("rebar"), "relax": relax,
        "planted": RebarWithoutConditionalNoisePath(), "reinforce": get_estimator("reinforce"),
    }
    draws = run_draws(net, estimators, batch, num_draws=NUM_DRAWS, seed=3, chunk_size=1000,
                      states={"relax": relax_state})
    return gradient, draws


@pytest.mark.statistical
@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_unbiased_against_enumeration(four_gate_draws, name):
    """Holm-corrected z-tests of `mean draw - exact gradient` on every coordinate (RELAX with a
    state trained for 30 steps, so its network is in use): 103 coordinates, one family."""
    gradient, draws = four_gate_draws
    difference, rounding = bias_moments(draws[name], gradient)
    result = zero_mean_test(difference, alpha=ALPHA, rounding=rounding)
    assert result.pvalue >= ALPHA, result.statistic


@pytest.mark.statistical
def test_planted_rebar_is_flagged(four_gate_draws):
    """The same test at the same budget rejects the planted bug, with a margin. With `d`
    coordinates Holm's first step rejects when `max |z| > c = Phi^{-1}(1 - ALPHA / 2d)`. We
    require the observed `|z|` of some coordinate to exceed `c + 6` (measured: 16.7 on
    `gater_hidden.weight` against `c = 4.4`, `d = 103`). Its noncentrality `delta` is then at least
    `c + 3` unless this seed was a 3-sigma fluke (probability 1.3e-3), and a fresh seed rejects
    with probability at least `Phi(delta - c) >= Phi(3) = 0.9987`."""
    gradient, draws = four_gate_draws
    difference, rounding = bias_moments(draws["planted"], gradient)
    result = zero_mean_test(difference, alpha=ALPHA, rounding=rounding)
    critical = scipy_stats.norm.isf(ALPHA / (2 * difference.mean.numel()))
    assert result.pvalue < ALPHA
    assert result.statistic > critical + 6, (result.statistic, critical)


@pytest.mark.statistical
def test_variance_far_below_reinforce(four_gate_draws):
    """Per-coordinate sample variances of the gate-logit draws: REBAR and RELAX below a fifth
    of REINFORCE's (without baseline). The measured ratios are 17-68 (REBAR), so the margin is
    more than 3 times, far beyond the sampling error of a variance from `NUM_DRAWS` draws
    (relative standard deviation `sqrt((kurtosis - 1) / N)`, 11% even at kurtosis 50)."""
    _, draws = four_gate_draws
    reinforce = draws["reinforce"][GATE_LOGITS].variance
    for name in ("rebar", "relax"):
        variance = draws[name][GATE_LOGITS].variance
        assert (variance < reinforce / 5).all(), (name, reinforce / variance)
