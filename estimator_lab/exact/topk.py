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
probability.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from estimator_lab.exact.enumeration import DEFAULT_MAX_CONFIGURATIONS, EnumerationTooLarge
from estimator_lab.exact.moments import ExactMoments, NotComputable
from estimator_lab.graphs.categorical import gate_distribution
from estimator_lab.graphs.topk import TopKGraph, too_many_topk, topk_gates, topk_subsets
from estimator_lab.montecarlo.accumulators import Moments, merge_moments
from estimator_lab.montecarlo.engine import GATE_LOGITS, gradient_draws, tracked_parameters

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


def iter_topk_chunks(
    num_gates: int, num_classes: int, num_chosen: int, chunk_size: int, *,
    dtype=torch.float64, device=None,
) -> Iterator[torch.Tensor]:
    """All `C(K, k)^N` configurations in chunks of at most `chunk_size`, each `C x N x K`.

    Example:
        >>> [c.shape for c in iter_topk_chunks(2, 3, 2, 5)]
        [torch.Size([5, 2, 3]), torch.Size([4, 2, 3])]
    """
    subsets = topk_subsets(num_classes, num_chosen, dtype=dtype, device=device)
    count = subsets.shape[0]
    total = count**num_gates
    powers = count ** torch.arange(num_gates, device=device)
    for start in range(0, total, chunk_size):
        codes = torch.arange(start, min(start + chunk_size, total), device=device)
        yield subsets[(codes.unsqueeze(-1) // powers) % count]


def _require_topk(graph) -> None:
    if gate_distribution(graph) != "topk":
        raise TypeError(f"{type(graph).__name__} does not have top-k gates")


def topk_exact_gradient(
    graph: TopKGraph,
    batch: tuple[torch.Tensor, ...],
    *,
    parameters: Sequence[str] | None = None,
    include_logits: bool = True,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    chunk_size: int = 4096,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`E[mean_j L_j]` and its exact gradient over every configuration of the top-k gates.

    The top-k counterpart of `exact_gradient` and `categorical_exact_gradient`, with the same
    arguments and results (run it in float64 for reference values).

    Returns:
        the expected loss (a 0-dim tensor, detached) and a dict from `"gate_logits"` (a
        `B x N x K` tensor, if asked) and each parameter name to its gradient.

    Raises:
        EnumerationTooLarge: when `C(K, k)^N > max_configurations`.

    Example:
        >>> from estimator_lab.graphs.topk import TopKToy
        >>> toy = TopKToy.seeded(2, 4, 2)
        >>> value, grads = topk_exact_gradient(toy, toy.example_batch())
        >>> tuple(grads["theta"].shape), tuple(grads["gate_logits"].shape)
        ((2, 4), (1, 2, 4))
    """
    _require_topk(graph)
    check_topk_enumerable(graph.num_gates, graph.num_classes, graph.num_chosen,
                          max_configurations)
    prepared = graph.prepare(batch)
    tracked = {GATE_LOGITS: prepared.logits} if include_logits else {}
    tracked |= tracked_parameters(graph, parameters)
    totals = {name: torch.zeros_like(x) for name, x in tracked.items()}
    dtype, device = prepared.logits.dtype, prepared.logits.device
    value = torch.zeros((), dtype=dtype, device=device)
    for chunk in iter_topk_chunks(graph.num_gates, graph.num_classes, graph.num_chosen,
                                  chunk_size, dtype=dtype, device=device):
        gates = chunk.unsqueeze(1).expand(-1, prepared.batch_size, -1, -1)  # C x B x N x K
        log_prob = graph.log_prob(prepared.logits, gates)  # C x B
        partial = (log_prob.exp() * graph.loss(prepared, gates)).sum(0).mean()
        value = value + partial.detach()
        if not tracked:
            continue
        grads = torch.autograd.grad(partial, list(tracked.values()), retain_graph=True,
                                    allow_unused=True)
        for name, grad in zip(tracked, grads, strict=True):
            if grad is not None:
                totals[name] += grad
    return value, totals


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


def _copies(noise_shape: tuple[int, ...], graph: TopKGraph) -> int:
    if len(noise_shape) < 3 or noise_shape[-3:] != (1, graph.num_gates, graph.num_classes):
        raise NotComputable(
            f"noise of shape {noise_shape} is not laid out as copies x B x N x K for one example"
        )
    return math.prod(noise_shape[:-3])


def topk_exact_moments(
    graph: TopKGraph,
    estimator: GradientEstimator,
    batch: tuple[torch.Tensor, ...],
    *,
    state: Any = None,
    parameters: list[str] | None = None,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    chunk_size: int = 2048,
) -> ExactMoments:
    """The exact mean and per-coordinate variance of a `discrete_noise` top-k estimator.

    The top-k counterpart of `categorical_exact_moments`: per example, a weighted sum over
    the `C(K, k)^(copies N)` configurations of its gate samples; the batch's mean is
    `(1/B) sum_j E[g_j]` and its variance `(1/B^2) sum_j Var[g_j]`.

    Args:
        graph: a small top-k graph (float64 for reference values).
        estimator: the estimator; its `state` (default `init(graph)`) is frozen.
        batch: the minibatch.
        state: a frozen state shared by every example.
        parameters: names of the parameters to track (default: all).
        max_configurations: the guard on configurations per example.
        chunk_size: configurations evaluated at once.

    Returns:
        an `ExactMoments` with `"gate_logits"` and each tracked parameter, method
        `"enumeration"`.

    Raises:
        NotComputable: for an estimator without `discrete_noise` or an unexpected noise layout.
        EnumerationTooLarge: past the guard.
    """
    _require_topk(graph)
    if not estimator.discrete_noise:
        raise NotComputable(
            f"{estimator.name!r} depends on its noise beyond the top-k masks it implies "
            f"(discrete_noise=False): no exact enumeration of its moments"
        )
    state = estimator.init(graph) if state is None else state
    batch_size = batch[0].shape[0]
    means, variances, atoms = [], [], 0
    for j in range(batch_size):
        example = tuple(t[j : j + 1] for t in batch)
        mean, variance, atoms = _example_moments(
            graph, estimator, example, state, parameters, max_configurations, chunk_size
        )
        means.append(mean)
        variances.append(variance)
    combined_mean, combined_variance = {}, {}
    for name in means[0]:
        if name == GATE_LOGITS:  # example j owns row j of the batch's logits
            combined_mean[name] = torch.cat([m[name] for m in means]) / batch_size
            combined_variance[name] = torch.cat([v[name] for v in variances]) / batch_size**2
        else:
            combined_mean[name] = torch.stack([m[name] for m in means]).sum(0) / batch_size
            combined_variance[name] = (
                torch.stack([v[name] for v in variances]).sum(0) / batch_size**2
            )
    zeros = {name: torch.zeros_like(value) for name, value in combined_mean.items()}
    return ExactMoments(combined_mean, combined_variance, "enumeration", atoms,
                        mean_error=zeros, variance_error=zeros)


def _example_moments(graph, estimator, example, state, parameters, max_configurations,
                     chunk_size):
    """Mean, variance and atom count of the draws of a one-example batch."""
    with torch.no_grad():
        prepared = graph.prepare(example)
    noise_shape = tuple(estimator.noise_shape(graph, prepared))
    copies = _copies(noise_shape, graph)
    n, k, chosen = graph.num_gates, graph.num_classes, graph.num_chosen
    check_topk_enumerable(copies * n, k, chosen, max_configurations)
    logits = prepared.logits.detach()
    moments, atoms = {}, 0
    for chunk in iter_topk_chunks(copies * n, k, chosen, chunk_size, dtype=logits.dtype,
                                  device=logits.device):
        masks = chunk.view(chunk.shape[0], copies, *logits.shape)  # C x copies x 1 x N x K
        noise = cell_noise(logits, masks, chosen)
        weight = graph.log_prob(logits, masks).sum((1, 2)).exp()  # C
        atoms += noise.shape[0]
        total = float(weight.sum())
        if total == 0:  # configurations too improbable to matter
            continue
        draws = gradient_draws(graph, estimator, example, noise.view(-1, *noise_shape),
                               state=state, parameters=parameters)
        for name, values in draws.items():
            w = weight.view(-1, *[1] * (values.dim() - 1))
            mean = (w * values).sum(0) / total
            part = Moments(total, mean, (w * (values - mean).square()).sum(0))
            moments[name] = merge_moments(moments[name], part) if name in moments else part
    mean = {name: m.mean for name, m in moments.items()}
    variance = {name: (m.m2 / m.count).clamp_min(0) for name, m in moments.items()}
    return mean, variance, atoms
