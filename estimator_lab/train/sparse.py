"""Conditional computation made real: the expert path evaluated only for active gates.

At test time the gates are deterministic (`deterministic_gates`), so the gater is evaluated
first and the expert units whose gate is 0 need not be computed at all: for one example with
active set `S`, the class scores are `b_out + W_out[:, S] (h_S * (W_exp[S] x + b_exp[S]))`.
The gater itself stays dense; at 10 % activity the expert and output layers cost a tenth of
their dense cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from estimator_lab.graphs import ConditionalNetwork
from estimator_lab.train.gaters import GaterConfig, deterministic_gates


def _gates(net: ConditionalNetwork, gater: GaterConfig, x: torch.Tensor, threshold: float):
    return deterministic_gates(gater, net.logits((x, None)), threshold)


@torch.no_grad()
def dense_scores(
    net: ConditionalNetwork, gater: GaterConfig, x: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Class scores with every expert unit computed: a `B x classes` tensor for `B x in` inputs."""
    return net.output(_gates(net, gater, x, threshold) * net.expert(x))


@torch.no_grad()
def sparse_scores(
    net: ConditionalNetwork, gater: GaterConfig, x: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Class scores computing only the active expert units, example by example.

    Args:
        x: a `B x in` tensor of inputs.

    Returns:
        a `B x classes` tensor, equal to `dense_scores` up to rounding.
    """
    gates = _gates(net, gater, x, threshold)
    rows = []
    for example, example_gates in zip(x, gates, strict=True):
        active = example_gates.nonzero().squeeze(-1)
        expert = torch.addmv(net.expert.bias[active], net.expert.weight[active], example)
        rows.append(torch.addmv(net.output.bias, net.output.weight[:, active],
                                example_gates[active] * expert))
    return torch.stack(rows)


def multiply_adds(net: ConditionalNetwork, active_fraction: float) -> tuple[float, float]:
    """Multiply-adds per example, dense and sparse, at a fraction `active_fraction` of gates on.

    Returns:
        `(dense, sparse)`: the gater (`in x hidden + hidden x G`) is paid by both; the expert
        (`in x G`) and output (`G x classes`) layers are paid for the active units only.
    """
    c = net.config
    gater = c.num_inputs * c.num_gater_hidden + c.num_gater_hidden * c.num_gates
    main = c.num_inputs * c.num_gates + c.num_gates * c.num_classes
    return float(gater + main), gater + active_fraction * main


@dataclass(frozen=True)
class SparseTiming:
    """Dense against sparse evaluation of one network on `examples` inputs, one at a time.

    Attributes:
        active_fraction: the fraction of gates on.
        dense_madds, sparse_madds: multiply-adds per example.
        dense_ms, sparse_ms: median wall-clock milliseconds per example over `repeats` passes.
        max_abs_difference: the largest difference between the two scores.
    """

    examples: int
    active_fraction: float
    dense_madds: float
    sparse_madds: float
    dense_ms: float
    sparse_ms: float
    max_abs_difference: float

    @property
    def madds_ratio(self) -> float:
        return self.dense_madds / self.sparse_madds

    @property
    def time_ratio(self) -> float:
        return self.dense_ms / self.sparse_ms


def time_sparse_inference(
    net: ConditionalNetwork, gater: GaterConfig, x: torch.Tensor, threshold: float,
    repeats: int = 3,
) -> SparseTiming:
    """Times dense and sparse evaluation example by example (batch size 1, the setting of
    conditional computation) and checks they agree.

    Args:
        x: a `N x in` tensor of inputs, evaluated one at a time.
        repeats: timed passes over the `N` inputs; the median is reported.
    """
    # Both one example at a time: a batched gater rounds differently, and a logit within rounding
    # of the threshold would flip its gate between the two.
    dense = torch.cat([dense_scores(net, gater, row[None], threshold) for row in x])
    sparse = torch.cat([sparse_scores(net, gater, row[None], threshold) for row in x])
    difference = (dense - sparse).abs().max().item()
    active = (_gates(net, gater, x, threshold) != 0).float().mean().item()

    def median_ms(function) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for row in x:
                function(net, gater, row[None], threshold)
            times.append((time.perf_counter() - start) * 1e3 / x.shape[0])
        return sorted(times)[len(times) // 2]

    dense_madds, sparse_madds = multiply_adds(net, active)
    return SparseTiming(
        examples=x.shape[0], active_fraction=active, dense_madds=dense_madds,
        sparse_madds=sparse_madds, dense_ms=median_ms(dense_scores),
        sparse_ms=median_ms(sparse_scores), max_abs_difference=difference,
    )
