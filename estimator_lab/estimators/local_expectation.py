"""Local expectation gradients (Titsias and Lázaro-Gredilla, 2015) for Bernoulli gates."""

from __future__ import annotations

from typing import Any

import torch

from estimator_lab.estimators.base import (
    GradientEstimator,
    bernoulli_gates,
    require_single_layer,
)
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


@register_estimator("local-expectation")
class LocalExpectation(GradientEstimator):
    """`g_{a_i} = sigmoid'(a_i) [L(b; b_i=1) - L(b; b_i=0)]`, the other gates sampled.

    Unbiased: for each gate the expectation over `b_i` is done exactly and only the other gates
    are sampled. It costs one loss per gate flip; on the paper network the output layer is
    linear in the gates, so all flips cost two `B x classes` by `classes x G` products
    (`ConditionalNetwork.gate_flip_gains`). Parameters the loss touches directly get the
    pathwise gradient at the sampled gates. One gate layer only: on a multi-layer graph a
    flip would change the layers below it.

    References:
        Titsias, Lázaro-Gredilla (2015), "Local expectation gradients for black box variational
        inference".
    """

    is_unbiased = True
    discrete_noise = True
    def evaluations(self, graph: StochasticGraph | None = None) -> int | None:
        """`2 G + 1` on a graph of `G` gates (`None` without one)."""
        return None if graph is None else 2 * graph.num_gates + 1

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        require_single_layer(graph, self)
        gates = bernoulli_gates(prepared.logits.detach(), noise)
        losses = graph.loss(prepared, gates)
        with torch.no_grad():  # constants of the surrogate: nothing kept for the backward pass
            flips = graph.gate_flip_gains(prepared, gates)
        gain = (torch.sigmoid(prepared.logits) * flips).sum(-1)
        return (losses + gain).mean()
