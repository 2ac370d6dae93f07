"""ARM (Yin and Zhou, 2019) and DisARM (Dong, Mnih and Tucker, 2020) for Bernoulli gates.

Both evaluate the loss at an antithetic pair of gate vectors drawn from one uniform per gate,
`b = 1[u < p]` and `b~ = 1[1 - u < p]` with `p = sigmoid(a)`: each is `Bernoulli(p)` gate by
gate, and they are maximally negatively correlated. ARM's pair, `1[u > sigmoid(-a)]` and
`1[u < sigmoid(a)]`, is `(b~, b)` (`u > 1 - p` is `1 - u < p`).
"""

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


def antithetic_gates(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The antithetic pair `b = 1[u < p]`, `b~ = 1[1 - u < p]` with `p = sigmoid(a)`.

    Args:
        logits: a `B x G` tensor of gate logits `a` (no gradient flows through the gates).
        noise: a `B x G` tensor of uniforms `u`.

    Returns:
        a `2 x B x G` tensor: `[0]` is `b`, `[1]` is `b~`.

    Example:
        >>> antithetic_gates(torch.zeros(1, 2), torch.tensor([[0.1, 0.9]])).tolist()
        [[[1.0, 0.0]], [[0.0, 1.0]]]
    """
    return bernoulli_gates(logits.detach(), torch.stack([noise, 1 - noise]))


class AntitheticEstimator(GradientEstimator):
    """Shared surrogate of ARM and DisARM: `g_{a_i} = (L(b) - L(b~)) w_i(u)` per example.

    With `losses = (L(b), L(b~))` for each example's own gate pair, the surrogate is
    `mean_j [(L_j(b) + L_j(b~)) / 2 + sum_i stopgrad(g_{ji}) (a_{ji} - stopgrad(a_{ji}))]`: its
    value is the antithetic loss estimate and its gradient is `g_j / B` on example `j`'s gate
    logits (and, by the chain rule, on the parameters that produce them). Parameters the loss
    touches directly get the average of the pathwise gradients at `b` and `b~`,
    `(grad L(b) + grad L(b~)) / 2`, unbiased because both gate vectors are `Bernoulli(p)`
    distributed, and free because both losses are needed anyway.

    Subclasses define `weights`, the per-gate factor `w(u)`.
    """

    is_unbiased = True

    def evaluations(self, graph: StochasticGraph | None = None) -> int:
        """Two: `L(b)` and `L(b~)`."""
        return 2

    def weights(
        self, logits: torch.Tensor, noise: torch.Tensor, gates: torch.Tensor
    ) -> torch.Tensor:
        """The `B x G` factor `w` of `L(b) - L(b~)` in the gate-logit gradient.

        Args:
            logits: `B x G` gate logits (detached).
            noise: the `B x G` uniforms.
            gates: the `2 x B x G` pair from `antithetic_gates`.
        """
        raise NotImplementedError

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        require_single_layer(graph, self)
        logits = prepared.logits
        gates = antithetic_gates(logits, noise)
        losses = graph.loss(prepared, gates)  # 2 x B
        difference = (losses[0] - losses[1]).detach()
        gate_grad = difference.unsqueeze(-1) * self.weights(logits.detach(), noise, gates)
        return (losses.mean(0) + (gate_grad * (logits - logits.detach())).sum(-1)).mean()


@register_estimator("arm")
class ARM(AntitheticEstimator):
    """Augment-REINFORCE-merge: `g_a = [L(1[u > sigmoid(-a)]) - L(1[u < sigmoid(a)])] (u - 1/2)`.

    For `G` gates one uniform vector `u` drives both evaluations, and gate `i` gets
    `g_{a_i} = (L(b~) - L(b)) (u_i - 1/2) = (L(b) - L(b~)) (1/2 - u_i)`. Unbiased:
    `E_u[(f(1[u > 1 - p]) - f(1[u < p])) (u - 1/2)] = d/da E[f(b)]` (Yin and Zhou;
    for one gate with `f(b) = b` it is `p (1 - p)`). The draw depends on `u` beyond the gates it
    implies, so `discrete_noise` is False; it is piecewise linear in `u` between the thresholds
    `p` and `1 - p`, so Gauss-Legendre quadrature split there gives exact moments.

    Example:
        >>> from estimator_lab.graphs.toy import ToyGraph
        >>> toy = ToyGraph([0.0], target=0.45)  # L(b) = (b - 0.45)^2, L(1) - L(0) = 0.1
        >>> prepared = toy.prepare(toy.example_batch())
        >>> s = ARM().surrogate(toy, prepared, torch.tensor([[0.2]]), None)
        >>> torch.autograd.grad(s, toy.theta)[0]  # (L(1) - L(0)) (1/2 - 0.2)
        tensor([0.0300], dtype=torch.float64)

    References:
        Yin, Zhou (2019), "ARM: Augment-REINFORCE-merge gradient for stochastic binary
        networks", ICLR.
    """

    def weights(
        self, logits: torch.Tensor, noise: torch.Tensor, gates: torch.Tensor
    ) -> torch.Tensor:
        return 0.5 - noise


@register_estimator("disarm")
class DisARM(AntitheticEstimator):
    """DisARM: `g_{a_i} = 1/2 (L(b) - L(b~)) (-1)^{b~_i} 1[b_i != b~_i] sigmoid(|a_i|)`.

    It is ARM with `u` integrated out given the pair `(b, b~)`: `E[ARM | b, b~]` gate by gate,
    so by Rao-Blackwell its variance is at most ARM's on every coordinate (the logits, the
    parameters behind them, and the pathwise parameters, which the two share). Sign check for
    one gate with `f(b) = b`: the pair differs with probability `2 min(p, 1 - p)`, and both
    orders give `+sigmoid(|a|) / 2`, so the mean is `min(p, 1 - p) max(p, 1 - p) = p (1 - p)`.
    At `a = 0` one gate always has `b != b~` and the draw is the constant `(f(1) - f(0)) / 4`:
    zero variance for any loss.

    Example:
        >>> from estimator_lab.graphs.toy import ToyGraph
        >>> toy = ToyGraph([0.0], target=0.45)  # exact gradient sigmoid'(0) (1 - 2t) = 0.025
        >>> prepared = toy.prepare(toy.example_batch())
        >>> s = DisARM().surrogate(toy, prepared, torch.tensor([[0.2]]), None)
        >>> torch.autograd.grad(s, toy.theta)[0]  # 1/2 (L(1) - L(0)) sigmoid(0)
        tensor([0.0250], dtype=torch.float64)

    References:
        Dong, Mnih, Tucker (2020), "DisARM: An antithetic gradient estimator for binary latent
        variables", NeurIPS.
    """

    def weights(
        self, logits: torch.Tensor, noise: torch.Tensor, gates: torch.Tensor
    ) -> torch.Tensor:
        gate, antithetic = gates.unbind(0)
        sign = 1 - 2 * antithetic  # (-1)^{b~}
        return 0.5 * sign * (gate - antithetic).abs() * torch.sigmoid(logits.abs())
