"""Exact expectations, gradients and estimator moments for categorical graphs, by enumeration,
and the sweeps by a graph's gates (`exact_gradient_for`, `exact_moments_for`).

One example's `N` categorical gates of `K` classes take `K^N` configurations, shared by the
batch (examples are independent). Configuration `c` gives gate `i` the class `(c // K^i) % K`
(base-`K` digits, gate 0 first). The sweeps run in chunks of configurations under the same guard
and verdict as the Bernoulli sweep (`EnumerationTooLarge`, a `ValueError`): they are
`exact_gradient` and `exact_moments` with the categorical `GateLaw` (`categorical_law`).

Exact moments cover estimators whose draw depends on its `copies x B x N x K` uniforms only
through the one-hot gates they imply (Gumbel-max, copy by copy: `discrete_noise`). Each
configuration of the `copies x N` gates is represented by one noise point inside its cell, the
uniforms of the conditional Gumbel scores at `v = 1/2` (`conditional_gumbel`), and weighted by
its probability; the cell's draw is then the draw of any noise in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from estimator_lab.configurations import DEFAULT_MAX_CONFIGURATIONS, EnumerationTooLarge
from estimator_lab.exact.enumeration import GateLaw, exact_gradient, law_configurations
from estimator_lab.exact.moments import ExactMoments, exact_moments, law_atoms
from estimator_lab.exact.topk import topk_law
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph
from estimator_lab.graphs.categorical import (
    CategoricalGraph,
    categorical_log_prob,
    conditional_gumbel,
    gate_distribution,
    gumbel_uniforms,
    too_many_categorical,
)

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
    refusal = too_many_categorical(num_gates, num_classes, max_configurations)
    if refusal is not None:
        raise EnumerationTooLarge(refusal)
    return num_classes**num_gates


def _cell_noise(logits: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """The uniforms of the conditional Gumbel scores at `v = 1/2`: their Gumbel-max is `gates`."""
    return gumbel_uniforms(logits, conditional_gumbel(logits, gates, torch.full_like(gates, 0.5)))


def _law(num_classes: int) -> GateLaw:
    return GateLaw(
        gates="categorical gates",
        values=lambda dtype, device: torch.eye(num_classes, dtype=dtype, device=device),
        log_prob=categorical_log_prob,
        count=lambda num_gates, limit: check_categorical_enumerable(num_gates, num_classes,
                                                                    limit),
        cell_noise=_cell_noise,
    )


def categorical_law(graph: CategoricalGraph) -> GateLaw:
    """The `GateLaw` of a categorical graph's gates: the `K` one-hot classes, the softmax law,
    the `K^N` guard and the conditional-Gumbel cell noise.

    Raises:
        TypeError: for a graph without categorical gates.
    """
    if gate_distribution(graph) != "categorical":
        raise TypeError(f"{type(graph).__name__} does not have categorical gates")
    return _law(graph.num_classes)


def categorical_configurations(
    num_gates: int, num_classes: int, start: int, stop: int, *, dtype=torch.float64, device=None
) -> torch.Tensor:
    """Configurations `start .. stop - 1` as a `(stop - start) x N x K` one-hot tensor.

    Example:
        >>> categorical_configurations(2, 3, 0, 4).argmax(-1).tolist()
        [[0, 0], [1, 0], [2, 0], [0, 1]]
    """
    eye = torch.eye(num_classes, dtype=dtype, device=device)
    return law_configurations(eye, num_gates, start, stop)


def categorical_exact_gradient(
    graph: CategoricalGraph, batch: tuple[torch.Tensor, ...], **options: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`E[mean_j L_j]` and its exact gradient over every configuration of the gates.

    `exact_gradient` with the graph's `categorical_law`: the same options and results (run it
    in float64 for reference values).

    Returns:
        the expected loss (a 0-dim tensor, detached) and a dict from `"gate_logits"` (a
        `B x N x K` tensor, if asked) and each parameter name to its gradient.

    Raises:
        TypeError: for a graph without categorical gates.
        EnumerationTooLarge: when `K^N > max_configurations`.

    Example:
        >>> from estimator_lab.graphs.categorical import CategoricalToy
        >>> toy = CategoricalToy.seeded(2, 3)
        >>> _, grads = categorical_exact_gradient(toy, toy.example_batch())
        >>> bool(torch.allclose(grads["theta"], toy.true_gradient()["theta"]))
        True
    """
    return exact_gradient(graph, batch, law=categorical_law(graph), **options)


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
    return law_atoms(_law(prepared.logits.shape[-1]), prepared.logits, copies, chunk)


def categorical_exact_moments(
    graph: CategoricalGraph,
    estimator: GradientEstimator,
    batch: tuple[torch.Tensor, ...],
    **options: Any,
) -> ExactMoments:
    """The exact mean and per-coordinate variance of a `discrete_noise` estimator's draws.

    `exact_moments` with the graph's `categorical_law` (the same options: `state`,
    `parameters`, `max_configurations` on `K^(copies N)` per example, `chunk_size`): per
    example, a weighted sum over the configurations of its gate samples; the draw of a batch
    is the mean of its examples' terms, so the mean is `(1/B) sum_j E[g_j]` and the variance
    `(1/B^2) sum_j Var[g_j]`.

    Returns:
        an `ExactMoments` with `"gate_logits"` and each tracked parameter, method
        `"enumeration"`.

    Raises:
        TypeError: for a graph without categorical gates.
        NotComputable: for an estimator without `discrete_noise` or an unexpected noise layout.
        EnumerationTooLarge: past the guard.
    """
    return exact_moments(graph, estimator, batch, law=categorical_law(graph), **options)


def gate_law(graph: StochasticGraph) -> GateLaw | None:
    """The `GateLaw` of a graph with categorical or top-k gates; `None` for Bernoulli gates
    (swept layer by layer, as before).

    Example:
        >>> from estimator_lab.graphs.topk import TopKToy
        >>> gate_law(TopKToy.seeded(1, 3, 2)).gates, gate_law(torch.nn.Module())
        ('top-k masks', None)
    """
    distribution = gate_distribution(graph)
    if distribution == "categorical":
        return categorical_law(graph)
    if distribution == "topk":
        return topk_law(graph)
    return None


def exact_gradient_for(graph: StochasticGraph, batch: tuple[torch.Tensor, ...], **options):
    """`exact_gradient` with the `gate_law` of the graph's gates: the Bernoulli sweep, called
    exactly as before, or the categorical or top-k one; same options and results.

    Example:
        >>> from estimator_lab.graphs.categorical import CategoricalToy
        >>> toy = CategoricalToy.seeded(2, 3)
        >>> _, grads = exact_gradient_for(toy, toy.example_batch())
        >>> tuple(grads["gate_logits"].shape)
        (1, 2, 3)
    """
    return exact_gradient(graph, batch, law=gate_law(graph), **options)


def exact_moments_for(graph: StochasticGraph, estimator: GradientEstimator,
                      batch: tuple[torch.Tensor, ...], **options) -> ExactMoments:
    """`exact_moments` with the `gate_law` of the graph's gates (Bernoulli: enumeration or
    quadrature of the noise, called exactly as before; categorical and top-k: enumeration).

    Raises:
        NotComputable, EnumerationTooLarge: as `exact_moments`.
    """
    return exact_moments(graph, estimator, batch, law=gate_law(graph), **options)
