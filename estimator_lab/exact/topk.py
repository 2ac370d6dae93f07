"""Exact expectations, gradients and estimator moments for top-k graphs, by enumeration.

One example's `N` top-k gates (k of `K` classes each) take `C(K, k)^N` configurations, shared
by the batch. Configuration `c` gives gate `i` the subset of index `(c // C^i) % C` in
`topk_subsets` order (base-`C` digits, gate 0 first). The expected loss is
`sum_c P(c) L(c)` with the Plackett-Luce law `P` (`topk_log_prob`), and its gradient for every
parameter is autograd through that sum, in float64 for reference values. The guard and verdict
are the Bernoulli sweep's (`EnumerationTooLarge`, a `ValueError`).

Exact moments cover estimators whose draw depends on its `copies x B x N x K` uniforms only
through the k-hot masks they imply (`discrete_noise`): each configuration of the `copies x N`
gates is represented by one noise point inside its cell (`cell_noise`) and weighted by its
probability. Both sweeps are `exact_gradient` and `exact_moments` with the top-k `GateLaw`
(`topk_law`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from estimator_lab.configurations import DEFAULT_MAX_CONFIGURATIONS, EnumerationTooLarge
from estimator_lab.exact.enumeration import GateLaw, exact_gradient, iter_law_chunks
from estimator_lab.exact.moments import ExactMoments, NotComputable, exact_moments
from estimator_lab.graphs.categorical import gate_distribution
from estimator_lab.graphs.topk import (
    TopKGraph,
    too_many_topk,
    topk_gates,
    topk_log_prob,
    topk_subsets,
)

if TYPE_CHECKING:  # estimators import this module: only a type here
    from estimator_lab.estimators.base import GradientEstimator


def check_topk_enumerable(num_gates: int, num_classes: int, num_chosen: int,
                          max_configurations: int = DEFAULT_MAX_CONFIGURATIONS) -> int:
    """The number of configurations `C(K, k)^N`, or an `EnumerationTooLarge` error saying so.

    Example:
        >>> check_topk_enumerable(2, 4, 2)
        36
    """
    refusal = too_many_topk(num_gates, num_classes, num_chosen, max_configurations)
    if refusal is not None:
        raise EnumerationTooLarge(refusal)
    return math.comb(num_classes, num_chosen) ** num_gates


def _law(num_classes: int, num_chosen: int) -> GateLaw:
    return GateLaw(
        gates="top-k masks",
        values=lambda dtype, device: topk_subsets(num_classes, num_chosen, dtype=dtype,
                                                  device=device),
        log_prob=lambda logits, masks: topk_log_prob(logits, masks, num_chosen),
        count=lambda num_gates, limit: check_topk_enumerable(num_gates, num_classes,
                                                             num_chosen, limit),
        cell_noise=lambda logits, masks: cell_noise(logits, masks, num_chosen),
    )


def topk_law(graph: TopKGraph) -> GateLaw:
    """The `GateLaw` of a top-k graph's gates: the `C(K, k)` k-hot subsets, the Plackett-Luce
    law, the `C(K, k)^N` guard and `cell_noise`.

    Raises:
        TypeError: for a graph without top-k gates.
    """
    if gate_distribution(graph) != "topk":
        raise TypeError(f"{type(graph).__name__} does not have top-k gates")
    return _law(graph.num_classes, graph.num_chosen)


def iter_topk_chunks(
    num_gates: int, num_classes: int, num_chosen: int, chunk_size: int, *,
    dtype=torch.float64, device=None,
) -> Iterator[torch.Tensor]:
    """All `C(K, k)^N` configurations in chunks of at most `chunk_size`, each `C x N x K`.

    Example:
        >>> [c.shape for c in iter_topk_chunks(2, 3, 2, 5)]
        [torch.Size([5, 2, 3]), torch.Size([4, 2, 3])]
    """
    return iter_law_chunks(_law(num_classes, num_chosen), num_gates, chunk_size, dtype=dtype,
                           device=device)


def topk_exact_gradient(
    graph: TopKGraph, batch: tuple[torch.Tensor, ...], **options: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`E[mean_j L_j]` and its exact gradient over every configuration of the top-k gates.

    `exact_gradient` with the graph's `topk_law`: the same options and results (run it in
    float64 for reference values).

    Returns:
        the expected loss (a 0-dim tensor, detached) and a dict from `"gate_logits"` (a
        `B x N x K` tensor, if asked) and each parameter name to its gradient.

    Raises:
        TypeError: for a graph without top-k gates.
        EnumerationTooLarge: when `C(K, k)^N > max_configurations`.

    Example:
        >>> from estimator_lab.graphs.topk import TopKToy
        >>> toy = TopKToy.seeded(2, 4, 2)
        >>> value, grads = topk_exact_gradient(toy, toy.example_batch())
        >>> tuple(grads["theta"].shape), tuple(grads["gate_logits"].shape)
        ((2, 4), (1, 2, 4))
    """
    return exact_gradient(graph, batch, law=topk_law(graph), **options)


def cell_noise(logits: torch.Tensor, masks: torch.Tensor, k: int) -> torch.Tensor:
    """Uniforms whose Gumbel-top-k masks are `masks`: one noise point inside each cell.

    With `M` the largest logit outside the subset, the chosen classes get perturbed scores
    `max(theta_j, M) + 1` and the others `theta_j` (Gumbel 0), so the subset's scores exceed
    the rest by at least 1; `u = exp(-exp(-g))`. The masks implied are checked.

    Args:
        logits: `... x K` logits (detached).
        masks: `... x K` k-hot masks, broadcastable.
        k: the subset size.

    Returns:
        the uniforms, of the broadcast shape.

    Example:
        >>> theta = torch.tensor([2.0, 0.0, -1.0, 1.0], dtype=torch.float64)
        >>> mask = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
        >>> bool(torch.equal(topk_gates(theta, cell_noise(theta, mask, 2), 2), mask))
        True

    Raises:
        NotComputable: if the uniforms cannot represent the cell in their dtype (logits whose
            spread exceeds what `u` can resolve).
    """
    logits, masks = torch.broadcast_tensors(logits.detach(), masks)
    top_other = torch.where(masks > 0, -torch.inf, logits).amax(-1, keepdim=True)
    gumbel = torch.where(masks > 0, torch.clamp_min(top_other - logits, 0) + 1, 0.0)
    noise = torch.exp(-torch.exp(-gumbel))
    if not torch.equal(topk_gates(logits, noise, k), masks.to(logits.dtype)):
        raise NotComputable("the logits' spread is too large to place noise in every cell")
    return noise


def topk_exact_moments(
    graph: TopKGraph,
    estimator: GradientEstimator,
    batch: tuple[torch.Tensor, ...],
    **options: Any,
) -> ExactMoments:
    """The exact mean and per-coordinate variance of a `discrete_noise` top-k estimator.

    `exact_moments` with the graph's `topk_law` (the same options: `state`, `parameters`,
    `max_configurations` on `C(K, k)^(copies N)` per example, `chunk_size`): per example, a
    weighted sum over the configurations of its gate samples; the batch's mean is
    `(1/B) sum_j E[g_j]` and its variance `(1/B^2) sum_j Var[g_j]`.

    Returns:
        an `ExactMoments` with `"gate_logits"` and each tracked parameter, method
        `"enumeration"`.

    Raises:
        TypeError: for a graph without top-k gates.
        NotComputable: for an estimator without `discrete_noise` or an unexpected noise layout.
        EnumerationTooLarge: past the guard.
    """
    return exact_moments(graph, estimator, batch, law=topk_law(graph), **options)
