"""REINFORCE leave-one-out (RLOO): `K` gate samples per draw, each centred by the others."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from estimator_lab.estimators.base import check_num_samples
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.estimators.reinforce import ScoreFunction
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


@dataclass(eq=False, repr=False)
class LeaveOneOut(ScoreFunction):
    """RLOO for the gates of any distribution: `S >= 2` hard samples per draw, the score term of
    each centred by the mean loss of the other `S - 1`.

    One draw reads `S` independent copies of the distribution's noise (in front); sample `s`
    gets the weight `L_s - (sum_s' L_s' - L_s) / (S - 1)`, independent of its own gates, so
    every term is unbiased. One draw costs `S` loss evaluations.

    Attributes:
        num_samples: `S >= 2` (default 2).
    """

    num_samples: int = 2

    def __post_init__(self) -> None:
        self.num_samples = check_num_samples(self, self.num_samples, 2)

    def noise_shape(self, graph: StochasticGraph, prepared: PreparedBatch) -> tuple[int, ...]:
        return (self.num_samples, *super().noise_shape(graph, prepared))

    def evaluations(self, graph: StochasticGraph | None = None) -> int:
        """`S`, one per sample."""
        return self.num_samples

    def centred(self, losses: torch.Tensor) -> torch.Tensor:
        """`L_s - mean_{s' != s} L_s'` over the leading `S` samples, detached."""
        held = losses.detach()
        others = (held.sum(0, keepdim=True) - held) / (self.num_samples - 1)
        return held - others


@register_estimator("rloo")
class Rloo(LeaveOneOut):
    """`g = (1/K) sum_k (L(b_k) - mean_{k' != k} L(b_k')) grad log P(b_k)`, `K >= 2` samples.

    One draw reads `K x B x G` noise: `K` independent gate samples of the whole batch (every
    layer). Sample `k`'s score term is centred by the mean loss of the other `K - 1` samples,
    which is independent of `b_k`, so each term is unbiased; the draw averages the `K` terms
    and the pathwise gradients of the `K` losses. The surrogate is

        mean_j mean_k [ L_kj + stopgrad(L_kj - (sum_k' L_k'j - L_kj) / (K - 1)) log P(b_kj) ],

    so on the gate logits of example `j` the draw is
    `(1 / (B K)) sum_k (L_kj - loo_kj) (b_kj - p_j)`. For `K = 2` it is
    `(b_1 - b_2)(L_1 - L_2) / (2B)`. One draw costs `K` loss evaluations.

    Args:
        num_samples: `K >= 2`.

    Example:
        >>> from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork
        >>> config = ConditionalConfig(num_inputs=8, num_gater_hidden=4, num_gates=3)
        >>> net = ConditionalNetwork(config, torch.Generator().manual_seed(0))
        >>> prepared = net.prepare((torch.rand(2, 8), torch.tensor([0, 1])))
        >>> est = Rloo(num_samples=4)
        >>> est.noise_shape(net, prepared), est.evaluations(net)
        ((4, 2, 3), 4)

    References:
        Kool, van Hoof, Welling (2019), "Buy 4 REINFORCE samples, get a baseline for free!";
        Mnih and Rezende (2016), VIMCO (the leave-one-out baseline).
    """

    multilayer = True
