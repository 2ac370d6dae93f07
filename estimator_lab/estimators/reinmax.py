"""ReinMax (Liu et al., 2023) for Bernoulli gates: a second-order straight-through estimator.

Derivation of the binary case. For a categorical variable with logits `theta`, ReinMax samples a
one-hot `D ~ softmax(theta)` and backpropagates, with `pi_0 = softmax(theta)`,
`pi_1 = (D + softmax(theta / tau)) / 2` and `J(pi) = diag(pi) - pi pi^T`,

    grad_theta = 2 J(pi_1) dL/dD - 1/2 J(pi_0) dL/dD

(Algorithm 2 of the paper, `pi_2 = 2 pi_1 - pi_0 / 2` with `pi_1` given the softmax Jacobian
at its own value, and the `microsoft/ReinMax` backward pass; note `pi_0` has no temperature).
A Bernoulli gate `b` is the two-class case `D = (b, 1 - b)`, `theta = (a, 0)`, so
`softmax(theta) = (p, 1 - p)` with `p = sigmoid(a)`, and `softmax(theta / tau) = (s, 1 - s)`
with `s = sigmoid(a / tau)`. The first row of `J(pi)` is `pi_1 (1 - pi_1) (1, -1)` and the loss
sees `b` only (`dL/dD_1 - dL/dD_2 = dL/db` whichever way `L` is written on the simplex), so

    g_a = dL/db [2 q (1 - q) - p (1 - p) / 2],    q = (b + s) / 2.

The logits `(a / 2, -a / 2)` give the same result (the softmax Jacobian ignores shifts). The
weight is `(1 - s^2) / 2 - p (1 - p) / 2` for `b = 1` and `s (2 - s) / 2 - p (1 - p) / 2` for
`b = 0`; it is non-negative for `tau >= 1` and can be negative below (the paper recommends
`tau >= 1`). At `tau = 1` (`s = p`) the weights are `(1 - p) / 2` and `p / 2`, so on one gate

    E[g_a] = p (1 - p) [L'(1) + L'(0)] / 2,

the trapezoid rule for `p (1 - p) [L(1) - L(0)] = dE[L]/da`: exact when `L` is affine or
quadratic in each gate value (with the others fixed), e.g. the toy `sum_i (h_i - t)^2`, where
`st-sigmoid` (`p (1 - p) [p L'(1) + (1 - p) L'(0)]`) is biased. Otherwise it is biased, like
straight-through; for `tau != 1` it is biased even for a linear loss.
"""

from __future__ import annotations

import torch

from estimator_lab.estimators.base import TemperatureEstimator
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.estimators.straight_through import HardForward


def reinmax_weight(logits: torch.Tensor, gates: torch.Tensor, temperature: float) -> torch.Tensor:
    """The factor `2 q (1 - q) - p (1 - p) / 2` of `dL/db` in ReinMax's gate-logit gradient.

    Args:
        logits: gate logits `a`.
        gates: the sampled gates `b`, zeros and ones, broadcastable to `logits`.
        temperature: `tau > 0`.

    Returns:
        the weight, with `p = sigmoid(a)`, `q = (b + sigmoid(a / tau)) / 2`.

    Example:
        >>> reinmax_weight(torch.zeros(2), torch.tensor([1.0, 0.0]), 1.0)  # (1 - p)/2, p/2
        tensor([0.2500, 0.2500])
    """
    p = torch.sigmoid(logits)
    q = (gates + torch.sigmoid(logits / temperature)) / 2
    return 2 * q * (1 - q) - p * (1 - p) / 2


@register_estimator("reinmax")
class ReinMax(TemperatureEstimator, HardForward):
    """ReinMax: forward the hard gate `b = 1[u < p]`; backward `dL/da := dL/db w(a, b)`.

    The gate enters the loss as `b + stopgrad(w) (a - stopgrad(a))` with `w` from
    `reinmax_weight` (the derivation is in the module docstring): its value is exactly `b` (the
    same gates as `st` and `reinforce` under the same noise) and its derivative is `w`. Biased in
    general; at `tau = 1` exact on one gate layer for losses quadratic in each gate value.

    Args:
        temperature: `tau > 0` (default 1; the paper recommends `tau >= 1`).

    Example:
        >>> from estimator_lab.graphs.toy import ToyGraph
        >>> toy = ToyGraph([0.0], target=0.45)  # b = 0 at u = 0.7: dL/db = -2 t = -0.9
        >>> prepared = toy.prepare(toy.example_batch())
        >>> s = ReinMax().surrogate(toy, prepared, torch.tensor([[0.7]]), None)
        >>> torch.autograd.grad(s, toy.theta)[0]  # -0.9 p / 2
        tensor([-0.2250], dtype=torch.float64)

    References:
        Liu, Zhao, Gao, He, Hu, Gao (2023), "Bridging discrete and backpropagation:
        straight-through and beyond", NeurIPS, Algorithm 2; github.com/microsoft/ReinMax.
    """

    def backward(self, logits: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        weight = reinmax_weight(logits.detach(), gates, self.temperature)
        return weight * (logits - logits.detach())
