"""The base class, graph check and registry of top-k-gate estimators."""

from __future__ import annotations

from typing import ClassVar

import torch

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.class_gate import ClassGateEstimator, require_gates
from estimator_lab.estimators.registry import EstimatorRegistry
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


class TopKEstimator(ClassGateEstimator):
    """Base of the estimators for `TopKGraph`s (`distribution = "topk"`), whose `B x N x K`
    noise is the Gumbel-top-k noise of `topk_gates`."""

    distribution: ClassVar[str] = "topk"
    gate_label: ClassVar[str] = "top-k"

    def hard_sample(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The losses at the k-hot Gumbel-top-k masks of `noise` and their Plackett-Luce
        `log P(S)` (`graph.log_prob`)."""
        trace = graph.sample(prepared, noise, graph.hard_gate)
        return trace.losses, graph.log_prob(trace.logits[0], trace.gates[0])


def require_topk(graph: StochasticGraph, estimator: GradientEstimator) -> None:
    """Raises `ValueError` when a top-k estimator meets a graph of other gates."""
    require_gates(graph, estimator, "topk", "top-k")


_TOPK = EstimatorRegistry("topk", "top-k")
register_topk_estimator = _TOPK.register
available_topk = _TOPK.available
get_topk_estimator = _TOPK.get
