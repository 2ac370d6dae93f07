"""Exact expected loss and its gradient by enumerating every gate configuration.

Each example's gates are independent of the other examples', so `E[mean_j L_j]` needs the `2^G`
configurations of one example's `G` gates (all layers), shared across the batch. The sweep runs
in chunks of configurations; each chunk's contribution `sum_c P(c) L_j(c)` is differentiated by
autograd and added, so memory is bounded by one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from estimator_lab.graphs.base import PreparedBatch, StochasticGraph
from estimator_lab.graphs.gates import bernoulli_log_prob
from estimator_lab.montecarlo.engine import GATE_LOGITS, tracked_parameters

DEFAULT_MAX_CONFIGURATIONS = 2**22


class EnumerationTooLarge(ValueError):
    """The graph has more gate configurations than the enumeration may visit."""


def check_enumerable(num_gates: int, max_configurations: int = DEFAULT_MAX_CONFIGURATIONS) -> int:
    """The number of configurations, `2^num_gates`, or an `EnumerationTooLarge` error saying so."""
    count = 2**num_gates
    if count > max_configurations:
        raise EnumerationTooLarge(
            f"{num_gates} gates make 2^{num_gates} = {count:,} configurations, more than the "
            f"limit of {max_configurations:,} (raise max_configurations or use fewer gates)"
        )
    return count


def configurations(
    num_gates: int, start: int, stop: int, *, dtype=torch.float64, device=None
) -> torch.Tensor:
    """Gate configurations `start .. stop - 1` as a `(stop - start) x num_gates` 0/1 tensor.

    Configuration `c` sets gate `i` to bit `i` of `c`.

    Example:
        >>> configurations(2, 0, 4, dtype=torch.int64).tolist()
        [[0, 0], [1, 0], [0, 1], [1, 1]]
    """
    codes = torch.arange(start, stop, device=device)
    bits = torch.arange(num_gates, device=device)
    return ((codes.unsqueeze(-1) >> bits) & 1).to(dtype)


def iter_configuration_chunks(
    num_gates: int, chunk_size: int, *, dtype=torch.float64, device=None
) -> Iterator[torch.Tensor]:
    """All `2^num_gates` configurations in chunks of at most `chunk_size` rows."""
    total = 2**num_gates
    for start in range(0, total, chunk_size):
        yield configurations(
            num_gates, start, min(start + chunk_size, total), dtype=dtype, device=device
        )


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

    Returns:
        the expected loss (a 0-dim tensor, detached) and a dict from `"gate_logits"` (a
        `B x G_0` tensor, if asked) and each parameter name to its gradient.

    Example:
        >>> from estimator_lab.graphs.sbn import SigmoidBeliefNet
        >>> net = SigmoidBeliefNet(3, (2, 2), torch.Generator().manual_seed(0)).double()
        >>> value, grads = exact_gradient(net, (torch.ones(1, 3, dtype=torch.float64),))
        >>> grads["gate_logits"].shape
        torch.Size([1, 2])
    """
    check_enumerable(graph.num_gates, max_configurations)
    params = tracked_parameters(graph, parameters)
    prepared = graph.prepare(batch)
    inputs = ([prepared.logits] if include_logits else []) + list(params.values())
    names = ([GATE_LOGITS] if include_logits else []) + list(params)
    totals = [torch.zeros_like(x) for x in inputs]
    value = torch.zeros((), dtype=prepared.logits.dtype, device=prepared.logits.device)
    for chunk in iter_configuration_chunks(
        graph.num_gates, chunk_size, dtype=prepared.logits.dtype, device=prepared.logits.device
    ):
        log_prob, losses = log_prob_and_loss(graph, prepared, chunk)
        partial = (log_prob.exp() * losses).sum(0).mean()
        if inputs:
            grads = torch.autograd.grad(partial, inputs, retain_graph=True, allow_unused=True)
            for total, grad in zip(totals, grads, strict=True):
                if grad is not None:
                    total.add_(grad)
        value = value + partial.detach()
    return value, dict(zip(names, totals, strict=True))
