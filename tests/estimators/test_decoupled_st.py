"""decoupled-st: `tau_f = 1` is st-gumbel draw by draw; forward gate `1[u < sigmoid(a / tau_f)]`."""

import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.graphs.sbn import SigmoidBeliefNet
from estimator_lab.graphs.toy import ToyGraph
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.noise import uniform_noise
from estimator_lab.testing import conditional_problem
from estimator_lab.testing.contract import check_estimator


def test_contract_with_separate_temperatures():
    estimator = get_estimator("decoupled-st", forward_temperature=2.0, backward_temperature=0.5)
    check_estimator(estimator).raise_if_failed()


@pytest.mark.parametrize("graph_kind", ["conditional", "sbn"])
def test_unit_forward_temperature_is_st_gumbel(graph_kind):
    if graph_kind == "sbn":
        graph, batch = SigmoidBeliefNet(4, (3, 2)).double(), (torch.ones(2, 4).double(),)
    else:
        graph, (x, _) = conditional_problem(batch_size=2, num_inputs=5, num_gater_hidden=3,
                                            output_scale=1.0)
        batch = (x, torch.tensor([0, 2]))
    noise = uniform_noise(0, range(20), (2, graph.num_gates), dtype=torch.float64)
    ours = gradient_draws(graph, get_estimator("decoupled-st", backward_temperature=0.3),
                          batch, noise)
    theirs = gradient_draws(graph, get_estimator("st-gumbel", temperature=0.3), batch, noise)
    for key, value in ours.items():
        torch.testing.assert_close(value, theirs[key], rtol=1e-12, atol=1e-15, msg=key)


def test_forward_gate_uses_the_forward_temperature():
    """The loss value is the hard-gate loss with `b = 1[u < sigmoid(a / tau_f)]`."""
    toy = ToyGraph([1.0, -0.6], target=0.45)
    prepared = toy.prepare(toy.example_batch())
    u = torch.tensor([[0.6, 0.46]], dtype=torch.float64)  # sigmoid(1/3) = .58, sigmoid(-.2) = .45
    estimator = get_estimator("decoupled-st", forward_temperature=3.0)
    value = estimator.surrogate(toy, prepared, u, None).detach()
    assert float(value) == pytest.approx((0 - 0.45) ** 2 + (0 - 0.45) ** 2)
    plain = get_estimator("decoupled-st", forward_temperature=1.0)
    hot = plain.surrogate(toy, prepared, u, None).detach()  # sigmoid(1) = .73 > .6
    assert float(hot) == pytest.approx((1 - 0.45) ** 2 + (0 - 0.45) ** 2)


def test_bad_temperatures_raise():
    with pytest.raises(ValueError, match="forward_temperature must be > 0"):
        get_estimator("decoupled-st", forward_temperature=0.0)
    with pytest.raises(ValueError, match="backward_temperature must be > 0"):
        get_estimator("decoupled-st", backward_temperature=-1.0)
