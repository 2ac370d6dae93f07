"""STS units: Proposition 2 (exactly and by Monte Carlo) and the exact bias of the estimator.

The STS gate `h = b sqrt(p)` is piecewise constant in its uniform `u`: `sqrt(p)` on
`[0, sqrt(p))` and `0` on `[sqrt(p), 1)`, so expectations over `u` are exact sums over the two
cells (the midpoint of a cell stands for all of it). Exact checks run in float64.

Note [Randomized statistical tests]: the Monte Carlo test fixes its seed and makes 10 two-sided
z-tests at `|z| < 5` (per-test false-failure 5.7e-7), so a correct implementation fails with
probability below 6e-6 (normal approximation of a mean of 20000 bounded draws).
"""

import pytest
import torch
from torch import nn

from estimator_lab.estimators import get_estimator
from estimator_lab.estimators.sts import sts_gates
from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork, PreparedBatch
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.toy import ToyGraph
from estimator_lab.montecarlo import GATE_LOGITS, uniform_noise
from estimator_lab.montecarlo.engine import gradient_draws

LOGITS = [-6.0, -2.0, -0.5, 0.0, 1.0, 4.0]


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


def cell_noise(root: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """The midpoint of the cell `[0, sqrt(p))` (gate on) or `[sqrt(p), 1)` (gate off)."""
    return torch.where(on, root / 2, (1 + root) / 2)


def test_proposition_2_exactly_from_the_two_point_distribution():
    """`E[h] = p`, `P(h > 0) = sqrt(p)`, and `h` in `{0, sqrt(p)}`, through the estimator."""
    graph = Readout(LOGITS)
    p = torch.sigmoid(graph.theta).detach()
    root = p.sqrt()
    prepared = graph.prepare((torch.zeros(1, 0),))
    est = get_estimator("sts")
    values, lengths = [], (root, 1 - root)
    for on in (True, False):
        est.surrogate(graph, prepared, cell_noise(root, torch.tensor(on)).unsqueeze(0), None)
        values.append(graph.seen[0])
    torch.testing.assert_close(values[0], root, rtol=1e-15, atol=0)
    assert torch.equal(values[1], torch.zeros_like(root))
    mean = lengths[0] * values[0] + lengths[1] * values[1]
    positive = lengths[0] * (values[0] > 0) + lengths[1] * (values[1] > 0)
    torch.testing.assert_close(mean, p, rtol=1e-14, atol=0)
    torch.testing.assert_close(positive, root, rtol=1e-15, atol=0)
    # The threshold is sqrt(p), not p: between the two, the gate is on.
    between = sts_gates(graph.theta.detach(), (p + root) / 2)
    torch.testing.assert_close(between, root, rtol=1e-15, atol=0)


@pytest.mark.statistical
def test_proposition_2_by_monte_carlo_through_the_estimator():
    """20000 copies of each gate drawn by `sts`'s own surrogate: `E[h] = p` with
    `Var[h] = p^{3/2} - p^2`, and `P(h > 0) = sqrt(p)` with variance `sqrt(p) (1 - sqrt(p))`."""
    graph = Readout(LOGITS[1:])
    copies = 20_000
    prepared = graph.prepare((torch.zeros(copies, 0),))
    noise = uniform_noise(5, range(1), (copies, graph.num_gates), dtype=torch.float64)[0]
    get_estimator("sts").surrogate(graph, prepared, noise, None)
    p = torch.sigmoid(graph.theta).detach()
    h = graph.seen
    z_mean = (h.mean(0) - p) / ((p**1.5 - p**2) / copies).sqrt()
    on = (h > 0).double()
    z_on = (on.mean(0) - p.sqrt()) / (p.sqrt() * (1 - p.sqrt()) / copies).sqrt()
    assert z_mean.abs().max() < 5 and z_on.abs().max() < 5, (z_mean, z_on)
    # Power: the same test tells sqrt(p) from p, the Bernoulli gate's probability (|z| >= 9).
    assert ((on.mean(0) - p) / (p * (1 - p) / copies).sqrt()).abs().min() > 5


def test_gradient_of_e_h_is_half_the_true_gradient():
    """For `L = h`: `d E[h] / da = p (1 - p)`, while the mean draw is
    `E[b] d sqrt(p) / da = sqrt(p) sqrt(p) (1 - p) / 2 = p (1 - p) / 2`."""
    graph = Readout(LOGITS)
    batch = (torch.zeros(1, 0),)
    p = torch.sigmoid(graph.theta).detach()
    root = p.sqrt()
    noise = torch.stack([cell_noise(root, torch.tensor(True)),
                         cell_noise(root, torch.tensor(False))]).unsqueeze(1)  # 2 x 1 x G
    draws = gradient_draws(graph, get_estimator("sts"), batch, noise)["theta"]
    mean = root * draws[0] + (1 - root) * draws[1]
    torch.testing.assert_close(mean, p * (1 - p) / 2, rtol=1e-13, atol=0)


def test_toy_closed_form_bias_for_the_sts_objective():
    """For `L = (h - t)^2`, with `r = sqrt(p)` and `r' = dr/da = r (1 - p) / 2`:
    `E[L] = r (r - t)^2 + (1 - r) t^2`, so `dE[L]/da = r' (3 r^2 - 4 r t)`, while the mean draw
    is `r r' 2 (r - t)`; the difference is `r' (L(r) - L(0))`, the expected score term."""
    t = 0.45
    toy = ToyGraph(LOGITS, target=t)
    p = torch.sigmoid(toy.theta).detach()
    r = p.sqrt()
    dr = r * (1 - p) / 2
    noise = torch.stack([cell_noise(r, torch.tensor(True)),
                         cell_noise(r, torch.tensor(False))]).unsqueeze(1)
    draws = gradient_draws(toy, get_estimator("sts"), toy.example_batch(), noise)["theta"]
    mean = r * draws[0] + (1 - r) * draws[1]  # the toy's gates are independent
    torch.testing.assert_close(mean, r * dr * 2 * (r - t), rtol=1e-13, atol=1e-16)
    exact = dr * (3 * r**2 - 4 * r * t)
    torch.testing.assert_close(exact - mean, dr * ((r - t) ** 2 - t**2), rtol=1e-12, atol=1e-16)
    assert ((exact - mean).abs() > 1e-3 * exact.abs().max()).sum() >= 4


def test_bias_is_exactly_the_missing_score_term_by_enumeration():
    """On a conditional net, by enumeration over the STS distribution
    `P(b) = prod_i sqrt(p_i)^{b_i} (1 - sqrt(p_i))^{1 - b_i}` (float64, example by example):
    `grad E[L(h)] = E[g] + E[L(h) grad log P(b)]` with `E[g]` the exact mean of the draws, and
    the score part is far from zero, so `sts` is biased for its own objective."""
    generator = torch.Generator().manual_seed(0)
    config = ConditionalConfig(num_inputs=6, num_gater_hidden=4, num_gates=3, num_classes=3)
    graph = ConditionalNetwork(config, generator).double()
    with torch.no_grad():
        graph.output.weight.mul_(8)
    gates = ((torch.arange(8).unsqueeze(-1) >> torch.arange(3)) & 1).double()  # 8 x 3
    names = [GATE_LOGITS, *dict(graph.named_parameters())]
    for j in range(2):
        batch = (torch.rand(1, 6, generator=generator, dtype=torch.float64),
                 torch.randint(0, 3, (1,), generator=generator))
        prepared = graph.prepare(batch)
        root = torch.exp(0.5 * torch.nn.functional.logsigmoid(prepared.logits))  # 1 x G
        prob = torch.where(gates > 0, root, 1 - root).prod(-1)  # 8
        losses = graph.loss(prepared, (gates * root).unsqueeze(1)).squeeze(1)  # 8
        inputs = [prepared.logits, *graph.parameters()]
        exact = torch.autograd.grad((prob * losses).sum(), inputs, retain_graph=True)
        score = torch.autograd.grad((prob * losses.detach()).sum(), inputs, allow_unused=True,
                                    materialize_grads=True)
        noise = cell_noise(root.detach(), gates.unsqueeze(1) > 0)  # 8 x 1 x G
        draws = gradient_draws(graph, get_estimator("sts"), batch, noise)
        weights = prob.detach()
        for name, e, s in zip(names, exact, score, strict=True):
            mean = (weights.view(-1, *[1] * e.dim()) * draws[name]).sum(0)
            torch.testing.assert_close(mean + s, e, rtol=1e-12, atol=1e-14)
        score_logits, exact_logits = score[0], exact[0]
        assert score_logits.norm() > 0.05 * exact_logits.norm(), j
