"""Deliberately broken estimators, to prove that the unbiasedness checks catch real bugs.

Each class plants one bug of a kind seen in practice into a correct estimator and keeps its
flags (so it claims `is_unbiased`, as a buggy implementation would). None is registered in the
global registry: a check under test is handed the instance directly, e.g.
`run_draws(graph, {"planted": FlippedSignDisARM()}, batch, ...)`.
"""

from __future__ import annotations

import torch

from estimator_lab.estimators.arm import DisARM
from estimator_lab.estimators.rebar import Rebar


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
