"""What every categorical-gate estimator shares: flags, noise layout, the graph check."""

from __future__ import annotations

from typing import ClassVar

import torch

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.graphs.base import GateTrace, PreparedBatch, StochasticGraph
from estimator_lab.graphs.categorical import categorical_log_prob, gate_distribution


class CategoricalEstimator(GradientEstimator):
    """Base of the estimators for `CategoricalGraph`s (`distribution = "categorical"`).

    One draw reads `B x N x K` uniforms by default, `K` per gate (the Gumbel-max noise of
    `categorical_gates`); estimators with several gate samples put them in front.
    """

    distribution: ClassVar[str] = "categorical"

    def noise_shape(self, graph: StochasticGraph, prepared: PreparedBatch) -> tuple[int, ...]:
        """`B x N x K`: one uniform per class of every gate."""
        require_categorical(graph, self)
        return tuple(prepared.logits.shape)


def require_categorical(graph: StochasticGraph, estimator: GradientEstimator) -> None:
    """Raises `ValueError` when a categorical estimator meets a graph of other gates."""
    distribution = gate_distribution(graph)
    if distribution != "categorical":
        raise ValueError(f"estimator {estimator.name!r} needs categorical gates; "
                         f"{type(graph).__name__} has {distribution} gates")


def categorical_trace_log_prob(trace: GateTrace) -> torch.Tensor:
    """`log P(z)` of a trace's one-hot gates, summed over gates: a `... x B` tensor."""
    return categorical_log_prob(trace.logits[0], trace.gates[0]).sum(-1)
