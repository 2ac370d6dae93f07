"""The shared problem factory: seeded, independent of the global RNG, sizes and laws as asked."""

import pytest
import torch
from torch import nn

from estimator_lab.graphs import ConditionalNetwork
from estimator_lab.testing import conditional_problem


def parameters(graph) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in graph.named_parameters()}


def assert_same_problem(a, b):
    (graph_a, batch_a), (graph_b, batch_b) = a, b
    assert parameters(graph_a).keys() == parameters(graph_b).keys()
    for name, value in parameters(graph_a).items():
        assert torch.equal(value, parameters(graph_b)[name]), name
    for x, y in zip(batch_a, batch_b, strict=True):
        assert x.dtype == y.dtype and torch.equal(x, y)


def test_the_problem_is_a_function_of_its_arguments_only():
    torch.manual_seed(0)
    first = conditional_problem(num_gates=5, seed=3)
    torch.manual_seed(1)
    assert_same_problem(first, conditional_problem(num_gates=5, seed=3))
    other, _ = conditional_problem(num_gates=5, seed=4)
    assert not torch.equal(other.expert.weight, first[0].expert.weight)


def test_sizes_dtypes_and_laws():
    graph, (x, y) = conditional_problem(7, 2, num_inputs=9, num_gater_hidden=5, num_classes=4,
                                        dtype=torch.float32, inputs="uniform")
    assert graph.config.num_inputs == 9 and graph.config.num_gater_hidden == 5
    assert graph.num_gates == 7 and graph.config.num_classes == 4
    assert {p.dtype for p in graph.parameters()} == {torch.float32}
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((2, 9), torch.float32, (2,), torch.int64)
    assert 0 <= float(x.min()) and float(x.max()) < 1 and 0 <= int(y.min()) <= int(y.max()) < 4
    _, (normal, _) = conditional_problem(batch_size=200)
    assert float(normal.min()) < 0 < float(normal.max())
    with pytest.raises(ValueError, match="inputs must be one of"):
        conditional_problem(inputs="cauchy")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        conditional_problem(batch_size=0)


def test_output_scale_multiplies_the_output_weights_only():
    plain, batch = conditional_problem(output_scale=1.0)
    scaled, scaled_batch = conditional_problem(output_scale=8.0)
    assert torch.equal(scaled.output.weight, 8 * plain.output.weight)
    assert torch.equal(scaled.output.bias, plain.output.bias)
    assert torch.equal(scaled.expert.weight, plain.expert.weight)
    assert all(torch.equal(a, b) for a, b in zip(batch, scaled_batch, strict=True))


def test_a_float32_draw_holds_the_same_inputs_in_every_dtype():
    low = conditional_problem(dtype=torch.float32, inputs="uniform")
    high = conditional_problem(dtype=torch.float64, inputs="uniform", draw_dtype=torch.float32)
    assert torch.equal(high[1][0], low[1][0].double())
    assert torch.equal(high[0].gater_out.weight, low[0].gater_out.weight.double())
    drawn_wide = conditional_problem(dtype=torch.float64, inputs="uniform")
    assert not torch.equal(drawn_wide[1][0], high[1][0])


def test_a_subclass_of_the_network_gets_the_same_initialisation():
    class WithExtra(ConditionalNetwork):
        def __init__(self, config, generator):
            super().__init__(config, generator)
            self.extra = nn.Parameter(torch.zeros(2))

    graph, batch = conditional_problem(network=WithExtra)
    plain, plain_batch = conditional_problem()
    assert isinstance(graph, WithExtra) and graph.extra.dtype == torch.float64
    assert torch.equal(graph.output.weight, plain.output.weight)
    assert torch.equal(batch[0], plain_batch[0])


def test_gate_bias_replaces_the_gater_bias_in_float32_only():
    bias = [-3.0, -0.5, 0.7, 2.5]
    plain, batch = conditional_problem()
    biased, biased_batch = conditional_problem(gate_bias=bias)
    assert torch.equal(biased.gater_out.bias, torch.tensor(bias).double())
    assert biased.gater_out.bias[2].item() != 0.7  # rounded to float32 like the initialisation
    for name, value in parameters(plain).items():
        assert name == "gater_out.bias" or torch.equal(value, parameters(biased)[name]), name
    assert all(torch.equal(a, b) for a, b in zip(batch, biased_batch, strict=True))
    with pytest.raises(ValueError, match="gate_bias needs num_gates=4 values, got 3"):
        conditional_problem(gate_bias=bias[:3])


def test_a_batch_seed_draws_the_batch_apart_from_the_parameters():
    plain, batch = conditional_problem(seed=0)
    own, own_batch = conditional_problem(seed=0, batch_seed=1)
    assert_same_problem((plain, ()), (own, ()))
    assert not torch.equal(own_batch[0], batch[0])
    generator = torch.Generator().manual_seed(1)
    assert torch.equal(own_batch[0], torch.randn(3, 6, generator=generator, dtype=torch.float64))
    assert torch.equal(own_batch[1], torch.randint(0, 3, (3,), generator=generator))
    _, wider_batch = conditional_problem(num_gates=9, num_gater_hidden=7, seed=5, batch_seed=1)
    assert all(torch.equal(a, b) for a, b in zip(own_batch, wider_batch, strict=True))
