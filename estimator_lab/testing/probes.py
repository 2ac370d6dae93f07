"""The graphs the estimator contract probes, built by `testing.problems`.

Small seeded conditional networks (5 inputs, 3 gater units, 3 classes) and a two-layer sigmoid
belief net (`sbn:3-2,inputs=4`): the same graphs, in the same order, on every call, so a
contract report is a function of the estimator and the noise seed only.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.conditional import ConditionalConfig, ConditionalNetwork
from estimator_lab.graphs.specs import build_problem
from estimator_lab.testing.problems import conditional_problem
from estimator_lab.testing.subject import Batch


class NetworkWithUnusedParameter(ConditionalNetwork):
    """A conditional network with an extra parameter `unused` that nothing reads."""

    def __init__(self, config: ConditionalConfig, generator: torch.Generator) -> None:
        super().__init__(config, generator)
        self.unused = nn.Parameter(torch.ones(2))


def conditional_probe(
    num_gates: int,
    batch_size: int,
    dtype: torch.dtype,
    *,
    output_scale: float = 1.0,
    network: type[ConditionalNetwork] = ConditionalNetwork,
) -> tuple[ConditionalNetwork, Batch]:
    """A seeded conditional network (5 inputs, 3 gater units, 3 classes) and a batch.

    Inputs uniform on `[0, 1)`, drawn in float32 whatever `dtype` (`conditional_problem`), so
    the float32 and float64 probes hold the same numbers; the output weights times
    `output_scale`.
    """
    return conditional_problem(
        num_gates, batch_size, num_inputs=5, num_gater_hidden=3, num_classes=3, dtype=dtype,
        output_scale=output_scale, inputs="uniform", draw_dtype=torch.float32, network=network)


def sbn_probe(batch_size: int, dtype: torch.dtype) -> tuple[StochasticGraph, Batch]:
    """A seeded two-layer sigmoid belief net (4 inputs, layers of 3 and 2 gates) and a batch."""
    problem = build_problem(f"sbn:3-2,inputs=4,batch={batch_size}", dtype=dtype)
    return problem.graph, problem.batch


def probe_problems(multilayer: bool,
                   dtype: torch.dtype) -> list[tuple[str, StochasticGraph, Batch]]:
    """The graphs most checks run on: a 5-gate conditional net, and an SBN if multilayer."""
    problems = [("conditional-5", *conditional_probe(5, 3, dtype))]
    if multilayer:
        problems.append(("sbn-3-2", *sbn_probe(3, dtype)))
    return problems


def copy_to(graph: StochasticGraph, batch: Batch, dtype=None, device=None):
    """A copy of `graph` and `batch` in `dtype` (floating tensors only) on `device`."""
    graph = copy.deepcopy(graph).to(dtype=dtype, device=device)
    batch = tuple(
        t.to(dtype=dtype, device=device) if t.is_floating_point() else t.to(device=device)
        for t in batch
    )
    return graph, batch


def reference_problems(multilayer: bool) -> list[tuple[str, StochasticGraph, Batch]]:
    """Enumerable float64 graphs for the unbiasedness check.

    `conditional-4`: 4 gates, 2 examples, the output weights scaled by 8 so the loss depends
    on the gates (81 coordinates). `sbn-3-2`: layers of 3 and 2 gates above 4 binary inputs,
    2 examples (41 coordinates), for multi-layer estimators. All gate probabilities lie in
    `[0.09, 0.91]`, so no coordinate's draws hinge on an event too rare for `num_draws`.
    """
    problems = [("conditional-4", *conditional_probe(4, 2, torch.float64, output_scale=8.0))]
    if multilayer:
        problems.append(("sbn-3-2", *sbn_probe(2, torch.float64)))
    return problems
