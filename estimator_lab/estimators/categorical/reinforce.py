"""REINFORCE for categorical gates, plain and with the per-category optimal baseline (Eq. 10).

For a gate with `p = softmax(theta)` and one-hot sample `D`, `d log P(z) / d theta_j =
D_j - p_j`, so the score-function draw on logit `theta_ij` of example `b` is
`(L_b - c_ij)(D_bij - p_bij) / B` for any baseline `c` that does not depend on the draw.
Per coordinate, `Var[(L - c)(D_ij - p_ij)]` is smallest at

    c_ij = E[(D_ij - p_ij)^2 L] / E[(D_ij - p_ij)^2],

the paper's Eq. 10 with one unit per (gate, class) pair instead of one per Bernoulli gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from estimator_lab.estimators.baselines import OptimalBaseline, RatioState
from estimator_lab.estimators.categorical.base import CategoricalEstimator
from estimator_lab.estimators.categorical.registry import register_categorical_estimator
from estimator_lab.estimators.reinforce import ScoreFunction
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph
from estimator_lab.graphs.categorical import hard_categorical


@register_categorical_estimator("reinforce")
class CategoricalReinforce(ScoreFunction, CategoricalEstimator):
    """The unbiased score-function estimator `g_theta = L(z) (D - p)`, without a baseline.

    The surrogate `mean_b [L_b(D) + stopgrad(L_b(D)) sum_i log P(z_bi | theta_bi)]` gives the
    logits of example `b` the draw `L_b (D_b - p_b) / B` and every parameter the loss touches
    directly its pathwise gradient at the sampled gates.

    Example:
        >>> from estimator_lab.graphs.categorical import CategoricalToy
        >>> toy = CategoricalToy(torch.zeros(1, 3), target=0.0)  # z = 2: L = 1
        >>> prepared = toy.prepare(toy.example_batch())
        >>> noise = torch.tensor([[[0.1, 0.2, 0.9]]])
        >>> s = CategoricalReinforce().surrogate(toy, prepared, noise, None)
        >>> torch.autograd.grad(s, toy.theta)[0]  # 1 * (e_2 - 1/3)
        tensor([[-0.3333, -0.3333,  0.6667]], dtype=torch.float64)

    References:
        Williams (1992), "Simple statistical gradient-following algorithms for connectionist
        reinforcement learning".
    """


class CategoricalOptimalBaseline(OptimalBaseline):
    """Eq. 10 per (gate, class): `c_ij = E[(D_ij - p_ij)^2 L] / E[(D_ij - p_ij)^2]`.

    The numerator and denominator are moving averages (decay `d`) of the batch means of
    `(D_bij - p_bij)^2 L_b` and `(D_bij - p_bij)^2`, as `OptimalBaseline` keeps per Bernoulli
    gate; the state holds `N x K` tensors and the value is their ratio (0 before any draw).
    """

    def unit_shape(self, graph: StochasticGraph) -> tuple[int, ...]:
        return (graph.num_gates, graph.num_classes)


@register_categorical_estimator("reinforce-optimal")
@dataclass(eq=False, repr=False)
class CategoricalReinforceOptimal(CategoricalEstimator):
    """REINFORCE centred per (gate, class): `g_theta_ij = (L - c_ij)(D_ij - p_ij)`.

    The baseline `c` is `CategoricalOptimalBaseline`'s value, a function of the state only, so
    the draw stays unbiased whatever the state. The surrogate is
    `mean_b [L_b + sum_ij stopgrad((L_b - c_ij)(D_bij - p_bij)) (theta_bij - stopgrad(theta_bij))]`:
    its value is the loss, and the logits (and, by the chain rule, whatever computes them) get
    the centred score draw. `update` draws the gates of its noise and advances the averages.

    Args:
        decay: the decay of the moving averages.

    References:
        Weaver and Tao (2001); Bengio, Léonard, Courville (2013), Eq. 10.
    """

    is_unbiased = True
    discrete_noise = True

    decay: float = 0.99

    def __post_init__(self) -> None:
        self.baseline = CategoricalOptimalBaseline(self.decay)  # derived: not a field
        self.decay = self.baseline.decay  # as the baseline checked and converted it

    def init(self, graph: StochasticGraph) -> RatioState:
        self.check_graph(graph)
        return self.baseline.init(graph)

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        self.check_graph(graph)
        trace = graph.sample(prepared, noise, hard_categorical)
        logits, gates, losses = trace.logits[0], trace.gates[0], trace.losses
        centred = losses.detach()[:, None, None] - self.baseline.value(state).detach()
        score = centred * (gates - torch.softmax(logits.detach(), -1))  # B x N x K
        return (losses + (score * (logits - logits.detach())).sum((-2, -1))).mean()

    @torch.no_grad()
    def update(
        self, state: Any, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor
    ) -> Any:
        trace = graph.sample(prepared, noise, hard_categorical)
        probs = torch.softmax(trace.logits[0], -1)
        return self.baseline.update(state, trace.losses, trace.gates[0], probs)
