"""Estimator noise and minibatch noise, separated by the law of total variance.

A stochastic-gradient step sees both the estimator's noise (gates drawn for a fixed minibatch)
and the minibatch's (which examples were drawn). Over minibatches `m` drawn i.i.d. from the
data, with `n` estimator draws on each,

    Var[g] = E_m[Var[g | m]] + Var_m[E[g | m]],

the first term the estimator's own variance, the second the variance of the exact minibatch
gradient. `run_minibatch_stream` estimates both per coordinate: the within term is the mean of
the per-minibatch sample variances; the between term is the sample variance of the
per-minibatch means minus `within / n` (their own Monte Carlo noise), which makes it unbiased.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.montecarlo.runner import run_draws

if TYPE_CHECKING:  # estimators import the engine: only a type here
    from estimator_lab.estimators.base import GradientEstimator


@dataclass(frozen=True)
class VarianceDecomposition:
    """Per-coordinate decomposition of one estimator's variance over minibatches.

    Attributes:
        within: name -> `E_m[Var[g | m]]`, the estimator's noise (a flat float64 tensor).
        between: name -> `Var_m[E[g | m]]`, the minibatch noise (unbiased; can be < 0).
        mean: name -> the mean gradient over all draws.
        minibatches: `M`.
        draws_per_minibatch: `n`.
    """

    within: dict[str, torch.Tensor]
    between: dict[str, torch.Tensor]
    mean: dict[str, torch.Tensor]
    minibatches: int
    draws_per_minibatch: int

    @property
    def total(self) -> dict[str, torch.Tensor]:
        """`within + between`, the variance of one draw on a random minibatch."""
        return {name: self.within[name] + self.between[name] for name in self.within}


def run_minibatch_stream(
    graph: StochasticGraph,
    estimators: Mapping[str, GradientEstimator],
    batches: Callable[[int], tuple[torch.Tensor, ...]],
    *,
    num_minibatches: int,
    draws_per_minibatch: int,
    seed: int,
    **options: Any,
) -> dict[str, VarianceDecomposition]:
    """Draws `draws_per_minibatch` estimates on each of `num_minibatches` minibatches.

    Args:
        graph: the model.
        estimators: estimators by name.
        batches: `m -> minibatch m` (seeded: e.g. a generator over the training set); the
            gate-independent layers are computed once per minibatch.
        num_minibatches: `M >= 2`.
        draws_per_minibatch: `n >= 2`.
        seed: minibatch `m` uses noise seed `seed + m`, so each minibatch's draws are
            independent and reproducible.
        **options: other `run_draws` options (chunk size, parameters, ...).

    Returns:
        a `VarianceDecomposition` per estimator (gate logits are left out: their shape is
        that of one minibatch's examples, not a parameter's).
    """
    if num_minibatches < 2 or draws_per_minibatch < 2:
        raise ValueError("need at least 2 minibatches and 2 draws per minibatch, got "
                         f"{num_minibatches} and {draws_per_minibatch}")
    means: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in estimators}
    variances: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in estimators}
    for m in range(num_minibatches):
        runs = run_draws(graph, estimators, batches(m), num_draws=draws_per_minibatch,
                         seed=seed + m, include_logits=False, **options)
        for name, accumulator in runs.items():
            for tensor in accumulator.names():
                means[name].setdefault(tensor, []).append(accumulator[tensor].mean)
                variances[name].setdefault(tensor, []).append(accumulator[tensor].variance)
    decompositions = {}
    for name in estimators:
        within = {k: torch.stack(v).mean(0) for k, v in variances[name].items()}
        stacked = {k: torch.stack(v) for k, v in means[name].items()}
        between = {k: stacked[k].var(0) - within[k] / draws_per_minibatch for k in stacked}
        decompositions[name] = VarianceDecomposition(
            within, between, {k: stacked[k].mean(0) for k in stacked}, num_minibatches,
            draws_per_minibatch,
        )
    return decompositions
