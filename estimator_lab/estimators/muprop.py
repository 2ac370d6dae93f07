"""MuProp (Gu, Levine, Sutskever, Mnih 2016): REINFORCE with a first-order Taylor control variate.

Single layer. With `b ~ Bernoulli(p)`, `p = sigmoid(a)`, and `f(x)` the loss as a function of
real gate values, take the first-order expansion of `f` around the mean-field point
`pbar = stopgrad(p)`,

    h(b) = f(pbar) + f'(pbar)^T (b - pbar),

whose coefficients are constants (no gradient flows through `pbar`). For any such `h`,
`E[h(b) d log P(b)/d theta] = d/d theta E_theta[h(b)] = f'(pbar)^T dp/d theta`, because `E[b] = p`
and `h` is linear in `b`. So

    d E[f(b)] / d theta = E[(f(b) - h(b)) d log P(b)/d theta] + f'(pbar)^T dp/d theta,

unbiased for any expansion point: the score term sees only the residual of the linear
approximation, and the linear part's gradient is the mean-field backward pass (deterministic).

Multi-layer (layers `l = 0 .. L-1`, every `b_l ~ Bernoulli(p_l)`, `p_l` a function of the sampled
`b_{<l}`): the score of layer `l` gets its own control variate, the expansion in `b_l` of
`F_l(x)`, the loss of the mean-field network that takes the sampled upstream gates `b_{<l}`,
puts `x` in layer `l` and passes probabilities `sigmoid(logits)` (not samples) through the layers
below. Conditionally on `b_{<l}`, `h_l` is linear in `b_l` with constant coefficients, so the
identity above holds layer by layer and

    g = grad_path L(b) + sum_l [(L(b) - h_l(b_l)) grad log P(b_l | b_{<l})
                                + F_l'(pbar_l)^T grad p_l],

with `grad p_l` taken at fixed `b_{<l}` (only through layer `l`'s logits). One draw costs one
sampled pass and one mean-field pass with its backward per layer: `1 + L` loss evaluations
(2 on a single-layer graph).

References:
    Gu, Levine, Sutskever, Mnih (2016), "MuProp: Unbiased backpropagation for stochastic neural
    networks".
"""

from __future__ import annotations

from typing import Any

import torch

from estimator_lab.estimators.base import GradientEstimator, bernoulli_log_prob, hard_bernoulli
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


@register_estimator("muprop")
class MuProp(GradientEstimator):
    """REINFORCE on the residual of a mean-field Taylor expansion, plus its analytic gradient.

    On the gate logits of example `j` (single layer) the draw is
    `(r_j (b_j - p_j) + f_j'(pbar) * p_j (1 - p_j)) / B`, with the residual
    `r_j = L_j(b) - f_j(pbar) - f_j'(pbar)^T (b_j - pbar_j)` and `f_j' = dL_j/dx_j`, the
    gradient of example `j`'s mean-field loss with respect to its own gate values (the
    examples do not interact, so one backward of `sum_j f_j` gives every `f_j'`). Parameters
    the loss touches directly get the pathwise gradient at the sampled gates only: the
    mean-field pass enters the surrogate through detached values and through `p` alone. On a
    loss linear in the gates the residual vanishes and the draw is exact.
    See the module docstring for the derivation and the multi-layer form.

    Example:
        >>> from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork
        >>> config = ConditionalConfig(num_inputs=8, num_gater_hidden=4, num_gates=3)
        >>> net = ConditionalNetwork(config, torch.Generator().manual_seed(0))
        >>> prepared = net.prepare((torch.rand(2, 8), torch.tensor([0, 1])))
        >>> MuProp().surrogate(net, prepared, torch.rand(2, 3), None).shape
        torch.Size([])

    References:
        Gu, Levine, Sutskever, Mnih (2016).
    """

    is_unbiased = True
    multilayer = True
    discrete_noise = True
    def evaluations(self, graph: StochasticGraph | None = None) -> int | None:
        """One plus one per gate layer (2 on one layer; `None` without a graph)."""
        return None if graph is None else 1 + len(graph.layer_sizes)

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        trace = graph.sample(prepared, noise, hard_bernoulli)
        losses = trace.losses
        total = losses
        for layer, (logits, gates) in enumerate(zip(trace.logits, trace.gates, strict=True)):
            mean = torch.sigmoid(logits.detach())
            value, slope = _mean_field_expansion(graph, prepared, noise, trace.gates, layer, mean)
            residual = losses.detach() - value - (slope * (gates - mean)).sum(-1)
            score = bernoulli_log_prob(logits, gates).sum(-1)
            total = total + residual * score + (slope * torch.sigmoid(logits)).sum(-1)
        return total.mean()


def _mean_field_expansion(
    graph: StochasticGraph,
    prepared: PreparedBatch,
    noise: torch.Tensor,
    sampled: list[torch.Tensor],
    layer: int,
    point: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`F(point)` (`B`) and `F'(point)` (`B x G_layer`), detached, for the mean-field loss `F`.

    `F(x)` keeps the sampled gates above `layer`, sets layer `layer` to `x` and propagates
    probabilities below it; `F'` is one vector-Jacobian product with ones (examples do not
    interact).
    """

    def mean_field(x: torch.Tensor) -> torch.Tensor:
        def gate_fn(k: int, logits: torch.Tensor, layer_noise: torch.Tensor) -> torch.Tensor:
            if k < layer:
                return sampled[k]
            return x if k == layer else torch.sigmoid(logits)

        return graph.sample(prepared, noise, gate_fn).losses

    value, pullback = torch.func.vjp(mean_field, point)
    (slope,) = pullback(torch.ones_like(value))
    return value.detach(), slope.detach()
