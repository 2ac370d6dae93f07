"""bitflip-1 and UGC: selection rule, exact means, UGC with no boundary gates is DisARM."""

import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.estimators.bitflip import boundary_gates
from estimator_lab.exact import exact_gradient, exact_moments
from estimator_lab.graphs.toy import ToyGraph
from estimator_lab.montecarlo import GATE_LOGITS
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.noise import uniform_noise
from estimator_lab.testing import conditional_problem


def exact(graph, estimator, batch):
    return exact_moments(graph, estimator, batch, quadrature_points=2,
                         max_quadrature_dims=graph.num_gates + 1)


def test_boundary_gates_is_the_largest_k_with_k_m_below_one_half():
    """`m = (0.5, .018, .047, .0025)`: 3; near 1/2: only the smallest (`1 x 0.43 < 1/2`); all
    at the boundary: 4; all exactly 1/2: none (DisARM's draw is then constant)."""
    logits = torch.tensor([[0.0, -4.0, 3.0, 6.0], [0.0, 0.1, -0.2, 0.3], [-9.0] * 4, [0.0] * 4])
    order, count = boundary_gates(logits)
    assert count.tolist() == [3, 1, 4, 0]
    m = torch.sigmoid(-logits.abs()).gather(-1, order)
    for row, k in enumerate(count.tolist()):
        assert (m[row, :k] * k < 0.5).all()
        assert k == logits.shape[1] or (m[row, k] * (k + 1) >= 0.5)


@pytest.mark.parametrize("name", ["bitflip", "ugc"])
@pytest.mark.parametrize("bias", [[-3.0, -0.5, 0.7, 2.5], [0.1, -0.2, 0.3, 0.0],
                                  [-5.0, 4.0, -3.5, 6.0]])
def test_exact_mean_is_the_exact_gradient(name, bias):
    """Quadrature is exact for these piecewise-constant draws: the mean equals the enumerated
    gradient on every coordinate of a 4-gate net (some, none, and all gates near the boundary)."""
    net, batch = conditional_problem(batch_size=2, gate_bias=bias)
    _, gradient = exact_gradient(net, batch)
    moments = exact(net, get_estimator(name), batch)
    for key, value in gradient.items():
        torch.testing.assert_close(moments.mean[key], value, rtol=1e-10, atol=1e-14, msg=key)


def test_ugc_without_boundary_gates_is_disarm_draw_by_draw():
    """Every `p = 1/2` (gater zeroed): `S` is empty and UGC is DisARM under the same `u`."""
    net, batch = conditional_problem(batch_size=2, gate_bias=[0.0] * 4)
    with torch.no_grad():
        net.gater_out.weight.zero_()
        assert (boundary_gates(net.prepare(batch).logits)[1] == 0).all()
    noise = uniform_noise(3, range(100), (2, 5), dtype=torch.float64)
    ugc = gradient_draws(net, get_estimator("ugc"), batch, noise)
    disarm = gradient_draws(net, get_estimator("disarm"), batch, noise[..., :-1].contiguous())
    for key, value in ugc.items():
        torch.testing.assert_close(value, disarm[key], rtol=1e-12, atol=1e-15, msg=key)


def test_one_gate_bitflip_is_exact_and_ugc_beats_disarm():
    """One gate: the flip difference is `L(1) - L(0)` whatever is sampled, so bitflip-1 is the
    exact gradient (zero variance); UGC uses it where `m <= 1/2` (every `p != 1/2`)."""
    for logit in (-3.0, -0.4, 1.5):
        toy = ToyGraph([logit], target=0.45)
        batch = toy.example_batch()
        for name in ("bitflip", "ugc"):
            assert float(exact(toy, get_estimator(name), batch).variance[GATE_LOGITS]) < 1e-30
        assert float(exact(toy, get_estimator("disarm"), batch).variance[GATE_LOGITS]) > 0


def test_flags_and_single_layer_guard():
    for name, evaluations in (("bitflip", 2), ("ugc", 3)):
        estimator = get_estimator(name)
        assert estimator.is_unbiased and not estimator.discrete_noise
        assert estimator.evaluations(ToyGraph([0.0])) == evaluations
        from estimator_lab.graphs.sbn import SigmoidBeliefNet
        sbn = SigmoidBeliefNet(3, (2, 2))
        with pytest.raises(ValueError, match="one gate layer"):
            estimator.surrogate(sbn, sbn.prepare((torch.ones(1, 3),)), torch.rand(1, 5), None)
