"""The conditional-computation network: sizes, seeded init, losses and gate flips."""

from dataclasses import asdict
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork, StochasticGraph
from estimator_lab.graphs.sbn import SigmoidBeliefNet
from estimator_lab.testing import conditional_problem

SMALL = ConditionalConfig(num_inputs=6, num_gater_hidden=4, num_gates=5, num_classes=3)
LAYERS = ("gater_hidden", "gater_out", "expert", "output")


small_problem = partial(conditional_problem, batch_size=4, **asdict(SMALL))
"""The float64 network of `SMALL` sizes, output weights times 4, on 4 normal examples."""


def random_gates(shape, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=generator).double()


def reference_loss(net, batch, gates: torch.Tensor) -> torch.Tensor:
    """Per-example losses for `B x G` gates by a plain forward pass (no `prepare`)."""
    x, y = batch
    hidden = net.expert(x) * gates
    return F.cross_entropy(net.output(hidden), y, reduction="none")


def test_paper_default_has_2706010_parameters():
    net = ConditionalNetwork()
    assert net.config == ConditionalConfig()
    assert sum(p.numel() for p in net.parameters()) == 2_706_010
    assert net.num_gates == 2000
    shapes = {n: tuple(p.shape) for n, p in net.named_parameters()}
    assert shapes == {
        "gater_hidden.weight": (400, 784), "gater_hidden.bias": (400,),
        "gater_out.weight": (2000, 400), "gater_out.bias": (2000,),
        "expert.weight": (2000, 784), "expert.bias": (2000,),
        "output.weight": (10, 2000), "output.bias": (10,),
    }


def test_seeded_init_is_reproducible_and_seed_dependent():
    def params(seed):
        net = ConditionalNetwork(SMALL, torch.Generator().manual_seed(seed))
        return dict(net.named_parameters())

    a, b, c = params(0), params(0), params(1)
    for name in a:
        assert torch.equal(a[name], b[name]), name
        assert not torch.equal(a[name], c[name]), name
    # Independent of the global RNG state.
    torch.manual_seed(99)
    d = params(0)
    assert all(torch.equal(a[n], d[n]) for n in a)


def test_seeded_init_is_bounded_by_inverse_sqrt_fan_in():
    net = ConditionalNetwork(
        ConditionalConfig(num_inputs=50, num_gater_hidden=9, num_gates=30, num_classes=4),
        torch.Generator().manual_seed(3),
    )
    for name in LAYERS:
        layer = getattr(net, name)
        bound = layer.in_features**-0.5
        for param in (layer.weight, layer.bias):
            assert param.abs().max() <= bound, name
            # Uniform on the whole interval, not a fraction of it.
            assert param.abs().max() >= 0.5 * bound, name
            assert param.min() < 0 < param.max(), name


def test_reset_parameters_reseeds():
    net = ConditionalNetwork(SMALL, torch.Generator().manual_seed(5))
    before = {n: p.clone() for n, p in net.named_parameters()}
    net.reset_parameters(torch.Generator().manual_seed(6))
    assert not any(torch.equal(before[n], p) for n, p in net.named_parameters())
    net.reset_parameters(torch.Generator().manual_seed(5))
    assert all(torch.equal(before[n], p) for n, p in net.named_parameters())


def test_prepare_returns_logits_and_features():
    net, batch = small_problem()
    prepared = net.prepare(batch)
    x, y = batch
    assert prepared.batch_size == 4
    assert prepared.logits.shape == (4, SMALL.num_gates)
    expected_logits = net.gater_out(torch.tanh(net.gater_hidden(x)))
    torch.testing.assert_close(prepared.logits, expected_logits, rtol=1e-12, atol=0)
    torch.testing.assert_close(net.logits(batch), expected_logits, rtol=1e-12, atol=0)
    torch.testing.assert_close(prepared.features["expert"], net.expert(x), rtol=1e-12, atol=0)
    assert torch.equal(prepared.features["labels"], y)


@pytest.mark.parametrize("leading", [(), (5,), (3, 2)], ids=["BxG", "SxBxG", "SxTxBxG"])
def test_loss_shapes_and_values_match_a_per_sample_loop(leading):
    net, batch = small_problem()
    prepared = net.prepare(batch)
    gates = random_gates((*leading, 4, SMALL.num_gates))
    losses = net.loss(prepared, gates)
    assert losses.shape == (*leading, 4)
    flat_gates = gates.reshape(-1, 4, SMALL.num_gates)
    expected = torch.stack([reference_loss(net, batch, g) for g in flat_gates])
    torch.testing.assert_close(losses.reshape(-1, 4), expected, rtol=1e-12, atol=1e-14)
    assert losses.min() > 0


def test_loss_accepts_fractional_gates():
    net, batch = small_problem()
    gates = torch.rand(4, SMALL.num_gates, generator=torch.Generator().manual_seed(0)).double()
    torch.testing.assert_close(
        net.loss(net.prepare(batch), gates), reference_loss(net, batch, gates),
        rtol=1e-12, atol=1e-14,
    )


def test_loss_does_not_rerun_the_gater_or_the_expert():
    net, batch = small_problem()
    calls = dict.fromkeys(LAYERS, 0)

    def counter(name):
        def hook(module, inputs, output):
            calls[name] += 1

        return hook

    handles = [getattr(net, n).register_forward_hook(counter(n)) for n in LAYERS]
    try:
        prepared = net.prepare(batch)
        assert calls == {"gater_hidden": 1, "gater_out": 1, "expert": 1, "output": 0}
        net.loss(prepared, random_gates((5, 4, SMALL.num_gates)))
        assert calls == {"gater_hidden": 1, "gater_out": 1, "expert": 1, "output": 1}
        net.gate_flip_losses(prepared, random_gates((5, 4, SMALL.num_gates)))
        assert calls["expert"] == 1 and calls["gater_hidden"] == 1 and calls["gater_out"] == 1
    finally:
        for handle in handles:
            handle.remove()


def explicit_flip_losses(net, prepared, gates: torch.Tensor) -> torch.Tensor:
    """`2 x ... x B x G` losses with gate i on / off by one `loss` call per gate and value."""
    out = torch.empty(2, *gates.shape, dtype=gates.dtype)
    for i in range(gates.shape[-1]):
        for side, value in enumerate((1.0, 0.0)):
            flipped = gates.clone()
            flipped[..., i] = value
            out[side, ..., i] = net.loss(prepared, flipped)
    return out


@pytest.mark.parametrize("leading", [(), (3,), (2, 3)], ids=["BxG", "SxBxG", "SxTxBxG"])
@pytest.mark.parametrize("kind", ["binary", "fractional"])
@pytest.mark.parametrize(
    "flips",
    [ConditionalNetwork.gate_flip_losses, StochasticGraph.gate_flip_losses],
    ids=["override", "generic"],
)
def test_gate_flip_losses_match_explicit_flips(flips, kind, leading):
    net, batch = small_problem(seed=2)
    prepared = net.prepare(batch)
    shape = (*leading, 4, SMALL.num_gates)
    if kind == "binary":
        gates = random_gates(shape, seed=3)
    else:
        gates = torch.rand(shape, generator=torch.Generator().manual_seed(3)).double()
    with torch.no_grad():
        got = flips(net, prepared, gates)
        expected = explicit_flip_losses(net, prepared, gates)
    assert got.shape == (2, *shape)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_gate_flip_losses_at_the_sampled_value_equal_the_loss():
    net, batch = small_problem(seed=4)
    prepared = net.prepare(batch)
    gates = random_gates((3, 4, SMALL.num_gates), seed=5)
    with torch.no_grad():
        flips = net.gate_flip_losses(prepared, gates)
        losses = net.loss(prepared, gates).unsqueeze(-1).expand_as(gates)
    at_sample = torch.where(gates.bool(), flips[0], flips[1])
    torch.testing.assert_close(at_sample, losses, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("leading", [(), (3,)], ids=["plain", "draws"])
@pytest.mark.parametrize(
    "gains",
    [ConditionalNetwork.gate_flip_gains, StochasticGraph.gate_flip_gains],
    ids=["override", "generic"],
)
def test_gate_flip_gains_are_the_difference_of_explicit_flips(gains, leading):
    net, batch = small_problem(seed=6)
    prepared = net.prepare(batch)
    gates = random_gates((*leading, 4, SMALL.num_gates), seed=7)
    with torch.no_grad():
        got = gains(net, prepared, gates)
        on, off = explicit_flip_losses(net, prepared, gates)
    assert got.shape == gates.shape and got.dtype == gates.dtype
    torch.testing.assert_close(got, on - off, rtol=1e-12, atol=1e-12)


def test_gate_flip_gains_stay_finite_and_accurate_for_large_contributions():
    """Gates that move class scores by up to +-150 (a spread of 300 across classes; `exp(-300)`
    is 0 in float32): the float64 normaliser, shifted by the maxima, keeps every gain finite
    and equal to the explicit flips, for float32 gates and network."""
    net, batch = small_problem(seed=8)
    with torch.no_grad():
        contribution = net.prepare(batch).features["expert"].unsqueeze(-1) * net.output.weight.T
        net.output.weight.mul_(150 / contribution.abs().max())
    prepared = net.prepare(batch)
    gates = random_gates((4, SMALL.num_gates), seed=9)
    with torch.no_grad():
        on, off = explicit_flip_losses(net, prepared, gates)
        net.float()
        got = net.gate_flip_gains(
            net.prepare(tuple(t.float() if t.is_floating_point() else t for t in batch)),
            gates.float())
    assert (on - off).abs().max() > 100 and torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), on - off, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    "field", ["num_inputs", "num_gater_hidden", "num_gates", "num_classes"]
)
@pytest.mark.parametrize("value", [0, -1])
def test_invalid_config_sizes_raise(field, value):
    with pytest.raises(ValueError, match=field):
        ConditionalConfig(**{field: value})


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        SMALL.num_gates = 7


# --- shared-input layers and probes (the Monte Carlo fast path) ------------------------------


def test_shared_input_layers_are_the_inputs_the_layers_see_in_prepare():
    net, batch = small_problem()
    seen = {}

    def capture(name):
        def hook(module, inputs):
            seen[name] = inputs[0]

        return hook

    handles = [getattr(net, n).register_forward_pre_hook(capture(n)) for n in LAYERS]
    try:
        net.prepare(batch)
    finally:
        for handle in handles:
            handle.remove()
    shared = net.shared_input_layers(batch)
    # The output layer's input is `gates * expert`: it changes with the gates.
    assert list(shared) == ["gater_hidden", "gater_out", "expert"]
    for name, inputs in shared.items():
        assert torch.equal(inputs, seen[name]), name
        assert inputs.shape == (4, getattr(net, name).in_features), name


def test_probes_leave_values_unchanged_and_carry_the_layer_output_gradients():
    net, batch = small_problem(seed=6)
    shared = net.shared_input_layers(batch)
    probes = {
        name: torch.zeros(4, getattr(net, name).out_features, dtype=torch.float64,
                          requires_grad=True)
        for name in shared
    }
    plain = net.prepare(batch)
    probed = net.prepare(batch, probes=probes)
    assert torch.equal(probed.logits, plain.logits)
    assert torch.equal(probed.features["expert"], plain.features["expert"])
    # Any function of the logits and of the loss at fixed (fractional) gates.
    gates = torch.rand(4, SMALL.num_gates, generator=torch.Generator().manual_seed(7)).double()
    weights = torch.randn(4, SMALL.num_gates, generator=torch.Generator().manual_seed(8)).double()
    value = net.loss(probed, gates).sum() + (weights * torch.sigmoid(probed.logits)).sum()
    params = dict(net.named_parameters())
    names = [f"{n}.{kind}" for n in shared for kind in ("weight", "bias")]
    grads = torch.autograd.grad(value, [*probes.values(), *(params[n] for n in names)])
    deltas = dict(zip(probes, grads[:len(probes)], strict=True))
    by_name = dict(zip(names, grads[len(probes):], strict=True))
    for name, inputs in shared.items():
        delta = deltas[name]
        assert delta.abs().max() > 0, name  # a zero gradient would make the check vacuous
        # y = H W^T + b: dW = Delta^T H and db = sum_j Delta_j.
        torch.testing.assert_close(by_name[f"{name}.weight"], delta.T @ inputs.detach(),
                                   rtol=1e-12, atol=1e-14, msg=name)
        torch.testing.assert_close(by_name[f"{name}.bias"], delta.sum(0), rtol=1e-12,
                                   atol=1e-14, msg=name)


def test_a_probe_for_an_unknown_layer_raises():
    net, batch = small_problem()
    with pytest.raises(KeyError, match="output"):
        net.prepare(batch, probes={"output": torch.zeros(4, SMALL.num_classes)})


def test_graphs_declare_no_shared_input_layers_by_default():
    sbn = SigmoidBeliefNet(6, (4, 3), torch.Generator().manual_seed(0))
    assert sbn.shared_input_layers((torch.zeros(2, 6),)) == {}
