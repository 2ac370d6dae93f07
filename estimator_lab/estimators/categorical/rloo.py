"""REINFORCE leave-one-out for categorical gates: `S` samples per draw, each centred by the rest."""

from __future__ import annotations

from typing import Any

import torch

from estimator_lab.estimators.categorical.base import (
    CategoricalEstimator,
    categorical_trace_log_prob,
    require_categorical,
)
from estimator_lab.estimators.categorical.registry import register_categorical_estimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph
from estimator_lab.graphs.categorical import hard_categorical


@register_categorical_estimator("rloo")
class CategoricalRloo(CategoricalEstimator):
    """`g = (1/S) sum_s (L(D_s) - mean_{s' != s} L(D_s')) (D_s - p)`, `S >= 2` samples.

    One draw reads `S x B x N x K` noise: `S` independent gate samples of the batch. The
    leave-one-out mean is independent of sample `s`, so each term is unbiased. The surrogate
    is `mean_b mean_s [L_sb + stopgrad(L_sb - loo_sb) log P(z_sb)]`; one draw costs `S` loss
    evaluations.

    Args:
        num_samples: `S >= 2`.

    References:
        Kool, van Hoof, Welling (2019), "Buy 4 REINFORCE samples, get a baseline for free!".
    """

    is_unbiased = True
    discrete_noise = True
    evaluations_per_draw = 2  # the default num_samples: see `evaluations`

    def __init__(self, num_samples: int = 2) -> None:
        if int(num_samples) != num_samples or num_samples < 2:
            raise ValueError(f"rloo needs num_samples >= 2, got {num_samples}")
        self.num_samples = int(num_samples)

    def noise_shape(self, graph: StochasticGraph, prepared: PreparedBatch) -> tuple[int, ...]:
        return (self.num_samples, *super().noise_shape(graph, prepared))

    def evaluations(self, graph: StochasticGraph) -> int:
        return self.num_samples

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        require_categorical(graph, self)
        trace = graph.sample(prepared, noise, hard_categorical)
        losses = trace.losses  # S x B
        held = losses.detach()
        others = (held.sum(0, keepdim=True) - held) / (self.num_samples - 1)
        return (losses + (held - others) * categorical_trace_log_prob(trace)).mean()

    def __repr__(self) -> str:
        return f"CategoricalRloo(num_samples={self.num_samples})"
