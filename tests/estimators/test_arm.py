"""ARM and DisARM: exact moments by quadrature, closed forms on one gate, Monte Carlo tests.

Both draws are piecewise linear in the uniforms `u` (constant for DisARM) between the
thresholds `p_i` and `1 - p_i`, so `exact_moments`' Gauss-Legendre rule split there with 2 nodes
per cell (exact to degree 3) gives the exact mean and variance, not an approximation. The tests
use 4 nodes so that the error estimate's coarse rule (half as many, 2) is exact too: with 2, its
1-node rule misses the variance's quadratic term and labels exact values approximate.

Note [Randomized statistical tests]: the Monte Carlo tests fix their seeds, so they are
deterministic; the false-failure rate stated is the probability over seeds that a correct
implementation fails. `zero_mean_test` runs Holm-corrected per-coordinate z-tests at level
`ALPHA`, so a correct estimator fails with probability at most `ALPHA` (normal approximation of
a mean of `NUM_DRAWS` bounded draws).
"""

import math

import pytest
import torch
from scipy import stats as scipy_stats

from estimator_lab.estimators import get_estimator
from estimator_lab.estimators.arm import antithetic_gates
from estimator_lab.exact import exact_gradient, exact_moments
from estimator_lab.graphs import PreparedBatch
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.sbn import SigmoidBeliefNet
from estimator_lab.graphs.toy import ToyGraph
from estimator_lab.montecarlo import GATE_LOGITS, Moments, run_draws, uniform_noise
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.stats import rounding_scale, zero_mean_test
from estimator_lab.testing import conditional_problem
from estimator_lab.testing.planted import FlippedSignDisARM

ALPHA = 1e-3  # false-failure rate of each Monte Carlo unbiasedness test
NUM_DRAWS = 4000  # `test_planted_flipped_sign_is_flagged` checks this budget has the power
POINTS = 4  # Gauss-Legendre nodes per cell: it and its half exact for piecewise-linear draws
GATES = 4


def exact(net, estimator, batch):
    return exact_moments(
        net, estimator, batch, quadrature_points=POINTS, max_quadrature_dims=net.num_gates
    )


class TableGraph(StochasticGraph):
    """One gate with logit `theta` and an arbitrary loss table: `L(b) = table[b]`."""

    def __init__(self, logit: float, table: torch.Tensor) -> None:
        super().__init__()
        self.num_gates = 1
        self.theta = torch.nn.Parameter(torch.tensor([logit], dtype=torch.float64))
        self.table = torch.nn.Parameter(table.clone())

    def prepare(self, batch) -> PreparedBatch:
        (x,) = batch
        return PreparedBatch(logits=self.theta.expand(x.shape[0], 1))

    def loss(self, prepared, gates):
        b = gates[..., 0]
        return self.table[0] * (1 - b) + self.table[1] * b


def test_antithetic_pair_is_arms_pair():
    """`b~ = 1[1 - u < p]` is ARM's `1[u > sigmoid(-a)]` and `b = 1[u < sigmoid(a)]`."""
    a = torch.linspace(-4, 4, 17, dtype=torch.float64).view(-1, 1)
    u = torch.linspace(0.0013, 0.9987, 101, dtype=torch.float64).view(1, -1)
    gates, antithetic = antithetic_gates(a.expand(-1, 101), u.expand(17, -1))
    assert torch.equal(gates, (u < torch.sigmoid(a)).double())
    assert torch.equal(antithetic, (u > torch.sigmoid(-a)).double())


@pytest.mark.parametrize("logit", [-5.0, -1.3, -0.2, 0.0, 0.4, 2.0])
@pytest.mark.parametrize("target", [0.45, -1.0])
def test_one_gate_moments_have_the_closed_form(logit, target):
    """One gate, `Delta = L(1) - L(0)`, `m = min(p, 1 - p)`, `M = 1 - m`:

    - both means: `Delta p (1 - p)`;
    - DisARM: `Var = Delta^2 m M^2 (1/2 - m)` (the draw is `Delta M / 2` when the pair differs,
      probability `2m`, and 0 otherwise);
    - ARM: `E[g^2] = 2 Delta^2 int_0^m (u - 1/2)^2 du = 2 Delta^2 (1/8 - (1/2 - m)^3) / 3`;

    and DisARM's variance is never above ARM's (Rao-Blackwell), with equality only at `Delta = 0`.
    """
    toy = ToyGraph([logit], target=target)
    batch = toy.example_batch()
    delta = (1 - target) ** 2 - target**2
    p = torch.sigmoid(torch.tensor(logit, dtype=torch.float64))
    m = torch.minimum(p, 1 - p)
    big = 1 - m
    arm = exact(toy, get_estimator("arm"), batch)
    disarm = exact(toy, get_estimator("disarm"), batch)
    true_mean = delta * p * (1 - p)
    arm_variance = 2 * delta**2 * (1 / 8 - (0.5 - m) ** 3) / 3 - true_mean**2
    disarm_variance = delta**2 * m * big**2 * (0.5 - m)
    for moments in (arm, disarm):
        torch.testing.assert_close(moments.mean[GATE_LOGITS], true_mean.view(1, 1))
        torch.testing.assert_close(moments.mean["theta"], true_mean.view(1))
    torch.testing.assert_close(arm.variance[GATE_LOGITS], arm_variance.view(1, 1))
    torch.testing.assert_close(disarm.variance[GATE_LOGITS], disarm_variance.view(1, 1))
    assert disarm_variance < arm_variance


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_exact_mean_is_the_exact_gradient(name):
    """Quadrature (exact here) against enumeration, on every coordinate of a 4-gate net."""
    net, batch = conditional_problem(GATES)
    _, gradient = exact_gradient(net, batch)
    moments = exact(net, get_estimator(name), batch)
    assert moments.method == "quadrature"
    for key, value in gradient.items():
        torch.testing.assert_close(moments.mean[key], value, rtol=1e-10, atol=1e-14, msg=key)


def test_planted_flipped_sign_has_the_negated_logit_gradient():
    """The planted bug's exact mean: `-grad` behind the gate logits, `+grad` on the pathwise
    parameters (expert, output), so a contract check comparing with enumeration rejects it."""
    net, batch = conditional_problem(GATES)
    _, gradient = exact_gradient(net, batch)
    moments = exact(net, FlippedSignDisARM(), batch)
    for key, value in gradient.items():
        sign = -1 if key == GATE_LOGITS or key.startswith("gater") else 1
        torch.testing.assert_close(moments.mean[key], sign * value, rtol=1e-10, atol=1e-14)
    assert gradient[GATE_LOGITS].abs().min() > 1e-3  # the bias -2 grad is visible


@pytest.mark.parametrize("num_gates", [1, GATES])
def test_disarm_variance_is_at_most_arms_on_every_coordinate(num_gates):
    """DisARM is `E[ARM | b, b~]`, so its variance is at most ARM's on every coordinate; the
    pathwise parameters share the draw `(grad L(b) + grad L(b~)) / 2`, so theirs are equal."""
    net, batch = conditional_problem(num_gates=num_gates)
    arm = exact(net, get_estimator("arm"), batch)
    disarm = exact(net, get_estimator("disarm"), batch)
    for key in arm.variance:
        slack = 1e-12 * arm.variance[key].abs().max()
        assert (disarm.variance[key] <= arm.variance[key] + slack).all(), key
        if key.startswith(("expert", "output")):
            torch.testing.assert_close(disarm.variance[key], arm.variance[key], msg=key)
    assert (disarm.variance[GATE_LOGITS] < 0.95 * arm.variance[GATE_LOGITS]).all()


def zero_logit_problems():
    """One gate at `a = 0` with several losses: random loss tables, and the conditional net
    with its gater zeroed (a non-linear loss with many directly touched parameters)."""
    problems = []
    for seed in range(3):
        table = torch.randn(2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        problems.append((TableGraph(0.0, 3 * table), (torch.zeros(2, 0, dtype=torch.float64),)))
    net, batch = conditional_problem(num_gates=1, batch_size=2)
    with torch.no_grad():
        net.gater_out.weight.zero_()
        net.gater_out.bias.zero_()
    problems.append((net, batch))
    return problems


@pytest.mark.parametrize("index", range(4))
def test_disarm_has_zero_variance_at_one_half(index):
    """At `p = 1/2` one gate always has `b != b~`, and both orders give `(L(1) - L(0)) / 4`
    on the logit and `(grad L(1) + grad L(0)) / 2` on the parameters: a constant draw, for any
    loss. Exactly (quadrature) and draw by draw; ARM, for contrast, has `Delta^2 / 48`."""
    graph, batch = zero_logit_problems()[index]
    disarm = get_estimator("disarm")
    moments = exact(graph, disarm, batch)
    for key, variance in moments.variance.items():
        assert (variance <= 1e-30).all(), (key, variance)
    with torch.no_grad():
        prepared = graph.prepare(batch)
    noise = uniform_noise(0, range(1000), disarm.noise_shape(graph, prepared), dtype=torch.float64)
    for key, draws in gradient_draws(graph, disarm, batch, noise).items():
        torch.testing.assert_close(draws, draws[:1].expand_as(draws), rtol=1e-15, atol=0,
                                   msg=key)
    assert (exact(graph, get_estimator("arm"), batch).variance[GATE_LOGITS] > 0).all()


@pytest.mark.parametrize("name", ["arm", "disarm", "planted"])
def test_vmap_and_loop_agree(name):
    net, batch = conditional_problem(GATES)
    estimator = FlippedSignDisARM() if name == "planted" else get_estimator(name)
    noise = uniform_noise(1, range(5), (3, GATES), dtype=torch.float64)
    vmapped = gradient_draws(net, estimator, batch, noise, method="vmap")
    looped = gradient_draws(net, estimator, batch, noise, method="loop")
    for key, value in vmapped.items():
        torch.testing.assert_close(value, looped[key], rtol=1e-12, atol=1e-14, msg=key)
    assert not torch.allclose(vmapped[GATE_LOGITS][0], vmapped[GATE_LOGITS][1])


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_flags_surrogate_value_and_single_layer_guard(name):
    estimator = get_estimator(name)
    assert estimator.name == name
    assert estimator.is_unbiased and not estimator.discrete_noise
    assert estimator.evaluations(ToyGraph([0.0])) == 2
    net, batch = conditional_problem(GATES)
    prepared = net.prepare(batch)
    noise = uniform_noise(2, range(1), (3, GATES), dtype=torch.float64)[0]
    value = estimator.surrogate(net, prepared, noise, None)
    pair = antithetic_gates(prepared.logits, noise)
    torch.testing.assert_close(value, net.loss(prepared, pair).mean())  # antithetic loss mean
    sbn = SigmoidBeliefNet(3, (2, 2))
    with pytest.raises(ValueError, match="one gate layer"):
        estimator.surrogate(sbn, sbn.prepare((torch.ones(1, 3),)), torch.rand(1, 4), None)


def bias_moments(accumulator, gradient):
    """Moments of `draw - exact` over every tracked coordinate, in the accumulator's order (one
    Holm family, so a test's false-failure rate is `ALPHA`), and the rounding floor."""
    names = accumulator.names()
    mean = torch.cat([accumulator[name].mean for name in names])
    exact = torch.cat([gradient[name].flatten() for name in names])
    m2 = torch.cat([accumulator[name].m2 for name in names])
    difference = Moments(accumulator[names[0]].count, mean - exact, m2)
    return difference, rounding_scale(mean.numpy(), exact.numpy())


@pytest.mark.statistical
@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_unbiased_against_enumeration(name):
    """Holm-corrected z-tests of `mean draw - exact gradient` on every coordinate (gate logits
    and all parameters, 103 coordinates)."""
    net, batch = conditional_problem(GATES)
    _, gradient = exact_gradient(net, batch)
    draws = run_draws(net, {name: get_estimator(name)}, batch, num_draws=NUM_DRAWS, seed=3,
                      chunk_size=1000)[name]
    difference, rounding = bias_moments(draws, gradient)
    result = zero_mean_test(difference, alpha=ALPHA, rounding=rounding)
    assert result.pvalue >= ALPHA, result.statistic


@pytest.mark.statistical
def test_planted_flipped_sign_is_flagged():
    """Power, a priori: the planted bias is `-2 grad` on the gate logits and its per-draw
    standard deviation is DisARM's, both exact by quadrature. With `d` coordinates, Holm's first
    step rejects when `max |z| > c = Phi^{-1}(1 - ALPHA / 2d)`; a coordinate with noncentrality
    `delta = |bias| sqrt(N) / sd >= c + 3.09` is rejected with probability at least 0.999. We
    check that `NUM_DRAWS` achieves that (measured: `max delta = 178`, `c = 4.4`), then that
    the same test as above rejects."""
    net, batch = conditional_problem(GATES)
    _, gradient = exact_gradient(net, batch)
    moments = exact(net, FlippedSignDisARM(), batch)
    draws = run_draws(net, {"planted": FlippedSignDisARM()}, batch, num_draws=NUM_DRAWS, seed=3,
                      chunk_size=1000)["planted"]
    difference, rounding = bias_moments(draws, gradient)
    bias = (moments.mean[GATE_LOGITS] - gradient[GATE_LOGITS]).abs()
    noncentrality = bias * math.sqrt(NUM_DRAWS) / moments.variance[GATE_LOGITS].sqrt()
    critical = scipy_stats.norm.isf(ALPHA / (2 * difference.mean.numel()))
    assert noncentrality.max() >= critical + 3.09
    result = zero_mean_test(difference, alpha=ALPHA, rounding=rounding)
    assert result.pvalue < ALPHA
    # Each coordinate with such noncentrality has p < ALPHA / d, so Holm rejects it too; the
    # gate logits come first in the accumulator.
    powered = (noncentrality >= critical + 3.09).flatten().numpy()
    assert result.rejected[: powered.size][powered].all()
