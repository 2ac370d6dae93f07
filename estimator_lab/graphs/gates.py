"""Bernoulli gates from explicit uniform noise: the sampling rule every estimator shares."""

from __future__ import annotations

import torch


def bernoulli_gates(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Hard gates `b = 1[u < sigmoid(a)]` in the dtype of `logits` (shapes broadcast)."""
    return (noise < torch.sigmoid(logits)).to(logits.dtype)


def bernoulli_log_prob(logits: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """`log P(b | a) = b a - softplus(a)` per gate for `b ~ Bernoulli(sigmoid(a))`, stable for
    large `|a|`; `logits` and `gates` of one shape.

    Its gradients are the closed forms `b - sigmoid(a)` (logits) and `a` (gates), themselves
    differentiable: under `vmap(grad)` autograd's decomposition of the cross-entropy's
    backward pass costs about ten elementwise passes where this costs two.

    Example:
        >>> a = torch.tensor([0.5, -2.0], requires_grad=True)
        >>> b = torch.tensor([1.0, 0.0])
        >>> bernoulli_log_prob(a, b).sum().backward()
        >>> torch.allclose(a.grad, b - torch.sigmoid(a))
        True
    """
    return _BernoulliLogProb.apply(logits, gates)


class _BernoulliLogProb(torch.autograd.Function):
    """`bernoulli_log_prob` with its gradients in closed form (a vmap rule generated)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, gates, reduction="none"
        )

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        logits, gates = ctx.saved_tensors
        wrt_logits = grad * (gates - torch.sigmoid(logits)) if ctx.needs_input_grad[0] else None
        wrt_gates = grad * logits if ctx.needs_input_grad[1] else None
        return wrt_logits, wrt_gates


def hard_bernoulli(layer: int, logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Gate function for `graph.sample`: hard gates with no gradient path through them."""
    return bernoulli_gates(logits.detach(), noise)
