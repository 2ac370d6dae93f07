"""Straight-through estimators, paper section 4, Eq. 13."""

from __future__ import annotations

from typing import Any

import torch

from estimator_lab.estimators.base import GradientEstimator, bernoulli_gates
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


@register_estimator("st")
class StraightThrough(GradientEstimator):
    """Forward the hard gate `b = 1[u < sigmoid(a)]`; backward `dL/da := dL/db` (biased).

    The gate enters the loss as `b + (a - stopgrad(a))`, whose value is exactly `b` and whose
    derivative with respect to `a` is one. The paper found this variant (without the sigmoid
    derivative) trained best.

    References:
        Hinton (2012), lecture 15b; Bengio, Léonard, Courville (2013), Eq. 13.
    """

    is_unbiased = False
    multilayer = True
    discrete_noise = True

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        return graph.sample(prepared, noise, _straight_through_gate).losses.mean()


def _straight_through_gate(layer: int, logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return bernoulli_gates(logits.detach(), noise) + (logits - logits.detach())
