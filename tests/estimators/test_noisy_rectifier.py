"""The noisy rectifier: Proposition 1, its Gaussian analogue, and unbiasedness for its own loss.

Exact expectations over the noise use Gauss-Legendre quadrature in `z` (the noise value), on
`[-T, T]` split at the kink `z = -a` into pieces short next to the analytic strip of the
density, so the rules converge geometrically; each node `z` is fed to the estimator as the
uniform `u = F(-z)` that `rectifier_noise` maps back to `z` (the estimator's own code path),
with weight `w f(z)`. Everything exact runs in float64.

Note [Randomized statistical tests]: the Monte Carlo test fixes its seed and makes 20 two-sided
z-tests at `|z| < 5` (per-test false-failure 5.7e-7), so a correct implementation fails with
probability below 1.2e-5 (normal approximation of means of 20000 draws with finite variance).
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from estimator_lab.estimators import get_estimator
from estimator_lab.estimators.base import bernoulli_gates
from estimator_lab.graphs import PreparedBatch
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.sbn import SigmoidBeliefNet
from estimator_lab.montecarlo import GATE_LOGITS, uniform_noise
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.testing import conditional_problem

LOGITS = [-3.0, -1.0, 0.0, 0.7, 2.5]
NOISES = [("logistic", 1.0), ("logistic", 2.0), ("gaussian", 1.0), ("gaussian", 0.5),
          ("gaussian", 2.0)]


class Readout(StochasticGraph):
    """`G` gates with logits `theta`, loss `sum_i h_i`; keeps the gate values it last saw."""

    def __init__(self, logits) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.as_tensor(logits, dtype=torch.float64))
        self.num_gates = self.theta.numel()
        self.seen = None

    def prepare(self, batch):
        (x,) = batch
        return PreparedBatch(logits=self.theta.expand(x.shape[0], -1))

    def loss(self, prepared, gates):
        self.seen = gates.detach()
        return gates.sum(-1)


def density(z: torch.Tensor, kind: str, sigma: float) -> torch.Tensor:
    """The noise density `f(z)`."""
    if kind == "logistic":
        s = torch.sigmoid(z / sigma)
        return s * (1 - s) / sigma
    return torch.exp(-0.5 * (z / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def uniform_of(z: torch.Tensor, kind: str, sigma: float) -> torch.Tensor:
    """The uniform `u = F(-z)` that the estimator maps to the noise value `z` (the Gaussian CDF
    from `erfc`: `torch.special.ndtr` loses its relative precision in the lower tail)."""
    if kind == "logistic":
        return torch.sigmoid(-z / sigma)
    return 0.5 * torch.special.erfc(z / (sigma * math.sqrt(2)))


def rule(a: torch.Tensor, kind: str, sigma: float, pieces: int = 16, points: int = 20):
    """Gauss-Legendre nodes and weights in `z` for each logit in `a` (any shape `S`):
    `[-T, -a]` and `[-a, T]` cut into `pieces` equal parts each; `T` puts the tail below 1e-16.

    Returns:
        nodes and weights `w f(z)`, each `K x S` with `K = 2 pieces points`.
    """
    half = (36.0 if kind == "logistic" else 10.0) * sigma
    x, w = (torch.as_tensor(v, dtype=torch.float64)
            for v in np.polynomial.legendre.leggauss(points))
    fractions = torch.linspace(0, 1, pieces + 1, dtype=torch.float64).view(-1, *[1] * a.dim())
    edges = torch.cat([-half + (half - a) * fractions, (-a + (half + a) * fractions)[1:]])
    lo, width = edges[:-1].unsqueeze(1), (edges[1:] - edges[:-1]).unsqueeze(1)
    shape = (1, -1, *[1] * a.dim())
    nodes = (lo + width * (x.view(shape) + 1) / 2).flatten(0, 1)
    weights = (width * w.view(shape) / 2).flatten(0, 1) * density(nodes, kind, sigma)
    return nodes, weights


def closed_forms(a: torch.Tensor, kind: str, sigma: float):
    """`E[h]` and `P(h > 0)`: Proposition 1 (scaled), or the Gaussian rectified mean."""
    if kind == "logistic":
        return sigma * torch.nn.functional.softplus(a / sigma), torch.sigmoid(a / sigma)
    x = a / sigma
    cdf = 0.5 * torch.special.erfc(-x / math.sqrt(2))
    return sigma * torch.exp(-0.5 * x**2) / math.sqrt(2 * math.pi) + a * cdf, cdf


@pytest.mark.parametrize(("kind", "sigma"), NOISES)
def test_proposition_1_and_the_gaussian_analogue_by_quadrature(kind, sigma):
    """`P(h > 0)`, `E[h]` and the mean gradient `dE[h]/da = P(h > 0)`, through the estimator."""
    graph = Readout(LOGITS)
    a = graph.theta.detach()
    nodes, weights = rule(a, kind, sigma)  # K x G
    assert float(weights.sum(0).sub(1).abs().max()) < 1e-13
    noise = uniform_of(nodes, kind, sigma).unsqueeze(1)  # K x 1 x G
    est = get_estimator("noisy-rectifier", noise=kind, sigma=sigma)
    prepared = graph.prepare((torch.zeros(1, 0),))
    est.surrogate(graph, prepared, noise, None)
    h = graph.seen.squeeze(1)  # K x G
    torch.testing.assert_close(h, torch.relu(a + nodes), rtol=1e-9, atol=1e-9)  # round trip
    mean, positive = closed_forms(a, kind, sigma)
    torch.testing.assert_close((weights * h).sum(0), mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close((weights * (h > 0)).sum(0), positive, rtol=1e-12, atol=1e-14)
    draws = gradient_draws(graph, est, (torch.zeros(1, 0),), noise)["theta"]
    torch.testing.assert_close((weights * draws).sum(0), positive, rtol=1e-12, atol=1e-14)


@pytest.mark.statistical
@pytest.mark.parametrize(("kind", "sigma"), [("logistic", 1.0), ("gaussian", 1.0)])
def test_proposition_1_and_the_gaussian_analogue_by_monte_carlo(kind, sigma):
    """20000 copies of each gate drawn by the estimator's own surrogate, against the closed
    forms: `E[h]` with its sample standard error, `P(h > 0)` with `sqrt(q (1 - q) / n)`."""
    graph = Readout(LOGITS)
    copies = 20_000
    noise = uniform_noise(7, range(1), (copies, graph.num_gates), dtype=torch.float64)[0]
    est = get_estimator("noisy-rectifier", noise=kind, sigma=sigma)
    est.surrogate(graph, graph.prepare((torch.zeros(copies, 0),)), noise, None)
    mean, positive = closed_forms(graph.theta.detach(), kind, sigma)
    h = graph.seen
    z_mean = (h.mean(0) - mean) / (h.var(0) / copies).sqrt()
    z_positive = ((h > 0).double().mean(0) - positive) / (positive * (1 - positive) / copies).sqrt()
    assert z_mean.abs().max() < 5 and z_positive.abs().max() < 5, (z_mean, z_positive)


def test_logistic_rectifier_is_on_exactly_where_the_bernoulli_gate_is():
    """Common random numbers: with logistic noise of scale 1, `h > 0` iff `u < sigmoid(a)`."""
    graph = Readout(LOGITS)
    noise = uniform_noise(8, range(1), (1000, graph.num_gates), dtype=torch.float64)[0]
    est = get_estimator("noisy-rectifier", noise="logistic")
    prepared = graph.prepare((torch.zeros(1000, 0),))
    est.surrogate(graph, prepared, noise, None)
    assert torch.equal((graph.seen > 0).double(), bernoulli_gates(prepared.logits, noise))


def small_graph(name: str):
    """A single-layer conditional net or a two-layer belief net, float64, with a batch."""
    if name == "conditional":
        return conditional_problem(3, 4, output_scale=1.0, inputs="uniform")
    generator = torch.Generator().manual_seed(0)
    graph = SigmoidBeliefNet(4, (3, 2), generator).double()
    return graph, ((torch.rand(4, 4, generator=generator) < 0.5).double(),)


def central_differences(
    value, graph: StochasticGraph, logits: torch.Tensor, step: float
) -> dict[str, torch.Tensor]:
    """`d value / d theta` by central differences, for an offset `probe` of the gate logits
    (shaped like `logits`) and every parameter, each coordinate perturbed in place and
    restored. `value(probe)` returns a float."""
    probe = torch.zeros_like(logits)
    tensors = {GATE_LOGITS: probe, **dict(graph.named_parameters())}
    grads = {}
    with torch.no_grad():
        for name, tensor in tensors.items():
            grad = torch.zeros_like(tensor)
            for i in range(tensor.numel()):
                flat = tensor.view(-1)
                flat[i] += step
                up = value(probe)
                flat[i] -= 2 * step
                down = value(probe)
                flat[i] += step
                grad.view(-1)[i] = (up - down) / (2 * step)
            grads[name] = grad
    return grads


@pytest.mark.parametrize("kind", ["gaussian", "logistic"])
@pytest.mark.parametrize("graph_name", ["conditional", "belief-net"])
def test_mean_of_pathwise_draws_is_the_derivative_of_the_sample_average_loss(kind, graph_name):
    """For 32 fixed noise draws, the mean draw equals the central-difference gradient of
    `F(theta) = mean_k mean_j L_j(h(theta, u_k))` on every coordinate (float64, step 1e-6;
    no kink `a + z = 0` lies within a step for this seed, so `F` is smooth there)."""
    est = get_estimator("noisy-rectifier", noise=kind)
    graph, batch = small_graph(graph_name)
    prepared = graph.prepare(batch)
    noise = uniform_noise(2, range(32), est.noise_shape(graph, prepared), dtype=torch.float64)
    draws = gradient_draws(graph, est, batch, noise)

    def sample_average(probe):
        fresh = graph.prepare(batch)
        fresh.logits = fresh.logits + probe
        return est.surrogate(graph, fresh, noise, None).item()  # K x B losses, averaged

    finite = central_differences(sample_average, graph, prepared.logits, 1e-6)
    for name, grad in finite.items():
        torch.testing.assert_close(draws[name].mean(0), grad, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize(("kind", "sigma"), [("gaussian", 1.0), ("logistic", 1.0)])
def test_exact_mean_draw_is_the_gradient_of_the_quadrature_expected_loss(kind, sigma):
    """Two gates, one example: `E_z[L(max(0, a + z))]` by a tensor-product quadrature split at
    each gate's kink, differentiated by central differences (step 1e-5), equals the quadrature
    mean of the estimator's draws at the same nodes (float64, to 1e-6), on the gate logits and
    every parameter."""
    graph, batch = conditional_problem(2, 1, num_inputs=5, num_gater_hidden=3, seed=1,
                                       output_scale=1.0, inputs="uniform")
    est = get_estimator("noisy-rectifier", noise=kind, sigma=sigma)

    def grid(a):  # a: the 1 x 2 logits -> K x 1 x 2 nodes, K weights
        nodes, weights = rule(a[0], kind, sigma, pieces=6, points=14)
        n1, n2 = torch.meshgrid(nodes[:, 0], nodes[:, 1], indexing="ij")
        w1, w2 = torch.meshgrid(weights[:, 0], weights[:, 1], indexing="ij")
        return torch.stack([n1, n2], -1).view(-1, 1, 2), (w1 * w2).flatten()

    def expected_loss(probe):
        prepared = graph.prepare(batch)
        a = prepared.logits + probe
        nodes, weights = grid(a)
        return (weights * graph.loss(prepared, torch.relu(a + nodes))[:, 0]).sum().item()

    logits = graph.logits(batch).detach()
    finite = central_differences(expected_loss, graph, logits, 1e-5)
    nodes, weights = grid(logits)
    draws = gradient_draws(graph, est, batch, uniform_of(nodes, kind, sigma))
    for name, grad in finite.items():
        mean = (weights.view(-1, *[1] * grad.dim()) * draws[name]).sum(0)
        torch.testing.assert_close(mean, grad, rtol=1e-6, atol=1e-8, msg=name)
