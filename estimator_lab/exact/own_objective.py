"""Exact gradients of the expected loss under gates that are not Bernoulli: STS and noisy
rectifiers (paper section 2), the objectives their own estimators target.

- STS: `h = b sqrt(p)` with `b ~ Bernoulli(sqrt(p))`, so `E[L] = sum_b P(b) L(b sqrt(p))` over
  the `2^G` values of `b`, with `P(b)` a product of `sqrt(p)` and `1 - sqrt(p)`; autograd
  through the weighted sum differentiates both the weights and the gate values.
- Noisy rectifier: `h = max(0, a + z)`, `z = F^{-1}(1 - u)`; `E[L]` is a Gauss-Legendre sum over
  `u` on `[0, 1]^G` (one or two gates), split at the kink and graded towards the unbounded
  tails. The integrand is continuous in `u` and the nodes are fixed, so autograd through the
  sum is the exact derivative of the quadrature (no boundary terms: the kink moves, but the
  integrand does not jump there).
"""

from __future__ import annotations

import torch

from estimator_lab.configurations import check_enumerable, configurations
from estimator_lab.exact.moments import quadrature_atoms
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.montecarlo.engine import GATE_LOGITS, tracked_parameters


def _gradient(graph, prepared, value, parameters):
    params = tracked_parameters(graph, parameters)
    inputs = [prepared.logits, *params.values()]
    grads = torch.autograd.grad(value, inputs, allow_unused=True)
    names = [GATE_LOGITS, *params]
    return value.detach(), {
        n: torch.zeros_like(x) if g is None else g
        for n, g, x in zip(names, grads, inputs, strict=True)
    }


def sts_exact_gradient(
    graph: StochasticGraph, batch, *, parameters=None, max_configurations: int = 2**20
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`E[mean_j L_j]` under STS gates and its exact gradient (one gate layer).

    Returns:
        the expected loss and a dict from `"gate_logits"` and each parameter to its gradient.
    """
    if len(graph.layer_sizes) > 1:
        raise ValueError("sts_exact_gradient covers one gate layer")
    check_enumerable(graph.num_gates, max_configurations)
    prepared = graph.prepare(batch)
    root = torch.exp(torch.nn.functional.logsigmoid(prepared.logits) / 2)  # B x G, sqrt(p)
    bits = configurations(graph.num_gates, 0, 2**graph.num_gates,
                          dtype=root.dtype, device=root.device).unsqueeze(1)  # C x 1 x G
    weights = (bits * root + (1 - bits) * (1 - root)).prod(-1)  # C x B
    value = (weights * graph.loss(prepared, bits * root)).sum(0).mean()
    return _gradient(graph, prepared, value, parameters)


def noisy_rectifier_exact_gradient(
    graph: StochasticGraph, batch, *, noise: str = "gaussian", sigma: float = 1.0,
    parameters=None, quadrature_points: int = 24,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`E[mean_j L_j]` under noisy-rectifier gates and its gradient, by quadrature (1-2 gates).

    Each example gets its own rule (the kink sits at a per-example place), evaluated on a
    one-example batch.

    Returns:
        the expected loss and a dict from `"gate_logits"` and each parameter to its gradient.
    """
    from estimator_lab.estimators.noisy_rectifier import NoisyRectifier, rectifier_noise

    if len(graph.layer_sizes) > 1 or graph.num_gates > 2:
        raise ValueError("noisy_rectifier_exact_gradient covers one layer of at most 2 gates")
    estimator = NoisyRectifier(noise, sigma)
    batch_size = batch[0].shape[0]
    value, logits = 0.0, []
    for j in range(batch_size):
        prepared = graph.prepare(tuple(t[j : j + 1] for t in batch))
        logits.append(prepared.logits)
        nodes, weights = quadrature_atoms(
            estimator.quadrature_breakpoints(prepared.logits[0].detach()), (graph.num_gates,),
            quadrature_points,
        )
        gates = torch.relu(prepared.logits + rectifier_noise(nodes, noise, sigma))  # N x G
        losses = graph.loss(prepared, gates.unsqueeze(1))[:, 0]
        value = value + (weights * losses).sum() / batch_size
    params = tracked_parameters(graph, parameters)
    grads = torch.autograd.grad(value, [*logits, *params.values()], allow_unused=True)
    zero = [torch.zeros_like(x) for x in [*logits, *params.values()]]
    grads = [z if g is None else g for g, z in zip(grads, zero, strict=True)]
    return value.detach(), {GATE_LOGITS: torch.cat(grads[:batch_size])} | dict(
        zip(params, grads[batch_size:], strict=True)
    )
