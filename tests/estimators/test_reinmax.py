"""ReinMax for Bernoulli gates: the binary derivation against the paper's categorical algorithm,
exactness at `tau = 1` for losses quadratic in each gate, and its bias elsewhere.

Everything here is exact (enumeration of gate configurations, float64): ReinMax's draw depends
on the noise only through the gates, so its mean is a finite sum (`exact_moments`).
"""

import pytest
import torch
from torch import nn

from estimator_lab.estimators import get_estimator
from estimator_lab.estimators.reinmax import reinmax_weight
from estimator_lab.exact import exact_gradient, exact_moments
from estimator_lab.graphs import PreparedBatch
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.sbn import SigmoidBeliefNet
from estimator_lab.graphs.toy import ToyGraph
from estimator_lab.montecarlo import GATE_LOGITS
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.testing import conditional_problem

LOGITS = [-3.0, -1.0, -0.2, 0.0, 0.5, 2.0]


class Polynomial(StochasticGraph):
    """`G` gates with logits `theta` and loss `(w . h - c)^power` (`power` 2: quadratic in each
    gate with the others fixed, cross terms included; 3: cubic)."""

    def __init__(self, num_gates: int, power: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.theta = nn.Parameter(torch.randn(num_gates, generator=generator, dtype=torch.float64))
        self.weight = nn.Parameter(torch.randn(num_gates, generator=generator,
                                               dtype=torch.float64))
        self.offset = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
        self.num_gates, self.power = num_gates, power

    def prepare(self, batch):
        (x,) = batch
        return PreparedBatch(logits=self.theta.expand(x.shape[0], -1))

    def loss(self, prepared, gates):
        return (gates @ self.weight - self.offset) ** self.power


def papers_algorithm(a: float, gate: int, tau: float, loss, symmetric: bool) -> float:
    """`dL/da` from Algorithm 2 of Liu et al. (2023), literally, for two classes with logits
    `(a, 0)` or `(a / 2, -a / 2)`, one-hot `D = (b, 1 - b)` and `loss(D)`."""
    logit = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    theta = torch.stack([logit / 2, -logit / 2]) if symmetric else torch.stack(
        [logit, torch.zeros_like(logit)])
    pi0 = theta.softmax(-1)
    one_hot = torch.tensor([gate, 1 - gate], dtype=torch.float64)
    pi1 = (one_hot + (theta / tau).softmax(-1)) / 2
    pi1 = ((pi1.log() - theta).detach() + theta).softmax(-1)
    pi2 = 2 * pi1 - pi0 / 2
    (grad,) = torch.autograd.grad(loss(pi2 - pi2.detach() + one_hot), logit)
    return grad.item()


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0, 3.0])
def test_binary_reinmax_is_the_two_class_case_of_the_papers_algorithm(tau):
    """On `L = (h - t)^2`, for both gate values: our draw equals the paper's algorithm with
    either parameterisation of the two logits, and with `L` written through `D_1 = b` or
    `D_2 = 1 - b` (only the derivative along the simplex matters)."""
    t = 0.45
    est = get_estimator("reinmax", temperature=tau)
    for a in LOGITS:
        toy = ToyGraph([a], target=t)
        p = torch.sigmoid(toy.theta).detach()
        for gate in (1, 0):
            noise = (p / 2 if gate else (1 + p) / 2).view(1, 1, 1)
            ours = gradient_draws(toy, est, toy.example_batch(), noise)["theta"].item()
            for symmetric in (False, True):
                for loss in (lambda d: (d[0] - t) ** 2, lambda d: (1 - d[1] - t) ** 2):
                    theirs = papers_algorithm(a, gate, tau, loss, symmetric)
                    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15), (a, gate)


def test_weights_in_closed_form():
    """`tau = 1`: `(1 - p) / 2` for `b = 1`, `p / 2` for `b = 0`; non-negative for `tau >= 1`,
    negative somewhere below (why the paper asks for `tau >= 1`)."""
    a = torch.linspace(-8, 8, 401, dtype=torch.float64)
    p = torch.sigmoid(a)
    eps = torch.finfo(torch.float64).eps  # the weight is a difference of terms up to 1/2
    torch.testing.assert_close(reinmax_weight(a, torch.ones_like(a), 1.0), (1 - p) / 2,
                               rtol=1e-14, atol=4 * eps)
    torch.testing.assert_close(reinmax_weight(a, torch.zeros_like(a), 1.0), p / 2,
                               rtol=1e-14, atol=4 * eps)
    for tau in (1.0, 1.5, 2.0, 5.0):
        for gate in (torch.ones_like(a), torch.zeros_like(a)):
            assert (reinmax_weight(a, gate, tau) >= -4 * eps).all(), tau
    assert (reinmax_weight(a, torch.ones_like(a), 0.5) < 0).any()


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_temperature_must_be_positive(temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        get_estimator("reinmax", temperature=temperature)


def relative_bias(graph, batch, estimator) -> float:
    """`|E[g] - grad| / |grad|` on the gate logits, both by enumeration."""
    _, exact = exact_gradient(graph, batch, parameters=[])
    mean = exact_moments(graph, estimator, batch, parameters=[]).mean
    return float((mean[GATE_LOGITS] - exact[GATE_LOGITS]).norm() / exact[GATE_LOGITS].norm())


def test_tau_one_is_exact_for_losses_quadratic_in_each_gate():
    """`E[g_a] = p (1 - p) [L'(1) + L'(0)] / 2` is the trapezoid rule for `L(1) - L(0)`: exact
    for `L` quadratic in each gate value. On `(w . h - c)^2` with 5 gates the mean equals the
    exact gradient on every coordinate; on the toy it equals `sigmoid'(a) (1 - 2 t)`. Negative
    controls, same graphs: a cubic loss, `tau = 2`, and `st-sigmoid` are biased."""
    quadratic, batch = Polynomial(5, power=2), (torch.zeros(2, 0, dtype=torch.float64),)
    _, exact = exact_gradient(quadratic, batch)
    mean = exact_moments(quadratic, get_estimator("reinmax"), batch).mean
    for name, grad in exact.items():
        torch.testing.assert_close(mean[name], grad, rtol=1e-12, atol=1e-14, msg=name)
    toy = ToyGraph(LOGITS, target=0.45)
    toy_mean = exact_moments(toy, get_estimator("reinmax"), toy.example_batch()).mean["theta"]
    torch.testing.assert_close(toy_mean, toy.true_gradient()["theta"], rtol=1e-12, atol=1e-15)
    assert relative_bias(Polynomial(5, power=3), batch, get_estimator("reinmax")) > 1e-2
    assert relative_bias(quadratic, batch, get_estimator("reinmax", temperature=2.0)) > 1e-2
    assert relative_bias(quadratic, batch, get_estimator("st-sigmoid")) > 1e-2


def test_biased_on_networks_but_less_than_straight_through_there():
    """Enumeration on the conditional net (4 gates, cross-entropy) and a two-layer belief net:
    ReinMax is biased, and on these seeded graphs less than `st-sigmoid` and `st`. Measured
    relative gate-logit biases: conditional `reinmax` 0.034, `st-sigmoid` 0.061, `st` 2.9;
    belief net 0.12, 0.31, 28."""
    conditional, batch = conditional_problem(output_scale=8.0, inputs="uniform")
    generator = torch.Generator().manual_seed(0)
    sbn = SigmoidBeliefNet(4, (3, 3), generator).double()
    bits = ((torch.rand(3, 4, generator=generator) < 0.5).double(),)
    for graph, data in ((conditional, batch), (sbn, bits)):
        biases = [relative_bias(graph, data, get_estimator(name))
                  for name in ("reinmax", "st-sigmoid", "st")]
        assert 1e-2 < biases[0] < biases[1] < biases[2], biases
