"""double-cv: exact means by enumeration; `alpha = 0` is rloo; exact on gate-linear losses."""

import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.exact import exact_gradient, exact_moments
from estimator_lab.graphs import PreparedBatch
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.montecarlo import GATE_LOGITS
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.noise import uniform_noise
from estimator_lab.testing import conditional_problem
from estimator_lab.testing.contract import check_estimator


class LinearGraph(StochasticGraph):
    """`L(b) = w^T b + c` with logits `theta`: every unbiased draw's target is `w p (1 - p)`."""

    def __init__(self) -> None:
        super().__init__()
        self.num_gates = 3
        self.theta = torch.nn.Parameter(torch.tensor([-1.0, 0.3, 2.0], dtype=torch.float64))
        self.w = torch.nn.Parameter(torch.tensor([0.7, -1.3, 2.1], dtype=torch.float64))

    def prepare(self, batch) -> PreparedBatch:
        return PreparedBatch(logits=self.theta.expand(batch[0].shape[0], -1))

    def loss(self, prepared, gates):
        return (gates * self.w).sum(-1) + 0.5


def test_contract_with_three_samples():
    check_estimator(get_estimator("double-cv", num_samples=3)).raise_if_failed()


@pytest.mark.parametrize("hyper", [{}, {"num_samples": 3}, {"alpha": -0.7}])
def test_exact_mean_is_the_exact_gradient(hyper):
    net, batch = conditional_problem(3, 2)
    _, gradient = exact_gradient(net, batch)
    moments = exact_moments(net, get_estimator("double-cv", **hyper), batch)
    assert moments.method == "enumeration"
    for key, value in gradient.items():
        torch.testing.assert_close(moments.mean[key], value, rtol=1e-10, atol=1e-14, msg=key)


def test_alpha_zero_is_rloo_draw_by_draw():
    net, batch = conditional_problem(3, 2)
    noise = uniform_noise(0, range(50), (2, 2, 3), dtype=torch.float64)
    ours = gradient_draws(net, get_estimator("double-cv", alpha=0.0), batch, noise)
    rloo = gradient_draws(net, get_estimator("rloo"), batch, noise)
    for key, value in ours.items():
        torch.testing.assert_close(value, rloo[key], rtol=1e-12, atol=1e-15, msg=key)


def test_linear_loss_gives_the_exact_gradient_every_draw():
    graph = LinearGraph()
    batch = (torch.zeros(2, 0, dtype=torch.float64),)
    noise = uniform_noise(1, range(50), (2, 2, 3), dtype=torch.float64)
    draws = gradient_draws(graph, get_estimator("double-cv"), batch, noise)[GATE_LOGITS]
    p = torch.sigmoid(graph.theta.detach())
    expected = (graph.w.detach() * p * (1 - p) / 2).expand(50, 2, 3)
    torch.testing.assert_close(draws, expected, rtol=1e-12, atol=1e-15)
    rloo = gradient_draws(graph, get_estimator("rloo"), batch, noise)[GATE_LOGITS]
    assert rloo.var(0).max() > 1e-3  # rloo is not exact here


def test_bad_hyper_parameters_raise():
    with pytest.raises(ValueError, match="num_samples >= 2"):
        get_estimator("double-cv", num_samples=1)
    with pytest.raises(ValueError, match="finite alpha"):
        get_estimator("double-cv", alpha=float("nan"))
