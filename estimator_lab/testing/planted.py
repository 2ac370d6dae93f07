"""Deliberately broken estimators, to prove that the unbiasedness checks catch real bugs.

Each class plants one bug of a kind seen in practice into a correct estimator and keeps its
flags (so it claims `is_unbiased`, as a buggy implementation would). None is registered in the
global registry: a check under test is handed the instance directly, e.g.
`run_draws(graph, {"planted": FlippedSignDisARM()}, batch, ...)`.
"""

from __future__ import annotations

from typing import Any

import torch

from estimator_lab.estimators.arm import DisARM
from estimator_lab.estimators.base import bernoulli_log_prob, hard_bernoulli
from estimator_lab.estimators.rebar import Rebar
from estimator_lab.estimators.reinforce import Reinforce
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


class FlippedSignDisARM(DisARM):
    """DisARM with the sign of the antithetic term flipped.

    The planted bug: the gate-logit factor uses `(-1)^{b_i}` where DisARM has `(-1)^{b~_i}`
    (equivalently, the antithetic difference enters as `L(b~) - L(b)` instead of
    `L(b) - L(b~)`). Where `b_i != b~_i` the two signs are opposite, and elsewhere the factor is
    zero, so every gate-logit draw is exactly the negative of DisARM's under the same noise:
    the mean is `-grad` on the gate logits and on the parameters behind them (bias `-2 grad`),
    while the pathwise gradients of the parameters the loss touches directly stay correct.
    """

    name = "planted-flipped-sign-disarm"

    def weights(
        self, logits: torch.Tensor, noise: torch.Tensor, gates: torch.Tensor
    ) -> torch.Tensor:
        return -super().weights(logits, noise, gates)


class RebarWithoutConditionalNoisePath(Rebar):
    """REBAR without the gradient path through the conditional noise `z~ | b`.

    The planted bug: `z~ = a + logit(u~(a, b, v))` is computed from detached logits, so the
    control variate's dependence on the logits through `z~` is dropped and the term
    `-eta d/da L(s(z~))` vanishes. The score term still subtracts `eta L(s(z~)) (b - theta)`,
    so the correction no longer has mean zero: the bias is
    `eta E[d/da L(s(z~(a, b, v)))]` with `b` and `v` held fixed (the derivative of `z~` in `a`
    is positive, `dz~/dtheta = v / ((1 - theta + v theta)(1 - theta))` for `b = 1`, so the bias
    is generically non-zero).
    """

    name = "planted-rebar-without-conditional-noise-path"

    def conditional_noise(
        self, logits: torch.Tensor, gates: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        return super().conditional_noise(logits.detach(), gates, v)


class ReinforceWithSampledGateBaseline(Reinforce):
    """REINFORCE whose baseline depends on the sampled gate: `c_ji = L_j(b) b_ji`.

    The planted bug: a baseline must not depend on the gate it centres, but here it is computed
    from the draw's own gates, so `E[(b_i - p_i) c_i] != 0`: with `c_i = L b_i` the gate-logit
    draw is `L (1 - b_i)(b_i - p_i) / B = -L (1 - b_i) p_i / B`, whose mean is
    `-p_i (1 - p_i) E[L | b_i = 0] / B` instead of `p_i (1 - p_i) (E[L | b_i = 1] - E[L | b_i = 0])
    / B` (a bias of `-p_i (1 - p_i) E[L | b_i = 1] / B`, non-zero for a positive loss).
    """

    name = "planted-reinforce-with-sampled-gate-baseline"

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        trace = graph.sample(prepared, noise, hard_bernoulli)
        losses, gates = trace.losses, trace.all_gates
        baseline = losses.detach().unsqueeze(-1) * gates  # B x G: reads the sampled gates
        weights = losses.detach().unsqueeze(-1) - baseline
        log_prob = bernoulli_log_prob(trace.all_logits, gates)
        return (losses + (weights * log_prob).sum(-1)).mean()
