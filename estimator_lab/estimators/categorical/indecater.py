"""IndeCateR (De Smet et al. 2023): Rao-Blackwellised score function for independent categoricals.

For independent gates, `dE[L]/dtheta_i = sum_k (dp_ik/dtheta_i) E[L(z_-i, z_i = k)]`: the
expectation over gate `i` is taken exactly (a sum over its `K` classes) and the others are
sampled. With `S` samples `z^(s)` shared by all gates,

    g_theta_i = (1/S) sum_s J(p_i) L_i^(s),    L_i^(s)_k = L(z^(s)_-i, z_i = k),

`J(p) = diag(p) - p p^T`. One sample (`S = 1`) is the local expectation gradient of Titsias and
Lázaro-Gredilla (2015) for these gates, registered as `local-expectation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from estimator_lab.estimators.base import check_num_samples
from estimator_lab.estimators.categorical.base import CategoricalEstimator
from estimator_lab.estimators.categorical.registry import register_categorical_estimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph
from estimator_lab.graphs.categorical import categorical_gates


@register_categorical_estimator("indecater")
@dataclass(eq=False, repr=False)
class IndeCateR(CategoricalEstimator):
    """`g_theta_i = mean_s J(p_i) L_i^(s)` with `L_i^(s)_k` the loss with gate `i` set to `k`.

    The surrogate is `mean_b mean_s [L_sb(D_s) + sum_ik (p_bik - stopgrad(p_bik))
    stopgrad(L_sb(D_s; z_i = k))]`: its value is the loss, the logits get the draw above, and
    parameters the loss touches directly get the pathwise gradient at the sampled gates.
    Unbiased; depends on the noise through the `S` samples only. A draw costs `S N K` loss
    evaluations (`graph.category_losses`; `S (N (K - 1) + 1)` of them distinct).

    Args:
        num_samples: `S >= 1` (default 1).

    References:
        De Smet, Sansone, Zuidberg Dos Martires (2023), "Differentiable sampling of categorical
        distributions using the CatLog-derivative trick", NeurIPS, arXiv 2311.12569.
    """

    is_unbiased = True
    discrete_noise = True

    num_samples: int = 1

    def __post_init__(self) -> None:
        self.num_samples = check_num_samples(self, self.num_samples, 1)

    def noise_shape(self, graph: StochasticGraph, prepared: PreparedBatch) -> tuple[int, ...]:
        """`S x B x N x K`."""
        return (self.num_samples, *super().noise_shape(graph, prepared))

    def evaluations(self, graph: StochasticGraph | None = None) -> int | None:
        """`S N K` on a graph of `N` gates of `K` classes (`None` without one)."""
        if graph is None:
            return None
        return self.num_samples * graph.num_gates * graph.num_classes

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        self.check_graph(graph)
        logits = prepared.logits
        gates = categorical_gates(logits, noise)  # S x B x N x K
        per_class = graph.category_losses(prepared, gates).detach()  # S x B x N x K
        probs = torch.softmax(logits, -1)
        exact_part = ((probs - probs.detach()) * per_class).sum((-2, -1))  # S x B
        return (graph.loss(prepared, gates) + exact_part).mean()


@register_categorical_estimator("local-expectation")
class CategoricalLocalExpectation(IndeCateR):
    """The local expectation gradient for categorical gates: `IndeCateR` with one sample.

    `g_theta_i = J(p_i) L_i`, `L_ik = L(z_-i, z_i = k)`; the default `num_samples = 1` makes it
    the estimator of Titsias and Lázaro-Gredilla (2015) (`S > 1` is IndeCateR's average).

    References:
        Titsias and Lázaro-Gredilla (2015), "Local expectation gradients for black box
        variational inference", NeurIPS.
    """
