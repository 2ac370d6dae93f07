"""Double control variates (Titsias and Shi, 2022) on REINFORCE leave-one-out.

With `K` independent samples `b_1 .. b_K ~ Bernoulli(p)` (`p = sigmoid(a)`), losses
`f_k = L(b_k)` and gate-value gradients `f'_k = dL/db (b_k)` (the backward pass of each loss,
no extra loss evaluation), REINFORCE leave-one-out centres sample `k`'s score `s_k = b_k - p` by
the mean of the other losses. The second control variate is a first-order Taylor term around
the mean `p`, with the slope averaged over the other samples,

    c_k = w_k^T (b_k - p),   w_k = mean_{j != k} f'_j,

which is independent of `b_k` through `w_k`, so `E_{b_k}[c_k s_k] = w_k * p (1 - p)`; and for
`j != k`, `E[c_j s_k] = 0` (`c_j` is linear in `b_j - p`, independent of `b_k` and `w_j`'s
other terms). Leave-one-out on the adjusted losses `F_k = f_k - alpha c_k`, plus the known mean
of what was subtracted, gives

    g_a = (1/K) sum_k (F_k - mean_{j != k} F_j) s_k + alpha fbar' * p (1 - p),

`fbar' = mean_k f'_k`: unbiased for any `alpha`. On a loss linear in the gates, `f' = w` is
constant, `F_k` is constant at `alpha = 1`, and the draw is the exact gradient `w * p (1 - p)`.

Note: the paper adapts the scalar `alpha` online to minimise the variance; here it is a fixed
hyper-parameter (default 1, the coefficient that makes the Taylor term exact on linear losses),
so the estimator is stateless and its draws are i.i.d.

References:
    Titsias, Shi (2022), "Double control variates for gradient estimation in discrete latent
    variable models", AISTATS, arXiv 2111.05300.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from estimator_lab.estimators.base import (
    bernoulli_gates,
    bernoulli_log_prob,
    require_single_layer,
)
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.estimators.rloo import Rloo
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


def leave_one_out_mean(values: torch.Tensor) -> torch.Tensor:
    """`mean_{j != k} values_j` for every `k` along dim 0 (`K >= 2`).

    Example:
        >>> leave_one_out_mean(torch.tensor([1.0, 2.0, 6.0]))
        tensor([4.0000, 3.5000, 1.5000])
    """
    return (values.sum(0, keepdim=True) - values) / (values.shape[0] - 1)


@register_estimator("double-cv")
@dataclass(eq=False, repr=False)
class DoubleCV(Rloo):
    """REINFORCE leave-one-out with a second, Taylor-based control variate (module docstring).

    It shares `rloo`'s noise (`K x B x G`: `K` gate samples of the batch) and validation. On
    example `j`'s gate logits a draw is
    `(1 / B) [(1 / K) sum_k (F_kj - mean_{l != k} F_lj) s_kj + alpha fbar'_j p_j (1 - p_j)]`
    with `F_kj = f_kj - alpha w_kj^T s_kj`. Parameters the loss touches directly get the
    mean pathwise gradient of the `K` losses. `K` loss evaluations (and their gate-value
    gradients). The draw depends on the noise only through the gates,
    so `discrete_noise` is True and `exact_moments` enumerates `2^{K G}` configurations.

    Args:
        num_samples: `K >= 2` (default 2).
        alpha: the coefficient of the second control variate (default 1; 0 gives `rloo`).

    Example:
        >>> from estimator_lab.graphs.toy import ToyGraph
        >>> toy = ToyGraph([0.0], target=0.45)
        >>> prepared = toy.prepare(toy.example_batch())
        >>> noise = torch.tensor([[[0.2]], [[0.9]]], dtype=torch.float64)  # b = 1, then 0
        >>> s = DoubleCV().surrogate(toy, prepared, noise, None)
        >>> # f' = 2 (b - t): F_1 = 0.3025 + 0.9 / 2 = F_2 = 0.2025 + 1.1 / 2, so the draw is
        >>> # the known term mean(1.1, -0.9) p (1 - p), the exact gradient
        >>> torch.autograd.grad(s, toy.theta)[0]
        tensor([0.0250], dtype=torch.float64)

    References:
        Titsias, Shi (2022), arXiv 2111.05300.
    """

    multilayer = False  # the Taylor term's mean is known for one layer of gates

    alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(self.alpha):
            raise ValueError(f"double-cv needs a finite alpha, got {self.alpha}")
        self.alpha = float(self.alpha)

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        require_single_layer(graph, self)
        logits = prepared.logits
        gates = bernoulli_gates(logits.detach(), noise)  # K x B x G
        losses = graph.loss(prepared, gates)  # K x B
        _, pullback = torch.func.vjp(lambda x: graph.loss(prepared, x), gates)
        (slopes,) = pullback(torch.ones_like(losses))
        slopes = slopes.detach()  # K x B x G: dL/db at each sample
        p = torch.sigmoid(logits.detach())
        control = (leave_one_out_mean(slopes) * (gates - p)).sum(-1)  # c_k, K x B
        adjusted = losses.detach() - self.alpha * control
        residual = adjusted - leave_one_out_mean(adjusted)
        score = bernoulli_log_prob(logits.expand_as(gates), gates).sum(-1)
        known = self.alpha * (slopes.mean(0) * torch.sigmoid(logits)).sum(-1)  # B
        return ((losses + residual * score).mean(0) + known).mean()
