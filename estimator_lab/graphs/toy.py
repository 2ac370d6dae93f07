"""The toy problem `E[sum_i (b_i - t)^2]` with a closed-form gradient."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


class ToyGraph(StochasticGraph):
    """`n` independent gates `b_i ~ Bernoulli(sigmoid(a_i))` with loss `sum_i (b_i - t)^2`.

    The gate logits `a` are the parameter `theta`. `E[L] = sum_i p_i (1 - t)^2 + (1 - p_i) t^2`, so
    `dE[L]/da_i = sigmoid'(a_i) (1 - 2t)`: the standard benchmark of Tucker et al. (2017) with
    `t = 0.45`, where the two outcomes differ little and estimators must resolve a small signal.

    The batch is `(x,)` with `x` a `B x 0` tensor: it only says how many independent copies.

    Args:
        logits: the initial logits, `n` values.
        target: `t`.

    Example:
        >>> toy = ToyGraph([0.0, 1.0], target=0.45)
        >>> toy.true_gradient()["theta"]
        tensor([0.0250, 0.0197], dtype=torch.float64)
    """

    def __init__(self, logits: Sequence[float] | torch.Tensor, target: float = 0.45) -> None:
        super().__init__()
        logits = torch.as_tensor(logits, dtype=torch.float64).flatten()
        if logits.numel() < 1:
            raise ValueError("a toy graph needs at least one gate")
        if not (torch.isfinite(logits).all() and math.isfinite(target)):
            raise ValueError(f"logits and target must be finite, got {logits.tolist()}, {target}")
        self.theta = nn.Parameter(logits.clone())
        self.target = float(target)
        self.num_gates = logits.numel()

    @classmethod
    def seeded(cls, num_gates: int, target: float = 0.45, seed: int = 0) -> ToyGraph:
        """A toy with logits drawn from `N(0, 1)` by a seeded generator."""
        if num_gates < 1:
            raise ValueError(f"a toy graph needs at least one gate, got {num_gates}")
        generator = torch.Generator().manual_seed(seed)
        return cls(torch.randn(num_gates, generator=generator, dtype=torch.float64), target)

    def example_batch(self, batch_size: int = 1) -> tuple[torch.Tensor]:
        """`batch_size` copies of the (input-free) problem."""
        return (torch.zeros(batch_size, 0, dtype=self.theta.dtype),)

    def prepare(self, batch: tuple[torch.Tensor, ...]) -> PreparedBatch:
        (x,) = batch
        return PreparedBatch(logits=self.theta.expand(x.shape[0], -1))

    def loss(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        return (gates - self.target).square().sum(-1)

    def expected_loss(self) -> torch.Tensor:
        """`E[L]` in closed form (a 0-dim tensor, differentiable)."""
        p = torch.sigmoid(self.theta)
        return (p * (1 - self.target) ** 2 + (1 - p) * self.target**2).sum()

    @torch.no_grad()
    def true_gradient(self) -> dict[str, torch.Tensor]:
        """The closed-form gradient `sigmoid'(a) (1 - 2t)` of `E[L]` by parameter name."""
        p = torch.sigmoid(self.theta)
        return {"theta": p * (1 - p) * (1 - 2 * self.target)}
