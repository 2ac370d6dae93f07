"""Straight-through estimators, paper section 4, Eq. 13.

Both forward the hard gate `b = 1[u < sigmoid(a)]` and differ only in the backward rule: `st`
uses `dL/da := dL/db`, `st-sigmoid` multiplies it by `sigmoid'(a)`. On one gate layer with a
loss that is monotone in each gate value `h_i` on `[0, 1]` (the sign of `dL/dh_i` does not
depend on `h`), every draw has the sign of the exact gradient
`sigmoid'(a_i) E[L(b; b_i = 1) - L(b; b_i = 0)]` (paper section 4). Without monotonicity, or
through several gate layers, the sign can be wrong (`tests/estimators/test_straight_through.py`
shows both).
"""

from __future__ import annotations

import torch

from estimator_lab.estimators.base import GateEstimator, bernoulli_gates
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import StochasticGraph


class HardForward(GateEstimator):
    """Base of the estimators that forward the hard gate `b = 1[u < sigmoid(a)]` and differ
    only in the backward rule: the gate is `b + backward(a, b)`, a term whose value is zero
    and whose derivative with respect to `a` is the rule. Biased; they depend on the noise only
    through `b`.
    """

    is_unbiased = False
    multilayer = True
    discrete_noise = True

    def backward(self, logits: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The zero-valued term added to the hard `gates`, differentiable in `logits`."""
        raise NotImplementedError

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        gates = bernoulli_gates(logits.detach(), noise)
        return gates + self.backward(logits, gates)


@register_estimator("st")
class StraightThrough(HardForward):
    """Forward the hard gate `b = 1[u < sigmoid(a)]`; backward `dL/da := dL/db` (biased).

    The gate enters the loss as `b + (a - stopgrad(a))`, whose value is exactly `b` and whose
    derivative with respect to `a` is one. The paper found this variant (without the sigmoid
    derivative) trained best.

    References:
        Hinton (2012), lecture 15b; Bengio, Léonard, Courville (2013), Eq. 13.
    """

    def backward(self, logits: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return logits - logits.detach()


@register_estimator("st-sigmoid")
class StraightThroughSigmoid(HardForward):
    """Forward the hard gate `b = 1[u < p]`, `p = sigmoid(a)`; backward
    `dL/da := dL/db sigmoid'(a)` (biased).

    The gate enters the loss as `b + (p - stopgrad(p))`: its value is exactly `b` (the same
    gates as `st` and `reinforce` under the same noise) and its derivative is
    `sigmoid'(a) = p (1 - p)`. It is "backprop as if `h = p`": on one gate layer its mean is
    `p_i (1 - p_i) E[dL/dh_i (b)]`, while the exact gradient is
    `p_i (1 - p_i) E[L(b; b_i = 1) - L(b; b_i = 0)]`. The two agree when `L` is affine in each
    gate value (`dL/dh_i` constant in `h_i`), e.g. a linear loss, and differ otherwise: for
    `L = (h - t)^2` the mean is `sigmoid'(a) 2 (p - t)` against `sigmoid'(a) (1 - 2 t)`.

    Example:
        >>> from estimator_lab.graphs.toy import ToyGraph
        >>> toy = ToyGraph([0.0], target=0.45)  # dL/dh at b = 1 is 2 (1 - t) = 1.1
        >>> prepared = toy.prepare(toy.example_batch())
        >>> s = StraightThroughSigmoid().surrogate(toy, prepared, torch.tensor([[0.2]]), None)
        >>> torch.autograd.grad(s, toy.theta)[0]  # 1.1 sigmoid'(0)
        tensor([0.2750], dtype=torch.float64)

    References:
        Bengio, Léonard, Courville (2013), section 4 (the variant with the sigmoid derivative).
    """

    def backward(self, logits: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        probs = torch.sigmoid(logits)
        return probs - probs.detach()
