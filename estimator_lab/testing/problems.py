"""Small seeded problems for tests: a graph and its batch, the same numbers on every call.

`conditional_problem` builds the paper's conditional network at toy sizes on a synthetic batch:
the tests of the graphs, the estimators and the engine use it, and so does the estimator
contract (`check_estimator`, through `testing.probes`). The named small graphs of the command
line (`build_problem`: `toy:...`, `sbn:...`, ...) and the full paper network (`paper_problem`)
are here too, so that one module gives every problem a test needs.

Every problem is a pure function of its arguments: a `torch.Generator` seeded with `seed`
initialises the parameters and then draws the batch (or a second one, seeded with
`batch_seed`, draws it), whatever the global RNG holds (BoTorch's
`botorch/utils/testing.py` ships its test problems the same way).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from estimator_lab.graphs.conditional import ConditionalConfig, ConditionalNetwork
from estimator_lab.graphs.paper import paper_problem
from estimator_lab.graphs.specs import GraphProblem, build_problem

INPUT_LAWS = ("normal", "uniform")
"""How `conditional_problem` draws its inputs: standard normal (`torch.randn`), or uniform on
`[0, 1)` (`torch.rand`)."""

__all__ = ["INPUT_LAWS", "GraphProblem", "build_problem", "conditional_problem", "paper_problem"]


def conditional_problem(
    num_gates: int = 4,
    batch_size: int = 3,
    *,
    num_inputs: int = 6,
    num_gater_hidden: int = 4,
    num_classes: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    output_scale: float = 4.0,
    inputs: str = "normal",
    draw_dtype: torch.dtype | None = None,
    network: type[ConditionalNetwork] = ConditionalNetwork,
    gate_bias: Sequence[float] | None = None,
    batch_seed: int | None = None,
) -> tuple[ConditionalNetwork, tuple[torch.Tensor, torch.Tensor]]:
    """A seeded conditional network at toy sizes and a synthetic batch `(x, y)`.

    One generator, seeded with `seed`, initialises `network(config, generator)` (PyTorch's
    `nn.Linear` scheme, in float32), then draws `x` from the law `inputs` in `draw_dtype`
    and then the labels `y`, uniform over the classes; with a `batch_seed`, a second generator
    seeded with it draws `x` and `y` instead. A `gate_bias` replaces the gater's output bias
    (the gate logits' offsets) in float32, before the network is converted to `dtype` and its
    output weights multiplied by `output_scale`: at the default initialisation the loss is
    nearly linear in the gates, scaled by 4 or 8 it depends on them visibly. The default
    (float64, 4 gates, 3 examples, normal inputs) is what most estimator tests run on; an
    enumeration over its gates has `2^(num_gates * batch_size)` configurations.

    Args:
        num_gates: gates, `G` (the expert units).
        batch_size: examples, `B`.
        num_inputs: input features.
        num_gater_hidden: `tanh` units in the gater bottleneck.
        num_classes: output classes.
        seed: seeds the parameters, and the batch unless `batch_seed` is given.
        dtype: the dtype of the network and of `x`.
        output_scale: the factor on the output layer's weights.
        inputs: the law of `x`, one of `INPUT_LAWS`.
        draw_dtype: the dtype `x` is drawn in before its conversion to `dtype` (default:
            `dtype`). The contract draws in float32 for every `dtype`, so that its float32 and
            float64 problems hold the same inputs.
        network: `ConditionalNetwork` or a subclass with its constructor (the contract adds a
            parameter nothing reads).
        gate_bias: `num_gates` values for `gater_out.bias`, rounded to float32 like the
            initialisation they replace (default: keep the initialisation). Logits far from 0
            put gates near the boundary `p in {0, 1}`.
        batch_seed: seeds a generator of its own for the batch, so that the batch does not
            change with the network's sizes (default: the parameters' generator draws it).

    Returns:
        the network in `dtype` and its batch: `x`, a `batch_size x num_inputs` tensor in
        `dtype`, and `y`, `batch_size` int64 labels.

    Raises:
        ValueError: for an `inputs` not in `INPUT_LAWS`, a size below 1, or a `gate_bias` not
            of length `num_gates`.

    Example:
        >>> graph, (x, y) = conditional_problem(num_gates=5)
        >>> graph.num_gates, tuple(x.shape), x.dtype, tuple(y.shape), y.dtype
        (5, (3, 6), torch.float64, (3,), torch.int64)
        >>> graph.loss(graph.prepare((x, y)), torch.ones(2, 3, 5)).shape
        torch.Size([2, 3])
        >>> again, (x_again, _) = conditional_problem(num_gates=5)
        >>> torch.equal(x, x_again) and torch.equal(graph.output.weight, again.output.weight)
        True
        >>> biased, (x_own, _) = conditional_problem(gate_bias=[-3.0, 0.0, 0.7, 2.5],
        ...                                          batch_seed=1)
        >>> torch.equal(biased.gater_out.bias, torch.tensor([-3.0, 0.0, 0.7, 2.5]).double())
        True
        >>> torch.equal(x_own, conditional_problem(num_gates=9, batch_seed=1)[1][0])
        True
    """
    if inputs not in INPUT_LAWS:
        raise ValueError(f"inputs must be one of {INPUT_LAWS}, got {inputs!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if gate_bias is not None and len(gate_bias) != num_gates:
        raise ValueError(f"gate_bias needs num_gates={num_gates} values, got {len(gate_bias)}")
    config = ConditionalConfig(num_inputs=num_inputs, num_gater_hidden=num_gater_hidden,
                               num_gates=num_gates, num_classes=num_classes)
    generator = torch.Generator().manual_seed(seed)
    graph = network(config, generator)
    with torch.no_grad():
        if gate_bias is not None:
            graph.gater_out.bias.copy_(torch.tensor(gate_bias))
        graph.to(dtype)
        graph.output.weight.mul_(output_scale)
    if batch_seed is not None:
        generator = torch.Generator().manual_seed(batch_seed)
    law = torch.randn if inputs == "normal" else torch.rand
    x = law(batch_size, num_inputs, generator=generator, dtype=draw_dtype or dtype)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator)
    return graph, (x.to(dtype), y)
