"""REINFORCE (score function) for Bernoulli gates, paper section 3, Theorem 1."""

from __future__ import annotations

from typing import Any

import torch

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


class ScoreFunction(GradientEstimator):
    """The score-function surrogate of REINFORCE and RLOO, for the gates of any distribution.

    With the losses `L` and log-probabilities `log P` of `hard_sample` (per example, over any
    leading sample dims), the surrogate is `mean [L + stopgrad(w) log P]` with the weights
    `w = centred(L)` (`L` itself for plain REINFORCE): its value is the mean loss, the logits
    get the score term `w d log P / d logits`, and every parameter the loss touches directly
    its pathwise gradient at the sampled gates.
    """

    is_unbiased = True
    discrete_noise = True

    def centred(self, losses: torch.Tensor) -> torch.Tensor:
        """The detached weights of the score terms (by default the losses themselves)."""
        return losses.detach()

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        self.check_graph(graph)
        losses, log_prob = self.hard_sample(graph, prepared, noise)
        return (losses + self.centred(losses) * log_prob).mean()


@register_estimator("reinforce")
class Reinforce(ScoreFunction):
    """The unbiased score-function estimator `g_a = L(b) (b - p)`, without a baseline.

    With `b = 1[u < p]` and `p = sigmoid(a)`, the surrogate
    `mean_j [L_j(b) + stopgrad(L_j(b)) log P(b_j | a_j)]` differentiates to the pathwise gradient
    of the parameters the loss touches directly plus the score term `L_j (b_j - p_j) / B` on the
    gate logits of example `j`. Each example's loss is paired with its own gates only. On a
    multi-layer graph the score term sums `log P` over every layer's gates.

    Example:
        >>> from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork
        >>> config = ConditionalConfig(num_inputs=8, num_gater_hidden=4, num_gates=3)
        >>> net = ConditionalNetwork(config, torch.Generator().manual_seed(0))
        >>> prepared = net.prepare((torch.rand(2, 8), torch.tensor([0, 1])))
        >>> est = Reinforce()
        >>> s = est.surrogate(net, prepared, torch.rand(2, 3), est.init(net))
        >>> s.shape
        torch.Size([])

    References:
        Williams (1992); Bengio, Léonard, Courville (2013), Theorem 1.
    """

    multilayer = True
