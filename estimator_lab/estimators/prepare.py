"""Estimators ready for one graph and batch: batch-dependent hyper-parameters and warm states.

Estimators are built by name alone; the name means the estimator for the graph's gates
(`estimator_for`: a categorical graph gets the categorical estimator of that name). Their state
comes from `init(graph, prepared, seed=seed)` on the batch they will see (`initial_state`:
`reinforce-oracle` computes its Eq. 10 expectations there), and adaptive estimators
(moving-average baselines, RELAX's control variate) should be measured in a warmed-up state
rather than at `init`. `prepare_estimator` does both, so studies and tests measure every
estimator the same way.
"""

from __future__ import annotations

from typing import Any

import torch

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.categorical.registry import estimator_for
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.categorical import gate_distribution
from estimator_lab.noise import uniform_noise

WARMUP_SEED_OFFSET = 1_000_003
"""Warm-up noise uses `seed + WARMUP_SEED_OFFSET`, a stream apart from the measured draws."""


def prepare_estimator(
    name: str,
    graph: StochasticGraph,
    batch: tuple[torch.Tensor, ...],
    *,
    warmup_steps: int = 0,
    seed: int = 0,
    **hyper: Any,
) -> tuple[GradientEstimator, Any]:
    """An estimator by name, built for `graph` and `batch`, and its (warmed-up) state.

    Args:
        name: registry name (of the Bernoulli or, for a graph with categorical gates, the
            categorical registry).
        graph: the model.
        batch: the fixed batch the estimator will be measured on.
        warmup_steps: `update` calls before the state is frozen, each on fresh noise from the
            warm-up stream (a no-op for stateless estimators).
        seed: the run's seed.
        **hyper: hyper-parameters passed to `estimator_for`.

    Returns:
        the estimator and its state after the warm-up.

    Notes:
        `reinforce-oracle` (built without `values`) computes its Eq. 10 values pooled over the
        batch in `init` (one per gate, as a running Eq. 10 estimates them), by enumeration when
        the graph is small enough and from a pilot of 100,000 draws seeded by `seed` otherwise.
    """
    estimator = estimator_for(name, gate_distribution(graph), **hyper)
    return estimator, warmed_up_state(estimator, graph, batch, warmup_steps=warmup_steps, seed=seed)


def warmed_up_state(
    estimator: GradientEstimator,
    graph: StochasticGraph,
    batch: tuple[torch.Tensor, ...],
    *,
    warmup_steps: int = 0,
    seed: int = 0,
) -> Any:
    """`initial_state` after `warmup_steps` updates on `batch`, each on fresh noise from the
    warm-up stream `seed + WARMUP_SEED_OFFSET` (apart from the measured draws)."""
    with torch.no_grad():
        prepared = graph.prepare(batch)
    state = estimator.init(graph, prepared, seed=seed)
    if warmup_steps and type(estimator).update is not GradientEstimator.update:
        noise = uniform_noise(seed + WARMUP_SEED_OFFSET, range(warmup_steps),
                              estimator.noise_shape(graph, prepared),
                              dtype=prepared.logits.dtype, device=prepared.logits.device)
        for step_noise in noise:
            state = estimator.update(state, graph, prepared, step_noise)
    return state


def initial_state(
    estimator: GradientEstimator,
    graph: StochasticGraph,
    batch: tuple[torch.Tensor, ...],
    *,
    seed: int | None = None,
) -> Any:
    """`estimator.init(graph, graph.prepare(batch), seed=seed)`, the batch prepared without an
    autograd graph: the state of an estimator measured on `batch` before any update."""
    with torch.no_grad():
        prepared = graph.prepare(batch)
    return estimator.init(graph, prepared, seed=seed)
