"""MuProp: closed form, exact unbiasedness (one to three gate layers), linear and near-linear
losses, and Monte Carlo.

Note [Randomized statistical tests]: the statistical tests fix their seeds; a correct
implementation fails the Holm-corrected z-tests (every coordinate of every tracked tensor in
one family, level `ALPHA`) with probability at most `ALPHA`, up to the normal approximation.
"""

import pytest
import torch
from torch import nn

from estimator_lab.estimators import get_estimator
from estimator_lab.estimators.muprop import MuProp
from estimator_lab.exact import exact_gradient, exact_moments
from estimator_lab.graphs import PreparedBatch
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.specs import build_problem
from estimator_lab.montecarlo import GATE_LOGITS, Moments, run_draws, uniform_noise
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.stats import zero_mean_test
from estimator_lab.testing import conditional_problem

ALPHA = 1e-3  # false-failure rate of each Monte Carlo unbiasedness test
NUM_DRAWS = 4000
GATER = ["gater_hidden.weight", "gater_hidden.bias", "gater_out.weight", "gater_out.bias"]


def sbn_problem(spec: str = "sbn:3-2,inputs=5,batch=3"):
    """A sigmoid belief net on binary observations, float64."""
    problem = build_problem(spec, seed=0)
    return problem.graph, problem.batch


PROBLEMS = {
    "conditional": conditional_problem,
    "sbn-2-layers": sbn_problem,
    "sbn-3-layers": lambda: sbn_problem("sbn:2-2-2,inputs=5,batch=2"),
}


class LinearGraph(StochasticGraph):
    """`G` gates with logits `theta` (shared by the batch) and the loss `w^T b + 1`."""

    def __init__(self, logits: list[float], weights: list[float]) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(logits, dtype=torch.float64))
        self.w = nn.Parameter(torch.tensor(weights, dtype=torch.float64))
        self.num_gates = len(logits)

    def prepare(self, batch):
        (x,) = batch
        return PreparedBatch(logits=self.theta.expand(x.shape[0], -1))

    def loss(self, prepared, gates):
        return gates @ self.w + 1


def flat_difference(accumulator, exact: dict[str, torch.Tensor]) -> Moments:
    """Moments of (draw - exact gradient) over every tracked tensor, as one `d`-vector."""
    names = accumulator.names()
    return Moments(
        accumulator[names[0]].count,
        torch.cat([accumulator[n].mean - exact[n].reshape(-1) for n in names]),
        torch.cat([accumulator[n].m2 for n in names]),
    )


def test_flags_and_evaluations():
    assert MuProp.is_unbiased and MuProp.multilayer and MuProp.discrete_noise
    assert MuProp().evaluations() is None  # per graph, like local-expectation
    assert MuProp().evaluations(conditional_problem()[0]) == 2
    assert MuProp().evaluations(PROBLEMS["sbn-3-layers"]()[0]) == 4


@pytest.mark.parametrize("problem", PROBLEMS)
def test_exact_mean_is_the_exact_gradient(problem):
    """Unbiased by enumeration on every parameter and the gate logits, one to three layers."""
    graph, batch = PROBLEMS[problem]()
    _, exact = exact_gradient(graph, batch)
    moments = exact_moments(graph, MuProp(), batch)
    assert moments.method == "enumeration"
    for key, value in exact.items():
        torch.testing.assert_close(moments.mean[key], value, rtol=1e-10, atol=1e-13, msg=key)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_vmap_and_loop_agree(problem):
    graph, batch = PROBLEMS[problem]()
    prepared = graph.prepare(batch)
    noise = uniform_noise(1, range(5), MuProp().noise_shape(graph, prepared),
                          dtype=torch.float64)
    vmapped = gradient_draws(graph, MuProp(), batch, noise)
    looped = gradient_draws(graph, MuProp(), batch, noise, method="loop")
    for key, value in vmapped.items():
        torch.testing.assert_close(value, looped[key], rtol=1e-10, atol=1e-13, msg=key)


def test_gate_logit_and_pathwise_draws_have_the_closed_form():
    """Single layer: `[(L(b) - f(pbar) - f'(pbar)^T (b - pbar))(b - p) + f'(pbar) p (1 - p)] / B`
    on the logits, with `f'` from an independent autograd pass; the output layer gets exactly
    the pathwise gradient at the sampled gates (the mean-field pass adds nothing to it)."""
    graph, batch = conditional_problem()
    noise = uniform_noise(2, range(6), (3, 4), dtype=torch.float64)
    draws = gradient_draws(graph, MuProp(), batch, noise)
    reinforce = gradient_draws(graph, get_estimator("reinforce"), batch, noise)
    prepared = graph.prepare(batch)
    p = torch.sigmoid(prepared.logits).detach()
    point = p.clone().requires_grad_(True)
    mean_field = graph.loss(prepared, point)
    (slope,) = torch.autograd.grad(mean_field.sum(), point)
    with torch.no_grad():
        gates = (noise < p).double()
        losses = graph.loss(prepared, gates)
        residual = losses - mean_field - (slope * (gates - p)).sum(-1)
        expected = (residual.unsqueeze(-1) * (gates - p) + slope * p * (1 - p)) / 3
    torch.testing.assert_close(draws[GATE_LOGITS], expected, rtol=1e-10, atol=1e-14)
    for key in ["output.weight", "output.bias", "expert.weight", "expert.bias"]:
        torch.testing.assert_close(draws[key], reinforce[key], rtol=1e-12, atol=1e-15, msg=key)


def test_a_linear_loss_gives_the_exact_gradient_in_every_draw():
    """For `L = w^T b + 1` the Taylor expansion is the loss: the residual vanishes and every
    draw on the logits is `w p (1 - p)`, with zero variance (REINFORCE's is not zero)."""
    graph = LinearGraph([0.3, -1.2, 2.0], [1.5, -0.7, 0.4])
    batch = (torch.zeros(2, 0, dtype=torch.float64),)
    _, exact = exact_gradient(graph, batch)
    muprop = exact_moments(graph, MuProp(), batch)
    plain = exact_moments(graph, get_estimator("reinforce"), batch)
    for key in [GATE_LOGITS, "theta"]:
        torch.testing.assert_close(muprop.mean[key], exact[key], rtol=1e-12, atol=1e-15)
        assert float(muprop.variance[key].max()) < 1e-30, key
        assert float(plain.variance[key].min()) > 1e-3, key
    p = torch.sigmoid(graph.theta.detach())
    torch.testing.assert_close(exact["theta"], graph.w.detach() * p * (1 - p))


def test_near_linear_loss_has_far_lower_variance_than_reinforce():
    """Exact variances (enumeration) of the score-function coordinates (gate logits and gater
    parameters). The residual `L(b) - h(b)` is second order in the gate's effect on the loss,
    so its variance falls like the fourth power of the output weights' scale.

    Measured ratios MuProp / REINFORCE of the total gate-logit variance: 6.6e-7 (output weights
    x 0.25), 1.0e-4 (the default initialisation, x 1), 4.2e-3 (x 4), 3.0e-2 (x 16); REINFORCE's
    own totals are 0.446, 0.555, 1.379, 11.35. At equal evaluations (MuProp costs 2, so compare
    with two REINFORCE draws averaged) the ratios double: 2.0e-4 at the default scale. The
    exact-oracle Eq. 10 baseline reaches only 0.0507 / 0.555 = 0.091 there.
    """
    ratios = {}
    for scale in (0.25, 1.0):
        graph, batch = conditional_problem(output_scale=scale)
        plain = exact_moments(graph, get_estimator("reinforce"), batch, parameters=GATER)
        muprop = exact_moments(graph, MuProp(), batch, parameters=GATER)
        ratios[scale] = {
            key: float(muprop.variance[key].sum() / plain.variance[key].sum())
            for key in [GATE_LOGITS, *GATER]
        }
    assert max(ratios[1.0].values()) < 1e-3, ratios[1.0]
    assert max(ratios[0.25].values()) < 1e-5, ratios[0.25]
    for key in ratios[1.0]:  # the fourth-power law: 4^4 = 256, measured 154 to 160
        assert ratios[0.25][key] < ratios[1.0][key] / 50, key


@pytest.mark.statistical
@pytest.mark.parametrize("problem", ["conditional", "sbn-2-layers"])
def test_monte_carlo_mean_matches_the_exact_gradient(problem):
    """Holm z-tests over every coordinate at level ALPHA (measured max |z|: 1.5 and 2.4). The
    power of this test at this budget is shown in test_baselines and test_rloo, on the same
    graphs, with biased controls of larger variance than MuProp's."""
    graph, batch = PROBLEMS[problem]()
    _, exact = exact_gradient(graph, batch)
    draws = run_draws(graph, {"muprop": MuProp()}, batch, num_draws=NUM_DRAWS, seed=31,
                      chunk_size=NUM_DRAWS)["muprop"]
    result = zero_mean_test(flat_difference(draws, exact), alpha=ALPHA)
    assert result.pvalue >= ALPHA, (result.statistic, result.pvalue)
