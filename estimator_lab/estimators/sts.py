"""Stochastic Times Smooth (STS) units, paper section 2.2, Eq. 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from estimator_lab.estimators.base import GateEstimator
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import StochasticGraph


def sts_gates(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """STS gate values `h = b sqrt(p)` with `b = 1[u < sqrt(p)]`, `p = sigmoid(a)`.

    `sqrt(p)` is computed as `exp(logsigmoid(a) / 2)`, whose derivative
    `sqrt(p) (1 - p) / 2` stays finite where `p` underflows; `b` carries no gradient, so the
    gradient reaches `a` through `sqrt(p)` only, with `b` held fixed.

    Args:
        logits: gate logits `a` (any shape).
        noise: uniforms on `[0, 1)`, broadcastable to `logits`.

    Returns:
        `h`, in `{0, sqrt(p)}`, shaped like `logits` and `noise` broadcast.

    Example:
        >>> sts_gates(torch.zeros(2), torch.tensor([0.5, 0.9]))  # sqrt(1/2) = 0.7071
        tensor([0.7071, 0.0000])
    """
    root = torch.exp(0.5 * F.logsigmoid(logits))
    return (noise < root.detach()).to(logits.dtype) * root


@register_estimator("sts")
class StochasticTimesSmooth(GateEstimator):
    """The STS unit `h = b sqrt(p)`, `b ~ Bernoulli(sqrt(p))`, trained by backpropagation.

    The gate distribution is the STS one (`distribution = "sts"`): `h` takes the values
    `sqrt(p)` with probability `sqrt(p)` and `0` otherwise, so `E[h] = p` and
    `P(h > 0) = sqrt(p)` (paper Proposition 2). The surrogate is the mean loss at the sampled
    gate values; its gradient is the backpropagation through `sqrt(p)` with `b` held fixed,
    `g_a = b dL/dh (h) d sqrt(p)/da`. That is biased even for the STS objective: per gate,
    `d/da E[L(h)] = d sqrt(p)/da [sqrt(p) L'(sqrt(p)) + L(sqrt(p)) - L(0)]`, and the draw only
    has the first term. The missing part, `d sqrt(p)/da (L(sqrt(p)) - L(0))`, is the
    expectation of the score-function term `L(h) d/da log P(b)` that a pathwise estimate
    ignores (`tests/estimators/test_sts.py` checks this identity by enumeration). The paper
    adds Beta noise to the smooth factor while training; that is not part of this estimator.

    Gates are drawn from `u < sqrt(p)`, not `u < p`: under common random numbers the on-gates
    of STS are a superset of the Bernoulli gates `1[u < p]`, so `discrete_noise` is False
    (the threshold is not `p`).

    Example:
        >>> from estimator_lab.graphs.toy import ToyGraph
        >>> toy = ToyGraph([0.0], target=0.45)  # u = 0.5 < sqrt(p): h = sqrt(1/2)
        >>> s = StochasticTimesSmooth().surrogate(
        ...     toy, toy.prepare(toy.example_batch()), torch.tensor([[0.5]]), None)
        >>> torch.autograd.grad(s, toy.theta)[0]  # 2 (h - t) sqrt(p) (1 - p) / 2
        tensor([0.0909], dtype=torch.float64)

    References:
        Bengio, Léonard, Courville (2013), section 2.2, Eq. 2 and Proposition 2.
    """

    is_unbiased = False
    distribution = "sts"
    multilayer = True

    def quadrature_breakpoints(self, logits: torch.Tensor) -> torch.Tensor:
        """The gate switches at `u = sqrt(p)`."""
        return torch.sigmoid(logits).sqrt().unsqueeze(0)

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        return sts_gates(logits, noise)
