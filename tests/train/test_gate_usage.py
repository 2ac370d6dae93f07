"""The gate-usage diagnostic tells a decisive gater from an indecisive one."""

import math

import torch

from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork
from estimator_lab.train.gate_usage import gate_usage
from estimator_lab.train.gaters import PAPER_GATERS, activity_threshold
from estimator_lab.train.trainer import evaluate

GATES = 100


def _net_with_gate_logits(unit_logits: torch.Tensor) -> ConditionalNetwork:
    """A small network whose gate logits are `unit_logits` (`GATES`) for every input."""
    config = ConditionalConfig(num_inputs=20, num_gater_hidden=6, num_gates=GATES)
    net = ConditionalNetwork(config, torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        net.gater_out.weight.zero_()
        net.gater_out.bias.copy_(unit_logits)
    return net


def _data(n: int = 500):
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(n, 20, generator=generator, dtype=torch.float64),
            torch.randint(0, 10, (n,), generator=generator))


def test_a_decisive_gater_trains_on_the_units_it_tests_with():
    logits = torch.full((GATES,), -30.0, dtype=torch.float64)
    logits[:10] = 30.0  # on with probability 1 - 1e-13, the others off
    net, (x, y) = _net_with_gate_logits(logits), _data()
    gater = PAPER_GATERS["straight-through"]
    threshold = activity_threshold(net.prepare((x, y)).logits, gater.target)
    usage = gate_usage(net, gater, x, y, threshold, chunk=128)
    assert usage.agreement == 1.0 and usage.sampled_activity == 0.1
    assert usage.selection_overlap == 1.0  # the same ten units for every input
    error = evaluate(net, gater, x, y, threshold)[0]
    assert usage.sampled_error == usage.thresholded_error == error


def test_an_indecisive_gater_agrees_with_its_test_gates_at_the_target_rate():
    # Every unit is on with probability ~0.1 whatever the input; the threshold picks units 0-9.
    # Agreement is then the mean of 5,000 Bernoulli(0.1009) draws: standard error 0.0042, so
    # the 0.021 (5 SE) tolerance fails for a correct implementation with probability ~6e-7
    # (the seed is fixed, so the test is deterministic; the bound says it is not tuned to it).
    target_logit = math.log(0.1 / 0.9)
    logits = torch.full((GATES,), target_logit - 0.01, dtype=torch.float64)
    logits[:10] = target_logit + 0.01
    net, (x, y) = _net_with_gate_logits(logits), _data()
    gater = PAPER_GATERS["sbn"]
    threshold = activity_threshold(net.prepare((x, y)).logits, gater.target)
    usage = gate_usage(net, gater, x, y, threshold)
    assert abs(usage.agreement - 0.1009) < 0.021
    assert abs(usage.sampled_activity - 0.1) < 0.01  # 50,000 draws: SE 0.0013, 7.5 SE


def test_configurations_without_a_threshold_have_no_agreement():
    net, (x, y) = _net_with_gate_logits(torch.zeros(GATES, dtype=torch.float64)), _data(50)
    usage = gate_usage(net, PAPER_GATERS["baseline-sigmoid"], x, y, math.nan)
    assert math.isnan(usage.agreement) and usage.sampled_activity == 1.0
    assert math.isnan(usage.selection_overlap)


def test_selection_overlap_of_input_dependent_gates_is_the_target():
    # One-hot inputs of ten kinds; gate j is on exactly for kind j (logit 10 tanh(3) - 5 = 4.95
    # against -5), so every input selects one unit of ten and no two kinds share it.
    config = ConditionalConfig(num_inputs=10, num_gater_hidden=10, num_gates=10)
    net = ConditionalNetwork(config, torch.Generator().manual_seed(0)).double()
    eye = torch.eye(10, dtype=torch.float64)
    with torch.no_grad():
        net.gater_hidden.weight.copy_(3 * eye)
        net.gater_hidden.bias.zero_()
        net.gater_out.weight.copy_(10 * eye)
        net.gater_out.bias.fill_(-5.0)
    kinds = torch.arange(1000) % 10
    x, y = eye[kinds], kinds
    gater = PAPER_GATERS["straight-through"]
    threshold = activity_threshold(net.prepare((x, y)).logits, gater.target)
    usage = gate_usage(net, gater, x, y, threshold)
    assert abs(usage.selection_overlap - 0.1) < 1e-12
    # Each of the 1,000 test-time-on pairs is on in the draw with probability
    # sigmoid(4.95) = 0.993 (SE of the mean 0.0027): 0.97 is 8.5 SE below, false failure < 1e-16.
    assert usage.agreement > 0.97
