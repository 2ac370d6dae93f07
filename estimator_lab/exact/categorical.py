"""Exact expectations, gradients and estimator moments for categorical graphs, by enumeration.

One example's `N` categorical gates of `K` classes take `K^N` configurations, shared by the
batch (examples are independent). Configuration `c` gives gate `i` the class `(c // K^i) % K`
(base-`K` digits, gate 0 first). The sweeps run in chunks of configurations under the same guard
and verdict as the Bernoulli sweep (`EnumerationTooLarge`, a `ValueError`).

Exact moments cover estimators whose draw depends on its `copies x B x N x K` uniforms only
through the one-hot gates they imply (Gumbel-max, copy by copy: `discrete_noise`). Each
configuration of the `copies x N` gates is represented by one noise point inside its cell, the
uniforms of the conditional Gumbel scores at `v = 1/2` (`conditional_gumbel`), and weighted by
its probability; the cell's draw is then the draw of any noise in it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from estimator_lab.exact.enumeration import (
    DEFAULT_MAX_CONFIGURATIONS,
    EnumerationTooLarge,
    exact_gradient,
)
from estimator_lab.exact.moments import ExactMoments, NotComputable, exact_moments
from estimator_lab.graphs.base import PreparedBatch
from estimator_lab.graphs.categorical import (
    CategoricalGraph,
    categorical_log_prob,
    conditional_gumbel,
    gate_distribution,
    gumbel_uniforms,
)
from estimator_lab.montecarlo.accumulators import Moments, merge_moments
from estimator_lab.montecarlo.engine import GATE_LOGITS, gradient_draws, tracked_parameters

if TYPE_CHECKING:  # estimators import this module: only a type here
    from estimator_lab.estimators.base import GradientEstimator


def check_categorical_enumerable(
    num_gates: int, num_classes: int, max_configurations: int = DEFAULT_MAX_CONFIGURATIONS
) -> int:
    """The number of configurations `K^N`, or an `EnumerationTooLarge` error saying so.

    `K^N` is only formed (and written out in the error) while it has at most 30 digits, so a
    spec like `n=1000000000` is refused at once.

    Example:
        >>> check_categorical_enumerable(3, 4)
        64
    """
    huge = num_gates * math.log10(max(num_classes, 1)) > 30
    count = None if huge else num_classes**num_gates
    if count is None or count > max_configurations:
        shown = "" if count is None else f" = {count:,}"
        raise EnumerationTooLarge(
            f"{num_gates:,} categorical gates of {num_classes:,} classes make {num_classes}^"
            f"{num_gates}{shown} configurations, more than the limit of "
            f"{max_configurations:,} (use fewer gates or classes)"
        )
    return count


def categorical_configurations(
    num_gates: int, num_classes: int, start: int, stop: int, *, dtype=torch.float64, device=None
) -> torch.Tensor:
    """Configurations `start .. stop - 1` as a `(stop - start) x N x K` one-hot tensor.

    Example:
        >>> categorical_configurations(2, 3, 0, 4).argmax(-1).tolist()
        [[0, 0], [1, 0], [2, 0], [0, 1]]
    """
    codes = torch.arange(start, stop, device=device)
    powers = num_classes ** torch.arange(num_gates, device=device)
    classes = (codes.unsqueeze(-1) // powers) % num_classes
    eye = torch.eye(num_classes, dtype=dtype, device=device)
    return eye[classes]


def iter_categorical_chunks(
    num_gates: int, num_classes: int, chunk_size: int, *, dtype=torch.float64, device=None
) -> Iterator[torch.Tensor]:
    """All `K^N` configurations in chunks of at most `chunk_size`, each `C x N x K`."""
    total = num_classes**num_gates
    for start in range(0, total, chunk_size):
        yield categorical_configurations(
            num_gates, num_classes, start, min(start + chunk_size, total), dtype=dtype,
            device=device,
        )


def _require_categorical(graph) -> None:
    if gate_distribution(graph) != "categorical":
        raise TypeError(f"{type(graph).__name__} does not have categorical gates")


def categorical_exact_gradient(
    graph: CategoricalGraph,
    batch: tuple[torch.Tensor, ...],
    *,
    parameters: Sequence[str] | None = None,
    include_logits: bool = True,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    chunk_size: int = 4096,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`E[mean_j L_j]` and its exact gradient over every configuration of the gates.

    The categorical counterpart of `exact_gradient`, with the same arguments and results (run
    it in float64 for reference values).

    Returns:
        the expected loss (a 0-dim tensor, detached) and a dict from `"gate_logits"` (a
        `B x N x K` tensor, if asked) and each parameter name to its gradient.

    Raises:
        EnumerationTooLarge: when `K^N > max_configurations`.

    Example:
        >>> from estimator_lab.graphs.categorical import CategoricalToy
        >>> toy = CategoricalToy.seeded(2, 3)
        >>> _, grads = categorical_exact_gradient(toy, toy.example_batch())
        >>> bool(torch.allclose(grads["theta"], toy.true_gradient()["theta"]))
        True
    """
    _require_categorical(graph)
    check_categorical_enumerable(graph.num_gates, graph.num_classes, max_configurations)
    prepared = graph.prepare(batch)
    tracked = {GATE_LOGITS: prepared.logits} if include_logits else {}
    tracked |= tracked_parameters(graph, parameters)
    totals = {name: torch.zeros_like(x) for name, x in tracked.items()}
    value = torch.zeros((), dtype=prepared.logits.dtype, device=prepared.logits.device)
    for chunk in iter_categorical_chunks(
        graph.num_gates, graph.num_classes, chunk_size, dtype=prepared.logits.dtype,
        device=prepared.logits.device,
    ):
        gates = chunk.unsqueeze(1).expand(-1, prepared.batch_size, -1, -1)  # C x B x N x K
        log_prob = categorical_log_prob(prepared.logits, gates).sum(-1)  # C x B
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


def _copies(noise_shape: tuple[int, ...], graph: CategoricalGraph) -> int:
    if len(noise_shape) < 3 or noise_shape[-3:] != (1, graph.num_gates, graph.num_classes):
        raise NotComputable(
            f"noise of shape {noise_shape} is not laid out as copies x B x N x K for one example"
        )
    return math.prod(noise_shape[:-3])


def enumeration_atoms(
    prepared: PreparedBatch, copies: int, chunk: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A noise point inside each configuration's cell, and the configuration's probability.

    Args:
        prepared: a one-example batch's prepared graph (`1 x N x K` logits).
        copies: gate samples per draw.
        chunk: a `C x (copies * N) x K` one-hot tensor of configurations of every copy's gates.

    Returns:
        `C x copies x 1 x N x K` uniforms whose Gumbel-max gates are the configurations, and
        their `C` probabilities.
    """
    logits = prepared.logits.detach()
    gates = chunk.view(chunk.shape[0], copies, *logits.shape)  # C x copies x 1 x N x K
    perturbed = conditional_gumbel(logits, gates, torch.full_like(gates, 0.5))
    noise = gumbel_uniforms(logits, perturbed)
    weight = categorical_log_prob(logits, gates).sum((1, 2, 3)).exp()
    return noise, weight


def categorical_exact_moments(
    graph: CategoricalGraph,
    estimator: GradientEstimator,
    batch: tuple[torch.Tensor, ...],
    *,
    state: Any = None,
    parameters: list[str] | None = None,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    chunk_size: int = 2048,
) -> ExactMoments:
    """The exact mean and per-coordinate variance of a `discrete_noise` estimator's draws.

    The categorical counterpart of `exact_moments`: per example, a weighted sum over the
    `K^(copies N)` configurations of its gate samples; the draw of a batch is the mean of its
    examples' terms, so the mean is `(1/B) sum_j E[g_j]` and the variance `(1/B^2) sum_j
    Var[g_j]`.

    Args:
        graph: a small categorical graph (float64 for reference values).
        estimator: the estimator; its `state` (default `init(graph)`) is frozen.
        batch: the minibatch.
        state: a frozen state shared by every example.
        parameters: names of the parameters to track (default: all).
        max_configurations: the guard on `K^(copies N)` per example.
        chunk_size: configurations evaluated at once.

    Returns:
        an `ExactMoments` with `"gate_logits"` and each tracked parameter, method
        `"enumeration"`.

    Raises:
        NotComputable: for an estimator without `discrete_noise` or an unexpected noise layout.
        EnumerationTooLarge: past the guard.
    """
    _require_categorical(graph)
    if not estimator.discrete_noise:
        raise NotComputable(
            f"{estimator.name!r} depends on its noise beyond the categorical gates it implies "
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
    n, k = graph.num_gates, graph.num_classes
    check_categorical_enumerable(copies * n, k, max_configurations)
    dtype, device = prepared.logits.dtype, prepared.logits.device
    # Each chunk's weighted mean and centred sum of squares, merged by Chan's rule with the
    # chunk's total probability as its count (the counts sum to one).
    moments, atoms = {}, 0
    for chunk in iter_categorical_chunks(copies * n, k, chunk_size, dtype=dtype, device=device):
        noise, weight = enumeration_atoms(prepared, copies, chunk)
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


def exact_gradient_for(graph, batch: tuple[torch.Tensor, ...], **options):
    """`categorical_exact_gradient` for a graph with categorical gates, else `exact_gradient`
    (the Bernoulli sweep, called exactly as before); same arguments and results.

    Example:
        >>> from estimator_lab.graphs.categorical import CategoricalToy
        >>> toy = CategoricalToy.seeded(2, 3)
        >>> _, grads = exact_gradient_for(toy, toy.example_batch())
        >>> tuple(grads["gate_logits"].shape)
        (1, 2, 3)
    """
    if gate_distribution(graph) == "categorical":
        return categorical_exact_gradient(graph, batch, **options)
    return exact_gradient(graph, batch, **options)


def exact_moments_for(graph, estimator: GradientEstimator, batch: tuple[torch.Tensor, ...],
                      **options) -> ExactMoments:
    """`categorical_exact_moments` for a graph with categorical gates, else `exact_moments`
    (enumeration or quadrature of the Bernoulli noise, called exactly as before).

    Raises:
        NotComputable, EnumerationTooLarge: as the function it calls.
    """
    if gate_distribution(graph) == "categorical":
        return categorical_exact_moments(graph, estimator, batch, **options)
    return exact_moments(graph, estimator, batch, **options)
