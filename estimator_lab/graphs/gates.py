"""Bernoulli gates from explicit uniform noise: the sampling rule every estimator shares."""

from __future__ import annotations

import torch


def bernoulli_gates(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Hard gates `b = 1[u < sigmoid(a)]` in the dtype of `logits` (shapes broadcast)."""
    return (noise < torch.sigmoid(logits)).to(logits.dtype)


def bernoulli_log_prob(logits: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """`log P(b | a)` per gate for `b ~ Bernoulli(sigmoid(a))`, stable for large `|a|`."""
    return -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, gates, reduction="none"
    )


def hard_bernoulli(layer: int, logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Gate function for `graph.sample`: hard gates with no gradient path through them."""
    return bernoulli_gates(logits.detach(), noise)
