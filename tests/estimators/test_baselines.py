"""REINFORCE with baselines: exact unbiasedness, Corollary 1, Eq. 10 by moving averages, state.

Exact checks come first: `exact_moments` enumerates the gate configurations, so the mean and
variance of a draw are known exactly in float64 and compared with `exact_gradient`.

Note [Randomized statistical tests]: every statistical test fixes its seed, so it is
deterministic; the false-failure rate stated is the probability over seeds that a correct
implementation fails. The Monte Carlo unbiasedness tests run one z-test per coordinate of the
mean difference between the draws and the exact gradient (every tracked tensor in one family)
with Holm's correction at level `ALPHA`, so a correct estimator fails with probability at most
`ALPHA` (up to the normal approximation of a mean of `NUM_DRAWS` bounded draws). The negative
control shows that the same budget detects the bias of a baseline that depends on the gate it
centres.
"""

import io
import pickle

import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.estimators.base import (
    GradientEstimator,
    bernoulli_log_prob,
    hard_bernoulli,
)
from estimator_lab.estimators.baselines import (
    ConstantState,
    EmaBaseline,
    OptimalBaseline,
    OracleBaseline,
    RatioState,
    oracle_baseline_values,
    with_baseline,
)
from estimator_lab.estimators.prepare import initial_state, prepare_estimator
from estimator_lab.estimators.reinforce import Reinforce
from estimator_lab.exact import configurations, exact_gradient, exact_moments, log_prob_and_loss
from estimator_lab.graphs.specs import build_problem
from estimator_lab.montecarlo import GATE_LOGITS, Moments, run_draws, uniform_noise
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.stats import zero_mean_test
from estimator_lab.testing import conditional_problem

ALPHA = 1e-3  # false-failure rate of each Monte Carlo unbiasedness test
NUM_DRAWS = 4000  # the negative control below has an expected max |z| above 10


def sbn_problem():
    """A two-layer sigmoid belief net (3 + 2 gates) on 3 binary observations, float64."""
    problem = build_problem("sbn:3-2,inputs=5,batch=3", seed=0)
    return problem.graph, problem.batch


PROBLEMS = {"conditional": conditional_problem, "sbn": sbn_problem}


def warmed_state(estimator, graph, batch, *, num_updates: int = 20, seed: int = 99):
    """The estimator's state after `num_updates` draws on `batch` (a realistic, non-zero one)."""
    state = estimator.init(graph)
    with torch.no_grad():
        prepared = graph.prepare(batch)
    shape = estimator.noise_shape(graph, prepared)
    for noise in uniform_noise(seed, range(num_updates), shape, dtype=torch.float64):
        state = estimator.update(state, graph, prepared, noise)
    return state


def estimator_and_state(name: str, graph, batch, *, pooled: bool = False):
    """`reinforce-ema` / `-optimal` with a warmed state; `-oracle` with exact Eq. 10 values."""
    if name == "reinforce-oracle":
        estimator = get_estimator(name, values=oracle_baseline_values(graph, batch),
                                  pooled=pooled)
        return estimator, estimator.init(graph)
    estimator = get_estimator(name)
    return estimator, warmed_state(estimator, graph, batch)


def enumerate_gates(graph, batch):
    """Every configuration of a single-layer graph's gates, shared by the batch.

    Returns:
        probabilities `C x B`, gates `C x 1 x G`, losses `C x B` and `p` (`B x G`).
    """
    with torch.no_grad():
        prepared = graph.prepare(batch)
        gates = configurations(graph.num_gates, 0, 2**graph.num_gates)
        log_prob, losses = log_prob_and_loss(graph, prepared, gates)
    return log_prob.exp(), gates.unsqueeze(1), losses, torch.sigmoid(prepared.logits)


class GateDependentBaseline(GradientEstimator):
    """Negative control: REINFORCE "centred" by `c_ji = s L_j b_ji`, a function of the gate it
    centres, so `E[(b - p) c] = s (1 - p) p E[L | b = 1] != 0` and the draws are biased."""

    multilayer = True
    discrete_noise = True

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def surrogate(self, graph, prepared, noise, state):
        trace = graph.sample(prepared, noise, hard_bernoulli)
        losses, gates = trace.losses, trace.all_gates
        weights = losses.detach().unsqueeze(-1) * (1 - self.scale * gates)  # L - c
        return (losses + (weights * bernoulli_log_prob(trace.all_logits, gates)).sum(-1)).mean()


def flat_difference(accumulator, exact: dict[str, torch.Tensor]) -> Moments:
    """Moments of (draw - exact gradient) over every tracked tensor, as one `d`-vector."""
    names = accumulator.names()
    return Moments(
        accumulator[names[0]].count,
        torch.cat([accumulator[n].mean - exact[n].reshape(-1) for n in names]),
        torch.cat([accumulator[n].m2 for n in names]),
    )


# ----------------------------------------------------------------------------- exact checks


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("name", ["reinforce-ema", "reinforce-optimal", "reinforce-oracle"])
def test_exact_mean_is_the_exact_gradient(problem, name):
    """Unbiased by enumeration (every parameter and the gate logits), with a non-zero state."""
    graph, batch = PROBLEMS[problem]()
    estimator, state = estimator_and_state(name, graph, batch, pooled=True)
    assert float(estimator.baseline.value(state).abs().min()) > 0.1  # a real baseline
    _, exact = exact_gradient(graph, batch)
    moments = exact_moments(graph, estimator, batch, state=state)
    assert moments.method == "enumeration"
    for key, value in exact.items():
        torch.testing.assert_close(moments.mean[key], value, rtol=1e-10, atol=1e-13, msg=key)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_pooled_oracle_has_the_least_gate_logit_variance(problem):
    """Eq. 10 pooled over the batch minimises each gate's total logit variance among constants
    shared by the examples: it beats no baseline, the EMA and the running Eq. 10 states."""
    graph, batch = PROBLEMS[problem]()
    variances = {}
    for name in ["reinforce", "reinforce-ema", "reinforce-optimal", "reinforce-oracle"]:
        if name == "reinforce":
            estimator, state = get_estimator(name), None
        else:
            estimator, state = estimator_and_state(name, graph, batch, pooled=True)
        moments = exact_moments(graph, estimator, batch, state=state)
        variances[name] = moments.variance[GATE_LOGITS].sum(0)  # per gate, summed over examples
    for name in ["reinforce", "reinforce-ema", "reinforce-optimal"]:
        assert (variances["reinforce-oracle"] <= variances[name] * (1 + 1e-12)).all(), name
    # Measured totals (none / EMA / running Eq. 10 / oracle): conditional 1.379 / 0.346 /
    # 0.349 / 0.335; belief net 5.17 / 0.509 / 0.486 / 0.476.
    assert variances["reinforce-oracle"].sum() < 0.5 * variances["reinforce"].sum()


@pytest.mark.parametrize("name", ["reinforce-ema", "reinforce-optimal", "reinforce-oracle"])
def test_gate_logit_draws_have_the_closed_form(name):
    """`g_{a_ji} = (L_j - c_ji)(b_ji - p_ji) / B` with `c` read from the state (per-example
    oracle values included), the same through vmap and the autograd loop."""
    graph, batch = conditional_problem()
    estimator, state = estimator_and_state(name, graph, batch)
    noise = uniform_noise(5, range(6), (3, graph.num_gates), dtype=torch.float64)
    draws = gradient_draws(graph, estimator, batch, noise, state=state)
    looped = gradient_draws(graph, estimator, batch, noise, state=state, method="loop")
    with torch.no_grad():
        prepared = graph.prepare(batch)
        p = torch.sigmoid(prepared.logits)
        gates = (noise < p).double()
        losses = graph.loss(prepared, gates).unsqueeze(-1)
    expected = (losses - estimator.baseline.value(state)) * (gates - p) / 3
    torch.testing.assert_close(draws[GATE_LOGITS], expected, rtol=1e-12, atol=1e-15)
    for key, value in draws.items():
        torch.testing.assert_close(value, looped[key], rtol=1e-10, atol=1e-13, msg=key)


def test_corollary_1_eq_10_is_the_minimum_variance_constant():
    """Paper Corollary 1, exactly: per unit, `Var[(b_i - p_i)(L - c_i)]` (by enumeration of the
    16 configurations of one example's 4 gates) is minimised at Eq. 10's `c_i`."""
    graph, batch = conditional_problem(num_gates=4, batch_size=1, seed=3)
    prob, gates, losses, p = enumerate_gates(graph, batch)
    weight = prob.unsqueeze(-1)  # C x 1 x 1

    def unit_variance(c: torch.Tensor) -> torch.Tensor:
        """`Var[(b_i - p_i)(L - c_i)]` per unit, a `1 x G` tensor, for constants `c` (`G`)."""
        draw = (gates - p) * (losses.unsqueeze(-1) - c)  # C x 1 x G
        return (weight * draw.square()).sum(0) - (weight * draw).sum(0).square()

    best = oracle_baseline_values(graph, batch).per_example[0]
    # Eq. 10 computed straight from the enumeration agrees with the helper.
    spread = (gates - p).square()
    direct = (weight * spread * losses.unsqueeze(-1)).sum(0) / (weight * spread).sum(0)
    torch.testing.assert_close(best, direct[0], rtol=1e-13, atol=0)
    # Every other constant on a grid around c* (from 1e-3 to 2 away) has a larger variance.
    minimum = unit_variance(best)
    offsets = torch.cat([torch.linspace(-2, 2, 41), torch.tensor([-1e-3, 1e-3])]).double()
    for offset in offsets[offsets != 0]:
        assert (unit_variance(best + offset) > minimum).all(), float(offset)
    # The variance is stationary at c*: its derivative there vanishes.
    c = best.clone().requires_grad_(True)
    (derivative,) = torch.autograd.grad(unit_variance(c).sum(), c)
    assert derivative.abs().max() < 1e-10, derivative
    # The estimator realises exactly this variance (B = 1: the logit draw is the unit's term).
    for values in (best, best + 0.5):
        estimator = with_baseline(Reinforce(), OracleBaseline(values))
        moments = exact_moments(graph, estimator, batch)
        torch.testing.assert_close(
            moments.variance[GATE_LOGITS], unit_variance(values), rtol=1e-10, atol=1e-15
        )


@pytest.mark.statistical
def test_one_gate_with_the_optimal_baseline_has_zero_variance():
    """One Bernoulli unit: `c* = (1 - p) L(1) + p L(0)` makes `(b - p)(L(b) - c*)` equal to
    `p (1 - p)(L(1) - L(0))` for both outcomes, so the score-function draw is constant: exactly
    (enumeration) and in Monte Carlo (deterministic up to rounding, so it cannot fail by
    chance)."""
    graph, batch = conditional_problem(num_gates=1, batch_size=1, seed=1)
    estimator = get_estimator("reinforce-oracle", values=oracle_baseline_values(graph, batch))
    gater = ["gater_hidden.weight", "gater_hidden.bias", "gater_out.weight", "gater_out.bias"]
    plain = exact_moments(graph, get_estimator("reinforce"), batch, parameters=gater)
    exact = exact_moments(graph, estimator, batch, parameters=gater)
    _, truth = exact_gradient(graph, batch, parameters=gater)
    for key in [GATE_LOGITS, *gater]:
        scale = float(plain.variance[key].max())
        assert scale > 1e-4, key  # without the baseline the draws do vary
        assert float(exact.variance[key].max()) <= 1e-26 * scale, key
        torch.testing.assert_close(exact.mean[key], truth[key], rtol=1e-12, atol=1e-15)
    draws = run_draws(graph, {"oracle": estimator}, batch, num_draws=500, seed=7,
                      chunk_size=500, parameters=gater)["oracle"]
    for key in [GATE_LOGITS, *gater]:
        assert float(draws[key].variance.max()) <= 1e-26 * float(plain.variance[key].max())


# ------------------------------------------------------------------------------ Monte Carlo


@pytest.mark.statistical
@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("name", ["reinforce-ema", "reinforce-optimal", "reinforce-oracle"])
def test_monte_carlo_mean_matches_the_exact_gradient(problem, name):
    """Holm z-tests over every coordinate at level ALPHA; the oracle uses per-example values."""
    graph, batch = PROBLEMS[problem]()
    estimator, state = estimator_and_state(name, graph, batch)
    _, exact = exact_gradient(graph, batch)
    draws = run_draws(graph, {name: estimator}, batch, num_draws=NUM_DRAWS, seed=11,
                      chunk_size=NUM_DRAWS, states={name: state})[name]
    result = zero_mean_test(flat_difference(draws, exact), alpha=ALPHA)
    assert result.pvalue >= ALPHA, (result.statistic, result.pvalue)


@pytest.mark.statistical
@pytest.mark.parametrize("problem", PROBLEMS)
def test_a_baseline_that_depends_on_its_gate_is_flagged(problem):
    """Power: at the same budget the test rejects `c = s L(b) b`, here with `s = 0.2`.

    The control's exact mean and variance (enumeration) give the z-score its worst coordinate
    has in expectation, `bias / sqrt(variance / NUM_DRAWS)`: 20 (conditional) and 12 (belief
    net) for `s = 0.2` (observed 19 and 12), against a Holm threshold of about 4.4 for ~100
    coordinates at `ALPHA`, so missing it has probability below `Phi(4.4 - 12) ~ 1e-14`. For
    the plain `c = L(b) b` (`s = 1`) the expected scores are 210 and 146; for `s = 0.1`, 9.2
    and 5.5, near the detection limit of this budget.
    """
    graph, batch = PROBLEMS[problem]()
    _, exact = exact_gradient(graph, batch)
    expected_z = {}
    for scale in (1.0, 0.2):
        moments = exact_moments(graph, GateDependentBaseline(scale), batch)
        expected_z[scale] = torch.cat([
            (moments.mean[n] - exact[n]).reshape(-1)
            / (moments.variance[n].reshape(-1) / NUM_DRAWS).sqrt()
            for n in exact
        ]).nan_to_num().abs().max()  # zero-variance pathwise coordinates: no bias (0/0)
    assert expected_z[1.0] > 100 and expected_z[0.2] > 10, expected_z
    draws = run_draws(graph, {"biased": GateDependentBaseline(0.2)}, batch,
                      num_draws=NUM_DRAWS, seed=11, chunk_size=NUM_DRAWS)["biased"]
    result = zero_mean_test(flat_difference(draws, exact), alpha=ALPHA)
    assert result.pvalue < ALPHA and result.statistic > 10, result.statistic


@pytest.mark.statistical
def test_pilot_oracle_values_agree_with_enumeration():
    """The Monte Carlo pilot estimates the Eq. 10 expectations within 5 standard errors of the
    exact values (24 coordinates: false-failure rate below 24 x 5.7e-7 ~ 1.4e-5)."""
    graph, batch = conditional_problem()
    exact = oracle_baseline_values(graph, batch, method="enumeration")
    num_draws = 10_000
    pilot = oracle_baseline_values(graph, batch, method="pilot", num_pilot_draws=num_draws,
                                   seed=3)
    assert (exact.method, pilot.method, pilot.num_draws) == ("enumeration", "pilot", num_draws)
    prob, gates, losses, p = enumerate_gates(graph, batch)
    weight = prob.unsqueeze(-1)
    spread = (gates - p).square()  # C x B x G
    for estimate, truth, values in [
        (pilot.numerator, exact.numerator, spread * losses.unsqueeze(-1)),
        (pilot.denominator, exact.denominator, spread),
    ]:
        variance = (weight * values.square()).sum(0) - truth.square()
        z = (estimate - truth) / (variance / num_draws).sqrt()
        assert z.abs().max() < 5, z


# -------------------------------------------------------------------- moving-average state


@pytest.mark.statistical
def test_running_eq_10_converges_to_the_pooled_oracle():
    """After `T` draws on a fixed batch, the ratio of moving averages (decay `d`) sits within
    5 standard deviations of Eq. 10 pooled over the batch.

    Both averages start at zero and their common factor cancels in the ratio, so after `T`
    draws it is `sum_t w_t num_t / sum_t w_t den_t` with `w_t = d^(T-t)`: a weighted ratio of
    i.i.d. draws with effective sample size `n = (sum w)^2 / sum w^2
    = (1 - d^T)^2 (1 + d) / ((1 - d)(1 - d^2T))` (1989 draws for `d = 0.999`, `T = 6000`).
    Linearised at the limit `c*`, its error is the weighted mean of
    `x_i = mean_j (b_ji - p_ji)^2 (L_j - c*_i)` (mean zero) divided by
    `D_i = mean_j E[(b_ji - p_ji)^2]`, so its standard deviation is `sd(x_i) / sqrt(n) / D_i`,
    with `Var[x_i]` exact by enumeration. Over 4 gates the false-failure rate is below
    4 x 5.7e-7 (normal approximation). The tolerances (0.045 to 0.069; measured z-scores -0.74
    to 0.17) are a third of the spread of `c*` over the gates (1.69 to 1.89) and below the gap
    of 0.1 between two of its values and the unweighted mean loss 1.79 that a ratio without the
    `(b - p)^2` weights would reach. The scalar `EmaBaseline` is checked the same way against
    `E[mean_j L_j]` (measured z = -0.04).
    """
    graph, batch = conditional_problem()
    decay, num_updates, batch_size = 0.999, 6000, 3
    fading = decay**num_updates
    effective = (1 - fading) ** 2 * (1 + decay) / ((1 - decay) * (1 - fading**2))
    optimal, ema = OptimalBaseline(decay), EmaBaseline(decay)
    states = {"optimal": optimal.init(graph), "ema": ema.init(graph)}
    # The draws' gates and losses in one batched pass; the estimator's `update` hands the
    # baseline exactly these (test_the_first_update_sets_the_baselines_to_that_draw).
    with torch.no_grad():
        prepared = graph.prepare(batch)
        p = torch.sigmoid(prepared.logits)
        noise = torch.rand(num_updates, batch_size, graph.num_gates, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(4))
        draw_gates = (noise < p).double()
        draw_losses = graph.loss(prepared, draw_gates)
    for gates_t, losses_t in zip(draw_gates, draw_losses, strict=True):
        states["optimal"] = optimal.update(states["optimal"], losses_t, gates_t, p)
        states["ema"] = ema.update(states["ema"], losses_t, gates_t, p)

    limit = oracle_baseline_values(graph, batch).pooled
    prob, gates, losses, p = enumerate_gates(graph, batch)
    weight = prob.unsqueeze(-1)
    spread = (gates - p).square()  # C x B x G
    centred = spread * (losses.unsqueeze(-1) - limit)
    per_example = (weight * centred.square()).sum(0) - (weight * centred).sum(0).square()
    draw_sd = (per_example.sum(0) / batch_size**2).sqrt()  # sd of x_i, per gate
    denominator = (weight * spread).sum(0).mean(0)
    tolerance = 5 * draw_sd / effective**0.5 / denominator
    error = optimal.value(states["optimal"]) - limit
    assert (error.abs() < tolerance).all(), (error, tolerance)
    assert tolerance.max() < 0.05 * limit.min()  # a tight check, not a vacuous one

    mean_loss = (prob * losses).sum(0).mean()
    loss_sd = ((prob * losses.square()).sum(0) - (prob * losses).sum(0).square()).sum().sqrt()
    loss_tolerance = 5 * loss_sd / batch_size / effective**0.5
    ema_error = ema.value(states["ema"]) - mean_loss
    assert ema_error.abs() < loss_tolerance, (ema_error, loss_tolerance)


def test_state_is_frozen_during_run_draws_and_takes_no_gradient():
    """The engine never calls `update`, the state is unchanged, and no gradient reaches it."""
    graph, batch = conditional_problem()
    for name in ["reinforce-ema", "reinforce-optimal"]:
        estimator, state = estimator_and_state(name, graph, batch)
        snapshot = {k: v.clone() for k, v in vars(state).items()}

        def no_update(*args, **kwargs):
            raise AssertionError("run_draws must not update the state")

        estimator.update = no_update
        for method in ("vmap", "loop"):
            run_draws(graph, {name: estimator}, batch, num_draws=8, seed=0, chunk_size=4,
                      states={name: state}, method=method)
        for key, value in vars(state).items():
            assert torch.equal(value, snapshot[key]), (name, key)
            assert not value.requires_grad and value.grad is None, (name, key)

    # Updating from a batch with autograd history gives detached state, and backpropagating
    # through the surrogate leaves it untouched.
    estimator = get_estimator("reinforce-optimal")
    prepared = graph.prepare(batch)
    assert prepared.logits.requires_grad
    noise = uniform_noise(1, range(2), (3, graph.num_gates), dtype=torch.float64)
    state = estimator.update(estimator.init(graph), graph, prepared, noise[0])
    for value in vars(state).values():
        assert not value.requires_grad
    estimator.surrogate(graph, prepared, noise[1], state).backward()
    for value in vars(state).values():
        assert value.grad is None and not value.requires_grad


def test_the_first_update_sets_the_baselines_to_that_draw():
    """No shrinkage towards the zero start: one draw gives `c = mean_j L_j` (EMA) and
    `c_i = sum_j (b_ji - p_ji)^2 L_j / sum_j (b_ji - p_ji)^2` (Eq. 10); none gives `c = 0`.
    The estimators' `update` draws the gates of its noise and hands them to the baseline."""
    graph, batch = conditional_problem()
    noise = uniform_noise(2, range(1), (3, graph.num_gates), dtype=torch.float64)[0]
    with torch.no_grad():
        prepared = graph.prepare(batch)
        p = torch.sigmoid(prepared.logits)
        gates = (noise < p).double()
        losses = graph.loss(prepared, gates)
    spread = (gates - p).square()
    expected = {
        "reinforce-ema": losses.mean(),
        "reinforce-optimal": (spread * losses.unsqueeze(-1)).sum(0) / spread.sum(0),
    }
    for name, value in expected.items():
        estimator = get_estimator(name, decay=0.9)
        baseline = estimator.baseline
        state = estimator.init(graph)
        assert (baseline.value(state) == 0).all()
        torch.testing.assert_close(
            baseline.value(baseline.update(state, losses, gates, p)), value, rtol=1e-12, atol=0
        )
        state = estimator.update(state, graph, prepared, noise)
        torch.testing.assert_close(baseline.value(state), value, rtol=1e-12, atol=0)


def test_errors_are_clear():
    graph, batch = conditional_problem()
    listed = get_estimator("reinforce-oracle")  # listing the registry needs no values
    with pytest.raises(ValueError, match="computes its baseline values from the batch"):
        listed.init(graph)
    with pytest.raises(TypeError, match="plain REINFORCE"):
        with_baseline(get_estimator("st"), EmaBaseline())
    with pytest.raises(ValueError, match="decay"):
        EmaBaseline(decay=1.0)
    with pytest.raises(ValueError, match="seed"):
        oracle_baseline_values(graph, batch, method="pilot")
    # Per-example values belong to their batch: a batch of another size is refused, so
    # per-example moments (which split the batch into single examples) need `pooled=True`.
    estimator = get_estimator("reinforce-oracle", values=oracle_baseline_values(graph, batch))
    with pytest.raises(ValueError, match="does not broadcast"):
        exact_moments(graph, estimator, batch)


# ----------------------------------------------------------------------------- state from init


@pytest.mark.parametrize("problem", PROBLEMS)
def test_oracle_init_computes_the_pooled_eq_10_values_of_the_batch(problem):
    """Built without values, `init(graph, prepared)` holds Eq. 10 pooled over that batch,
    exactly the values passed in by hand, and its draws are those of the hand-built one."""
    graph, batch = PROBLEMS[problem]()
    estimator = get_estimator("reinforce-oracle")
    assert estimator.batch_state and not get_estimator("reinforce-ema").batch_state
    state = initial_state(estimator, graph, batch)
    by_hand = get_estimator("reinforce-oracle", values=oracle_baseline_values(graph, batch),
                            pooled=True)
    expected = by_hand.init(graph)
    assert isinstance(state, ConstantState)
    assert torch.equal(state.baseline, expected.baseline)
    assert torch.equal(state.baseline, oracle_baseline_values(graph, batch).pooled)
    with torch.no_grad():
        prepared = graph.prepare(batch)
    noise = uniform_noise(4, range(3), estimator.noise_shape(graph, prepared), dtype=torch.float64)
    for mine, theirs in zip(gradient_draws(graph, estimator, batch, noise, state=state).values(),
                            gradient_draws(graph, by_hand, batch, noise, state=expected).values(),
                            strict=True):
        assert torch.equal(mine, theirs)
    assert estimator.update(state, graph, prepared, noise[0]) is state  # a constant baseline


def test_prepare_estimator_and_the_runner_give_the_oracle_its_state_from_init():
    graph, batch = conditional_problem()
    estimator, state = prepare_estimator("reinforce-oracle", graph, batch, seed=3)
    assert torch.equal(state.baseline, oracle_baseline_values(graph, batch).pooled)
    alone = run_draws(graph, {"oracle": get_estimator("reinforce-oracle")}, batch, num_draws=20,
                      seed=3)["oracle"]
    given = run_draws(graph, {"oracle": estimator}, batch, num_draws=20, seed=3,
                      states={"oracle": state})["oracle"]
    assert torch.equal(alone[GATE_LOGITS].mean, given[GATE_LOGITS].mean)


def test_pilot_oracle_state_follows_the_seed_passed_to_init():
    """Past the enumeration limit (2^23 configurations here) `init` runs the pilot on `seed`."""
    graph, batch = conditional_problem(num_gates=23, batch_size=1)
    with torch.no_grad():
        prepared = graph.prepare(batch)
    estimator = get_estimator("reinforce-oracle")
    with pytest.raises(ValueError, match="seed"):
        estimator.init(graph, prepared)
    state = estimator.init(graph, prepared, seed=5)
    assert torch.equal(state.baseline, oracle_baseline_values(graph, batch, seed=5).pooled)


def test_an_init_of_the_graph_alone_still_overrides():
    """Subclasses (plugins, examples) written for `init(graph)` take the new arguments."""

    class GraphOnly(Reinforce):
        def init(self, graph):
            return "from the graph"

    graph, batch = conditional_problem()
    with torch.no_grad():
        prepared = graph.prepare(batch)
    assert GraphOnly().init(graph) == GraphOnly().init(graph, prepared, seed=1) == "from the graph"
    assert GraphOnly.init.__doc__ is None and GraphOnly.init.__name__ == "init"


def test_ratio_state_pickles_under_its_first_home():
    """`last.pt` files of the earlier format name `estimator_lab.estimators.baselines.RatioState`
    (`train.trainer.LEGACY_STATE_TYPES`); the class still pickles, and is allowed, by that name."""
    state = RatioState(torch.zeros(2), torch.ones(2))
    assert RatioState.__module__ == "estimator_lab.estimators.baselines"
    assert b"estimator_lab.estimators.baselines" in pickle.dumps(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([RatioState]):
        loaded = torch.load(buffer, weights_only=True)
    assert torch.equal(loaded.denominator, state.denominator)
