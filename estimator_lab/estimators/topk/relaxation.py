"""Biased top-k estimators: straight-through through the mask, and the relaxed top-k.

`st` and `st-relaxed` forward the k-hot Gumbel-top-k mask `m` and backpropagate through a
smooth stand-in `y(theta)`: the gate enters the loss as `m + y - stopgrad(y)`, whose value is
exactly `m` (the sample `reinforce` draws from the same noise). `relaxed` evaluates the loss at
the relaxed mask itself.
"""

from __future__ import annotations

import torch

from estimator_lab.estimators.base import GateEstimator, TemperatureEstimator, straight_through
from estimator_lab.estimators.topk.registry import TopKEstimator, register_topk_estimator
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.categorical import gumbel_noise
from estimator_lab.graphs.topk import inclusion_probabilities, relaxed_topk, topk_gates


@register_topk_estimator("st")
class TopKStraightThrough(GateEstimator, TopKEstimator):
    """Forward `m`; backward through the inclusion probabilities `pi_j(theta) = P(j in S)`:
    `g_theta = J_pi(theta)^T dL/dm` (biased).

    `pi = E[m]`, so this is the Bernoulli rule "forward the sample, backward through its mean"
    (`p = sigmoid(a)`; `softmax(theta)` for `k = 1`, categorical `st`). On a loss linear in `m`
    the draw is the exact gradient `J_pi^T E[dL/dm]`; otherwise it is biased. `pi` sums the law
    over all `C(K, k)` subsets (`inclusion_probabilities`), meant for small `K`.

    Example:
        >>> from estimator_lab.graphs.topk import TopKToy, inclusion_probabilities
        >>> toy = TopKToy(torch.zeros(1, 3), num_chosen=2, target=0.0)
        >>> prepared = toy.prepare(toy.example_batch())
        >>> s = TopKStraightThrough().surrogate(toy, prepared, torch.full((1, 1, 3), 0.5), None)
        >>> torch.autograd.grad(s, toy.theta)[0].sum().abs() < 1e-12  # J_pi^T 1 = d(sum pi) = 0
        tensor(True)

    References:
        Bengio, Léonard, Courville (2013), section 4 (straight-through); Kool, van Hoof, Welling
        (2019) (Gumbel-top-k sampling).
    """

    is_unbiased = False
    discrete_noise = True

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        pi = inclusion_probabilities(logits, graph.num_chosen)
        return straight_through(topk_gates(logits, noise, graph.num_chosen), pi)


@register_topk_estimator("relaxed")
class RelaxedTopK(TemperatureEstimator, GateEstimator, TopKEstimator):
    """The Gumbel-top-k relaxation: the loss at `y = relaxed_topk(theta + g, k, tau)`, pathwise.

    `alpha_1 = theta + g`, `a_t = softmax(alpha_t / tau)`, `alpha_{t+1} = alpha_t +
    log(1 - a_t)`, `y = sum_{t<=k} a_t` (successive softmax with soft masking), and
    `g_theta = dL(y)/dtheta`. It estimates the gradient of `E[L(y)]`, not of `E[L(m)]`: biased
    for the top-k gate, the bias vanishing (and the variance growing) as `tau -> 0`. `k = 1` is
    the Gumbel-softmax (Concrete) relaxation.

    Args:
        temperature: `tau > 0` (default 1).

    References:
        Xie and Ermon (2019), "Reparameterizable subset sampling via continuous relaxations",
        IJCAI (section 4.2); Plötz and Roth (2018), "Neural nearest neighbors networks";
        Jang, Gu, Poole (2017) and Maddison, Mnih, Teh (2017) for `k = 1`.
    """

    is_unbiased = False
    discrete_noise = False

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        return relaxed_topk(logits + gumbel_noise(noise), graph.num_chosen, self.temperature)


@register_topk_estimator("st-relaxed")
class StraightThroughRelaxedTopK(TemperatureEstimator, GateEstimator, TopKEstimator):
    """Forward the k-hot mask `m`, backward through `y = relaxed_topk(theta + g, k, tau)`:
    `g_theta = (dy/dtheta)^T dL/dm (m)` (biased; `k = 1` is straight-through Gumbel-softmax).

    `m` is the hard top-k of the same perturbed scores `theta + g` that `y` relaxes.

    Args:
        temperature: `tau > 0` (default 1).

    References:
        Xie and Ermon (2019), section 4.2; Jang, Gu, Poole (2017) (the straight-through form).
    """

    is_unbiased = False
    discrete_noise = False

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        soft = relaxed_topk(logits + gumbel_noise(noise), graph.num_chosen, self.temperature)
        return straight_through(topk_gates(logits, noise, graph.num_chosen), soft)
