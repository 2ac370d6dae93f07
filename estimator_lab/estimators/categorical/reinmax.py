"""ReinMax for categorical gates (Liu et al. 2023): a second-order straight-through estimator."""

from __future__ import annotations

import torch

from estimator_lab.estimators.base import GateEstimator, TemperatureEstimator
from estimator_lab.estimators.categorical.base import CategoricalEstimator
from estimator_lab.estimators.categorical.registry import register_categorical_estimator
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.categorical import categorical_gates, softmax_jacobian_product


def reinmax_jacobian_product(
    logits: torch.Tensor, gates: torch.Tensor, vector: torch.Tensor, temperature: float
) -> torch.Tensor:
    """`M x` with ReinMax's backward matrix `M = 2 J(pi_1) - J(pi_0) / 2`.

    `pi_0 = softmax(theta)` (no temperature), `pi_1 = (D + softmax(theta / tau)) / 2`,
    `J(pi) = diag(pi) - pi pi^T`; `M` is symmetric.

    Example:
        >>> x = reinmax_jacobian_product(torch.zeros(2), torch.tensor([1.0, 0.0]),
        ...                              torch.tensor([0.0, 1.0]), 1.0)
        >>> x  # pi_1 = (3/4, 1/4): 2 J(pi_1) e_1 = (-3/8, 3/8); J(pi_0) e_1 / 2 = (-1/8, 1/8)
        tensor([-0.2500,  0.2500])
    """
    pi_0 = torch.softmax(logits, -1)
    pi_1 = (gates + torch.softmax(logits / temperature, -1)) / 2
    return 2 * softmax_jacobian_product(pi_1, vector) - softmax_jacobian_product(pi_0, vector) / 2


@register_categorical_estimator("reinmax")
class CategoricalReinMax(TemperatureEstimator, GateEstimator, CategoricalEstimator):
    """ReinMax: forward `D`; backward `g_theta = (2 J(pi_1) - J(pi_0) / 2) dL/dD`.

    The gate enters the loss as `D + M (theta - stopgrad(theta))` with `M` detached
    (`reinmax_jacobian_product`): its value is `D` and, `M` being symmetric, the logits get
    `M dL/dD`. This is Algorithm 2 of the paper and the backward pass of `microsoft/ReinMax`.
    At `tau = 1`, `E[J(pi_1)] = (3/4) J(p)`, so for a loss linear in `D` the mean draw is
    `J(p) dL/dD`, the exact gradient; the paper shows second-order accuracy in general.
    Depends on the noise only through `D`.

    Args:
        temperature: `tau > 0` (default 1; the paper recommends `tau >= 1`).

    References:
        Liu, Zhao, Gao, He, Hu, Gao (2023), "Bridging discrete and backpropagation:
        straight-through and beyond", NeurIPS, arXiv 2304.08612, Algorithm 2.
    """

    is_unbiased = False
    discrete_noise = True

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        gates = categorical_gates(logits, noise)
        shift = logits - logits.detach()
        return gates + reinmax_jacobian_product(logits.detach(), gates, shift, self.temperature)
