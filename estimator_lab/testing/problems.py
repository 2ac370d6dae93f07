"""Small seeded problems for tests: a graph and its batch, the same numbers on every call.

`conditional_problem` builds the paper's conditional network at toy sizes on a synthetic batch:
the tests of the graphs, the estimators and the engine use it, and so does the estimator
contract (`check_estimator`, through `testing.probes`). The named small graphs of the command
line (`build_problem`: `toy:...`, `sbn:...`, ...) and the full paper network (`paper_problem`)
are here too, so that one module gives every problem a test needs.

Every problem is a pure function of its arguments: a `torch.Generator` seeded with `seed`
initialises the parameters and then draws the batch, whatever the global RNG holds (BoTorch's
`botorch/utils/testing.py` ships its test problems the same way).
"""

from __future__ import annotations

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
) -> tuple[ConditionalNetwork, tuple[torch.Tensor, torch.Tensor]]:
    """A seeded conditional network at toy sizes and a synthetic batch `(x, y)`.

    One generator, seeded with `seed`, initialises `network(config, generator)` (PyTorch's
    `nn.Linear` scheme, in float32), then draws `x` from the law `inputs` in `draw_dtype`
    and then the labels `y`, uniform over the classes. The network is converted to `dtype` and
    its output weights multiplied by `output_scale`: at the default initialisation the loss is
    nearly linear in the gates, scaled by 4 or 8 it depends on them visibly. The default
    (float64, 4 gates, 3 examples, normal inputs) is what most estimator tests run on; an
    enumeration over its gates has `2^(num_gates * batch_size)` configurations.

    Args:
        num_gates: gates, `G` (the expert units).
        batch_size: examples, `B`.
        num_inputs: input features.
        num_gater_hidden: `tanh` units in the gater bottleneck.
        num_classes: output classes.
        seed: seeds the parameters and the batch.
        dtype: the dtype of the network and of `x`.
        output_scale: the factor on the output layer's weights.
        inputs: the law of `x`, one of `INPUT_LAWS`.
        draw_dtype: the dtype `x` is drawn in before its conversion to `dtype` (default:
            `dtype`). The contract draws in float32 for every `dtype`, so that its float32 and
            float64 problems hold the same inputs.
        network: `ConditionalNetwork` or a subclass with its constructor (the contract adds a
            parameter nothing reads).

    Returns:
        the network in `dtype` and its batch: `x`, a `batch_size x num_inputs` tensor in
        `dtype`, and `y`, `batch_size` int64 labels.

    Raises:
        ValueError: for an `inputs` not in `INPUT_LAWS`, or a size below 1.

    Example:
        >>> graph, (x, y) = conditional_problem(num_gates=5)
        >>> graph.num_gates, tuple(x.shape), x.dtype, tuple(y.shape), y.dtype
        (5, (3, 6), torch.float64, (3,), torch.int64)
        >>> graph.loss(graph.prepare((x, y)), torch.ones(2, 3, 5)).shape
        torch.Size([2, 3])
        >>> again, (x_again, _) = conditional_problem(num_gates=5)
        >>> torch.equal(x, x_again) and torch.equal(graph.output.weight, again.output.weight)
        True
    """
    if inputs not in INPUT_LAWS:
        raise ValueError(f"inputs must be one of {INPUT_LAWS}, got {inputs!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    config = ConditionalConfig(num_inputs=num_inputs, num_gater_hidden=num_gater_hidden,
                               num_gates=num_gates, num_classes=num_classes)
    generator = torch.Generator().manual_seed(seed)
    graph = network(config, generator).to(dtype)
    with torch.no_grad():
        graph.output.weight.mul_(output_scale)
    law = torch.randn if inputs == "normal" else torch.rand
    x = law(batch_size, num_inputs, generator=generator, dtype=draw_dtype or dtype)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator)
    return graph, (x.to(dtype), y)
