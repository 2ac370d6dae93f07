"""Exact mean and variance of an estimator's draws, without Monte Carlo.

A draw is a deterministic function of its uniform noise, so its moments are integrals over the
noise. Two cases are exact:

- `discrete_noise` estimators depend on the noise only through the Bernoulli gates it implies:
  the integral is a finite sum over gate configurations (per gate-sample copy), each cell
  represented by the midpoint of its noise interval, layer by layer. Gates of a `GateLaw`
  (categorical, top-k: `copies x B x N x K` uniforms) are enumerated the same way, each cell
  represented by the law's `cell_noise`.
- Other single-layer estimators with at most `max_quadrature_dims` uniforms per example: a
  tensor-product Gauss-Legendre rule on `[0, 1]` split where the draw jumps, kinks or changes
  on a short scale (`estimator.quadrature_breakpoints`: `p_i` and `1 - p_i` by default), so
  the integrand is smooth on every cell and the rule converges fast.

Quadrature is exact only to its accuracy, so it reports it: the same cells are integrated with
`k` and `k // 2` nodes per cell and dimension, and `|Q_k - Q_{k/2}|` per coordinate is the error
estimate (`mean_error`, `variance_error`). When the rule has converged this bounds the error of
`Q_{k/2}` and overstates that of the returned `Q_k`. A value whose estimate exceeds
`quadrature_rtol` times its tensor's largest magnitude is labelled
`method = "approximate quadrature"`, not `"quadrature"`. Enumeration is exact up to rounding
(its error estimates are zero).

Examples are independent: the draw is `(1/B) sum_j g_j` with `g_j` a function of example `j`'s
noise, so the mean is `(1/B) sum_j E[g_j]` and the variance `(1/B^2) sum_j Var[g_j]`. This
holds for every estimator whose draw is a mean of per-example terms with example-independent
state (all built-in ones); the results are the moments of one draw of the full batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from estimator_lab.configurations import (
    DEFAULT_MAX_CONFIGURATIONS,
    check_enumerable,
    iter_configuration_chunks,
)
from estimator_lab.estimators.prepare import initial_state
from estimator_lab.exact.enumeration import GateLaw, iter_law_chunks
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph
from estimator_lab.montecarlo.engine import GATE_LOGITS, gradient_draws
from estimator_lab.montecarlo.moments import Moments, merge_moments

if TYPE_CHECKING:  # estimators import this module: only a type here
    from estimator_lab.estimators.base import GradientEstimator


class NotComputable(ValueError):
    """Exact moments are not available for this estimator on this graph (the message says why)."""


@dataclass(frozen=True)
class ExactMoments:
    """Exact mean and per-coordinate variance of one draw, by tensor name.

    Attributes:
        mean: name -> tensor of the parameter's (or gate logits') shape.
        variance: name -> tensor of the same shape.
        method: `"enumeration"`, `"quadrature"` (every error estimate within the requested
            relative accuracy) or `"approximate quadrature"` (some estimate beyond it).
        atoms: noise points visited per example (both quadrature rules together).
        mean_error: name -> the estimated absolute error of `mean`, per coordinate (zeros for
            enumeration).
        variance_error: name -> the same for `variance`.
    """

    mean: dict[str, torch.Tensor]
    variance: dict[str, torch.Tensor]
    method: str
    atoms: int
    mean_error: dict[str, torch.Tensor]
    variance_error: dict[str, torch.Tensor]


def _example(batch: tuple[torch.Tensor, ...], j: int) -> tuple[torch.Tensor, ...]:
    return tuple(t[j : j + 1] for t in batch)


def _copies(noise_shape: tuple[int, ...], per_example: tuple[int, ...], layout: str) -> int:
    """Gate samples per draw in noise of `noise_shape` laid out as `copies x 1 x per_example`."""
    dims = len(per_example) + 1
    if len(noise_shape) < dims or noise_shape[-dims:] != (1, *per_example):
        raise NotComputable(
            f"noise of shape {noise_shape} is not laid out as {layout} for one example"
        )
    return math.prod(noise_shape[:-dims])


def _enumeration_atoms(
    graph: StochasticGraph, prepared: PreparedBatch, copies: int, chunk: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoint noise and probability of each configuration in `chunk` (`C x copies*G`)."""
    num_gates = graph.num_gates
    gates = chunk.view(-1, copies, 1, num_gates)  # C x copies x 1 x G
    layers = list(gates.split(graph.layer_sizes, dim=-1))
    noise, log_weight = [], torch.zeros(gates.shape[0], dtype=gates.dtype, device=gates.device)
    for layer, layer_gates in enumerate(layers):
        p = torch.sigmoid(graph.layer_logits(prepared, layer, layers[:layer])).expand(
            layer_gates.shape
        )
        noise.append(torch.where(layer_gates > 0, p / 2, (1 + p) / 2))
        log_weight = log_weight + torch.where(layer_gates > 0, p, 1 - p).log().sum((1, 2, 3))
    return torch.cat(noise, -1).detach(), log_weight.exp().detach()


def law_atoms(law: GateLaw, logits: torch.Tensor, copies: int, chunk: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """A noise point inside each configuration's cell, and the configuration's probability.

    Args:
        law: the gates' law.
        logits: a one-example batch's `1 x N x K` logits.
        copies: gate samples per draw.
        chunk: a `C x (copies * N) x K` tensor of configurations of every copy's gates.

    Returns:
        `C x copies x 1 x N x K` uniforms whose gates are the configurations, and their `C`
        probabilities.
    """
    logits = logits.detach()
    gates = chunk.view(chunk.shape[0], copies, *logits.shape)  # C x copies x 1 x N x K
    return law.cell_noise(logits, gates), law.log_prob(logits, gates).sum((1, 2, 3)).exp()


def _gauss_legendre_cells(breakpoints: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on `[0, 1]` split at `breakpoints`."""
    nodes, weights = np.polynomial.legendre.leggauss(points)
    edges = np.unique(np.clip(np.concatenate([[0.0, 1.0], breakpoints]), 0.0, 1.0))
    all_nodes, all_weights = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi > lo:
            all_nodes.append(lo + (hi - lo) * (nodes + 1) / 2)
            all_weights.append(weights * (hi - lo) / 2)
    return np.concatenate(all_nodes), np.concatenate(all_weights)


def quadrature_atoms(
    breakpoints: torch.Tensor, noise_shape: tuple[int, ...], points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensor-product Gauss-Legendre noise for one example: each uniform dim is split at the
    breakpoints (`K x G`) of the gate it belongs to (the last noise dim indexes gates)."""
    dims = math.prod(noise_shape)
    gate_of_dim = np.arange(dims) % noise_shape[-1]
    cuts = breakpoints.cpu().numpy()
    rules = [_gauss_legendre_cells(cuts[:, g], points) for g in gate_of_dim]
    grids = np.meshgrid(*[r[0] for r in rules], indexing="ij")
    weight_grids = np.meshgrid(*[r[1] for r in rules], indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], -1).reshape(-1, *noise_shape)
    weights = np.prod(np.stack([w.ravel() for w in weight_grids], -1), -1)
    dtype, device = breakpoints.dtype, breakpoints.device
    return (torch.as_tensor(nodes, dtype=dtype, device=device),
            torch.as_tensor(weights, dtype=dtype, device=device))


def exact_moments(
    graph: StochasticGraph,
    estimator: GradientEstimator,
    batch: tuple[torch.Tensor, ...],
    *,
    state: Any = None,
    parameters: list[str] | None = None,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    quadrature_points: int = 24,
    max_quadrature_dims: int = 2,
    quadrature_rtol: float = 1e-6,
    chunk_size: int = 2048,
    law: GateLaw | None = None,
) -> ExactMoments:
    """The exact mean and per-coordinate variance of `estimator`'s draws on `graph`.

    Args:
        graph: a small graph (run in float64 for reference values).
        estimator: the estimator; its `state` (default `initial_state`: `init` on the
            prepared batch) is frozen.
        batch: the minibatch.
        state: a frozen state shared by every example.
        parameters: names of the parameters to track (default: all).
        max_configurations: the enumeration guard, per example.
        quadrature_points: Gauss-Legendre nodes per cell and noise dimension (`>= 2`; the
            error estimate uses half as many).
        max_quadrature_dims: most uniforms per example for quadrature.
        quadrature_rtol: the accuracy a quadrature value must reach, relative to the largest
            magnitude of its tensor, to be labelled `"quadrature"`.
        chunk_size: noise atoms evaluated at once.
        law: the law of a graph whose gates take `K`-dim values (categorical, top-k; see
            `exact.categorical.exact_moments_for`): enumeration only; `None`, Bernoulli gates.

    Returns:
        an `ExactMoments` with `"gate_logits"` and each tracked parameter.

    Raises:
        NotComputable: when neither enumeration nor quadrature applies, saying why.
        ValueError: when `quadrature_points < 2`.
    """
    if quadrature_points < 2:
        raise ValueError(f"quadrature_points must be >= 2, got {quadrature_points}")
    state = initial_state(estimator, graph, batch) if state is None else state
    batch_size = batch[0].shape[0]
    per_example = [
        _example_moments(
            graph, estimator, _example(batch, j), state=state, parameters=parameters,
            max_configurations=max_configurations, quadrature_points=quadrature_points,
            max_quadrature_dims=max_quadrature_dims, chunk_size=chunk_size, law=law,
        )
        for j in range(batch_size)
    ]
    # The mean and its error average the examples' (1/B), the variance and its error add up
    # the examples' variances (1/B^2).
    mean, variance, mean_error, variance_error = (
        _batch_total([example[k] for example in per_example], batch_size**power)
        for k, power in ((0, 1), (1, 2), (2, 1), (3, 2))
    )
    method, atoms = per_example[0][4:]
    if method == "quadrature" and not all(
        _within(error[name], value[name], quadrature_rtol)
        for value, error in ((mean, mean_error), (variance, variance_error)) for name in value
    ):
        method = "approximate quadrature"
    return ExactMoments(mean, variance, method, atoms, mean_error, variance_error)


def _batch_total(per_example: list[dict[str, torch.Tensor]], scale: int) -> dict:
    """Per-example tensors combined over the batch and divided by `scale`: the gate logits'
    rows concatenated (example `j` owns row `j`), every parameter's tensors summed."""
    total = {}
    for name in per_example[0]:
        tensors = [example[name] for example in per_example]
        total[name] = (torch.cat(tensors) if name == GATE_LOGITS
                       else torch.stack(tensors).sum(0)) / scale
    return total


def _within(error: torch.Tensor, value: torch.Tensor, rtol: float) -> bool:
    """Whether every `error` is at most `rtol` times the largest `|value|`."""
    return bool((error <= rtol * value.abs().max()).all())


def _example_moments(
    graph: StochasticGraph,
    estimator: GradientEstimator,
    example: tuple[torch.Tensor, ...],
    *,
    state: Any,
    parameters: list[str] | None,
    max_configurations: int,
    quadrature_points: int,
    max_quadrature_dims: int,
    chunk_size: int,
    law: GateLaw | None,
):
    """Mean and variance of the draws of a one-example batch, their error estimates, the
    method, and the atom count."""
    with torch.no_grad():
        prepared = graph.prepare(example)
    noise_shape = tuple(estimator.noise_shape(graph, prepared))
    dtype, device = prepared.logits.dtype, prepared.logits.device
    def moments(chunks, merged=False):
        return _weighted_moments(graph, estimator, example, noise_shape, chunks, state=state,
                                 parameters=parameters, merged=merged)

    if law is not None and not estimator.discrete_noise:
        raise NotComputable(
            f"{estimator.name!r} depends on its noise beyond the {law.gates} it implies "
            f"(discrete_noise=False): no exact enumeration of its moments"
        )
    if estimator.discrete_noise:
        if law is None:  # Bernoulli gates, layer by layer
            copies = _copies(noise_shape, (graph.num_gates,), "copies x B x G")
            check_enumerable(copies * graph.num_gates, max_configurations)
            mean, variance, atoms = moments(
                _enumeration_atoms(graph, prepared, copies, configs)
                for configs in iter_configuration_chunks(
                    copies * graph.num_gates, chunk_size, dtype=dtype, device=device
                )
            )
        else:
            copies = _copies(noise_shape, (graph.num_gates, graph.num_classes),
                             "copies x B x N x K")
            law.count(copies * graph.num_gates, max_configurations)
            mean, variance, atoms = moments(
                (law_atoms(law, prepared.logits, copies, configs)
                 for configs in iter_law_chunks(law, copies * graph.num_gates, chunk_size,
                                                dtype=dtype, device=device)),
                merged=True,
            )
        zeros = {name: torch.zeros_like(value) for name, value in mean.items()}
        return mean, variance, zeros, zeros, "enumeration", atoms
    dims = math.prod(noise_shape)
    if len(graph.layer_sizes) > 1 or dims > max_quadrature_dims:
        raise NotComputable(
            f"{estimator.name!r} has continuous noise with {dims} uniforms per example on "
            f"{len(graph.layer_sizes)} gate layer(s); quadrature covers one layer and at "
            f"most {max_quadrature_dims} uniforms"
        )
    breakpoints = estimator.quadrature_breakpoints(prepared.logits[0].detach())
    (coarse_mean, coarse_variance, coarse_atoms), (mean, variance, atoms) = (
        moments(zip(nodes.split(chunk_size), weights.split(chunk_size), strict=True))
        for nodes, weights in (quadrature_atoms(breakpoints, noise_shape, points)
                               for points in (quadrature_points // 2, quadrature_points))
    )
    mean_error = {name: (mean[name] - coarse_mean[name]).abs() for name in mean}
    variance_error = {name: (variance[name] - coarse_variance[name]).abs() for name in mean}
    return mean, variance, mean_error, variance_error, "quadrature", atoms + coarse_atoms


def _weighted_moments(
    graph: StochasticGraph,
    estimator: GradientEstimator,
    example: tuple[torch.Tensor, ...],
    noise_shape: tuple[int, ...],
    chunks,
    *,
    state: Any,
    parameters: list[str] | None,
    merged: bool = False,
):
    """Mean and variance of the draws over weighted noise atoms (weights summing to one), from
    `chunks` of (`N x ...` noise, `N` weights), and the atom count.

    Two accumulations, equal up to rounding: by default, weighted sums of `g - shift` and
    `(g - shift)^2`, shifted by the first atom's draw so the variance of a nearly constant draw
    keeps its precision (the Bernoulli sweeps); `merged` (the sweeps of a `GateLaw`), each
    chunk's weighted mean and centred sum of squares merged by Chan's rule with the chunk's
    total probability as its count, a chunk of probability 0 skipped. Each sweep keeps its own,
    so its results stay what they were, bit for bit.
    """
    sums, atoms = {}, 0
    for noise, weight in chunks:
        atoms += noise.shape[0]
        total = float(weight.sum())
        if merged and total == 0:  # configurations too improbable to matter
            continue
        draws = gradient_draws(graph, estimator, example, noise.view(-1, *noise_shape),
                               state=state, parameters=parameters)
        for name, values in draws.items():
            w = weight.view(-1, *[1] * (values.dim() - 1))
            if merged:
                mean = (w * values).sum(0) / total
                part = Moments(total, mean, (w * (values - mean).square()).sum(0))
                sums[name] = merge_moments(sums[name], part) if name in sums else part
                continue
            if name not in sums:
                sums[name] = (values[0].clone(), torch.zeros_like(values[0]),
                              torch.zeros_like(values[0]))
            shift, first, second = sums[name]
            centred = values - shift
            first += (w * centred).sum(0)
            second += (w * centred.square()).sum(0)
    if merged:
        mean = {name: m.mean for name, m in sums.items()}
        variance = {name: (m.m2 / m.count).clamp_min(0) for name, m in sums.items()}
    else:
        mean = {name: shift + first for name, (shift, first, _) in sums.items()}
        variance = {name: (second - first.square()).clamp_min(0)
                    for name, (_, first, second) in sums.items()}
    return mean, variance, atoms
