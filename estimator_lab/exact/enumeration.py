"""Exact expected loss and its gradient by enumerating every gate configuration.

Each example's gates are independent of the other examples', so `E[mean_j L_j]` needs the `2^G`
configurations of one example's `G` gates (all layers), shared across the batch. The sweep runs
in chunks of configurations; each chunk's contribution `sum_c P(c) L_j(c)` is differentiated by
autograd and added, so memory is bounded by one chunk.

Graphs whose gates take one of `C` values in `R^K` each (categorical gates: one-hot classes;
top-k gates: k-hot subsets) are swept the same way, with their `GateLaw` (`exact.categorical`
and `exact.topk` build them): configuration `c` gives gate `i` value `(c // C^i) % C` (base-`C`
digits, gate 0 first), shared by the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from estimator_lab.configurations import (
    DEFAULT_MAX_CONFIGURATIONS,
    check_enumerable,
    iter_configuration_chunks,
)
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph
from estimator_lab.graphs.gates import bernoulli_log_prob
from estimator_lab.montecarlo.engine import GATE_LOGITS, tracked_parameters


@dataclass(frozen=True)
class GateLaw:
    """One layer of `N` gates that each take one of `C` values in `R^K`, for the sweeps.

    Attributes:
        gates: what a configuration is made of, for messages (`"categorical gates"`).
        values: `values(dtype, device)`, the `C x K` values one gate takes.
        log_prob: `log_prob(logits, gates)`, each gate's log-probability, `... x K -> ...`.
        count: `count(num_gates, max_configurations)`, the `C^N` configurations of `num_gates`
            gates, or an `EnumerationTooLarge` error past the limit.
        cell_noise: `cell_noise(logits, gates)`, uniforms (of the broadcast shape) that draw
            exactly `gates`: one noise point inside each configuration's cell, for exact
            moments.
    """

    gates: str
    values: Callable[..., torch.Tensor]
    log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    count: Callable[[int, int], int]
    cell_noise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def law_configurations(values: torch.Tensor, num_gates: int, start: int, stop: int) -> torch.Tensor:
    """Configurations `start .. stop - 1` of `num_gates` gates taking the `C x K` `values`, as
    a `(stop - start) x N x K` tensor (base-`C` digits, gate 0 first).

    Example:
        >>> law_configurations(torch.eye(3), 2, 0, 4).argmax(-1).tolist()
        [[0, 0], [1, 0], [2, 0], [0, 1]]
    """
    count = values.shape[0]
    codes = torch.arange(start, stop, device=values.device)
    powers = count ** torch.arange(num_gates, device=values.device)
    return values[(codes.unsqueeze(-1) // powers) % count]


def iter_law_chunks(law: GateLaw, num_gates: int, chunk_size: int, *, dtype=torch.float64,
                    device=None) -> Iterator[torch.Tensor]:
    """All `C^N` configurations of `num_gates` gates of `law`, in chunks of at most
    `chunk_size`, each `chunk x N x K`."""
    values = law.values(dtype, device)
    total = values.shape[0] ** num_gates
    for start in range(0, total, chunk_size):
        yield law_configurations(values, num_gates, start, min(start + chunk_size, total))


def log_prob_and_loss(
    graph: StochasticGraph, prepared: PreparedBatch, gates: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`log P(b)` and `L(b)` for explicit gate configurations.

    Args:
        graph: the model (any number of gate layers).
        prepared: `graph.prepare(batch)` for `B` examples.
        gates: a `C x G` (shared by the batch) or `C x B x G` tensor of 0/1 configurations.

    Returns:
        two `C x B` tensors: the log-probability of each configuration under the gate
        distribution (`Bernoulli(sigmoid(a))` per gate, layer by layer) and its loss.
    """
    if gates.dim() == 2:
        gates = gates.unsqueeze(1).expand(-1, prepared.batch_size, -1)
    layers = list(gates.split(graph.layer_sizes, dim=-1))
    log_prob = torch.zeros(gates.shape[:-1], dtype=gates.dtype, device=gates.device)
    for layer, layer_gates in enumerate(layers):
        logits = graph.layer_logits(prepared, layer, layers[:layer])
        logits = logits.expand(layer_gates.shape)
        log_prob = log_prob + bernoulli_log_prob(logits, layer_gates).sum(-1)
    return log_prob, graph.loss(prepared, gates)


def exact_gradient(
    graph: StochasticGraph,
    batch: tuple[torch.Tensor, ...],
    *,
    parameters: Sequence[str] | None = None,
    include_logits: bool = True,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    chunk_size: int = 4096,
    law: GateLaw | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`E[mean_j L_j]` and its exact gradient, by enumeration.

    Run it in float64 (`graph.double()`, float64 inputs) for reference values.

    Args:
        graph: the model; `graph.num_gates` must be small enough to enumerate.
        batch: the minibatch.
        parameters: names of the parameters to differentiate (default: all).
        include_logits: also return the gradient with respect to the first layer's logits.
        max_configurations: the guard; more configurations raise `EnumerationTooLarge`.
        chunk_size: configurations evaluated at once.
        law: the law of a graph whose gates take `K`-dim values (categorical, top-k; see
            `exact.categorical.exact_gradient_for`); `None`, Bernoulli gates in layers.

    Returns:
        the expected loss (a 0-dim tensor, detached) and a dict from `"gate_logits"` (a
        `B x G_0` tensor, or `B x N x K` with a `law`, if asked) and each parameter name to
        its gradient.

    Example:
        >>> from estimator_lab.graphs.sbn import SigmoidBeliefNet
        >>> net = SigmoidBeliefNet(3, (2, 2), torch.Generator().manual_seed(0)).double()
        >>> value, grads = exact_gradient(net, (torch.ones(1, 3, dtype=torch.float64),))
        >>> grads["gate_logits"].shape
        torch.Size([1, 2])
    """
    (check_enumerable if law is None else law.count)(graph.num_gates, max_configurations)
    tracked = tracked_parameters(graph, parameters)
    prepared = graph.prepare(batch)
    if include_logits:
        tracked = {GATE_LOGITS: prepared.logits} | tracked
    totals = {name: torch.zeros_like(x) for name, x in tracked.items()}
    dtype, device = prepared.logits.dtype, prepared.logits.device
    if law is None:
        chunks = iter_configuration_chunks(graph.num_gates, chunk_size, dtype=dtype,
                                           device=device)
        weigh = partial(log_prob_and_loss, graph, prepared)
    else:
        chunks = iter_law_chunks(law, graph.num_gates, chunk_size, dtype=dtype, device=device)
        weigh = partial(_law_log_prob_and_loss, graph, law, prepared)
    value = torch.zeros((), dtype=dtype, device=device)
    for chunk in chunks:
        log_prob, losses = weigh(chunk)
        partial_sum = (log_prob.exp() * losses).sum(0).mean()
        if tracked:
            grads = torch.autograd.grad(partial_sum, list(tracked.values()), retain_graph=True,
                                        allow_unused=True)
            for total, grad in zip(totals.values(), grads, strict=True):
                if grad is not None:
                    total.add_(grad)
        value = value + partial_sum.detach()
    return value, totals


def _law_log_prob_and_loss(graph: StochasticGraph, law: GateLaw, prepared: PreparedBatch,
                           configurations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`log P` and `L`, two `C x B` tensors, of `C x N x K` configurations shared by the batch."""
    gates = configurations.unsqueeze(1).expand(-1, prepared.batch_size, -1, -1)  # C x B x N x K
    return law.log_prob(prepared.logits, gates).sum(-1), graph.loss(prepared, gates)
