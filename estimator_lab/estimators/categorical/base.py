"""What every categorical-gate estimator shares: flags, noise layout, the graph check, the hard
sample."""

from __future__ import annotations

from typing import ClassVar

import torch

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.class_gate import ClassGateEstimator, require_gates
from estimator_lab.graphs.base import GateTrace, PreparedBatch, StochasticGraph
from estimator_lab.graphs.categorical import categorical_log_prob, hard_categorical


class CategoricalEstimator(ClassGateEstimator):
    """Base of the estimators for `CategoricalGraph`s (`distribution = "categorical"`), whose
    `B x N x K` noise is the Gumbel-max noise of `categorical_gates`."""

    distribution: ClassVar[str] = "categorical"
    gate_label: ClassVar[str] = "categorical"

    def hard_sample(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The losses at the one-hot Gumbel-max gates of `noise` and their `log P(z)`."""
        trace = graph.sample(prepared, noise, hard_categorical)
        return trace.losses, categorical_trace_log_prob(trace)


def require_categorical(graph: StochasticGraph, estimator: GradientEstimator) -> None:
    """Raises `ValueError` when a categorical estimator meets a graph of other gates."""
    require_gates(graph, estimator, "categorical", "categorical")


def categorical_trace_log_prob(trace: GateTrace) -> torch.Tensor:
    """`log P(z)` of a trace's one-hot gates, summed over gates: a `... x B` tensor."""
    return categorical_log_prob(trace.logits[0], trace.gates[0]).sum(-1)
