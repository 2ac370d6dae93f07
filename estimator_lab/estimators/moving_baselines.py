"""The `Baseline` protocol and the baselines kept as moving averages (paper section 3, Eq. 10).

A `Baseline` is a triple of pure functions in the optax style: `init(graph) -> state`,
`value(state) -> c` and `update(state, losses, gates, probs) -> state` (`estimators.baselines`
has the whole family). `EmaBaseline` averages the batch-mean loss; `OptimalBaseline` estimates
Eq. 10 per gate, `c_i = E[(b_i - p_i)^2 L] / E[(b_i - p_i)^2]`, from moving averages of the
numerator and the denominator (`MovingRatioBaseline`, whose state is a `RatioState`).

References:
    Williams (1992); Weaver and Tao (2001); Bengio, Léonard, Courville (2013), Eq. 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from estimator_lab.estimators.base import declared_repr
from estimator_lab.graphs.base import StochasticGraph


class Baseline:
    """A baseline `c` for REINFORCE: state-only, so the centred estimator stays unbiased.

    Subclasses implement the three pure functions below; states are frozen dataclasses of
    detached tensors, and `update` returns a new one. Hyper-parameters are dataclass fields
    (`@dataclass(eq=False, repr=False)`), and the repr is generated from them
    (`declared_repr`): it is part of the identity of the estimator that holds the baseline.
    """

    __repr__ = declared_repr

    def init(self, graph: StochasticGraph) -> Any:
        """The initial state for `graph`."""
        raise NotImplementedError

    def value(self, state: Any) -> torch.Tensor:
        """The baseline `c`, a tensor that broadcasts against the `B x G` gates (see module)."""
        raise NotImplementedError

    def update(
        self, state: Any, losses: torch.Tensor, gates: torch.Tensor, probs: torch.Tensor
    ) -> Any:
        """The state after one draw.

        Args:
            state: the current state.
            losses: the draw's `B` per-example losses.
            gates: its `B x G` gates (every layer, concatenated).
            probs: the `B x G` probabilities `p` they were drawn with.
        """
        return state


def _float_options(graph: StochasticGraph) -> dict[str, Any]:
    """`dtype` and `device` of the graph's floating parameters, for state tensors."""
    param = next((p for p in graph.parameters() if p.is_floating_point()), None)
    if param is None:
        return {"dtype": torch.get_default_dtype()}
    return {"dtype": param.dtype, "device": param.device}


def _check_decay(decay: float) -> float:
    if not 0 <= decay < 1:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    return float(decay)


def safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """`numerator / denominator`, 0 where both are 0 (the denominator is never negative): the
    ratios of Eq. 10, here and in `OracleValues`.

    Example:
        >>> safe_ratio(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0]))
        tensor([0.5000, 0.0000])
    """
    return numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)


@dataclass(frozen=True)
class RatioState:
    """Moving averages of the numerator and denominator of a `MovingRatioBaseline`.

    Attributes:
        numerator: the moving average of the numerator: a `G` tensor of
            `mean_j (b_ji - p_ji)^2 L_j` (`OptimalBaseline`), or a 0-dim tensor of the
            batch-mean loss (`EmaBaseline`).
        denominator: the moving average of the denominator, shaped like `numerator`:
            `mean_j (b_ji - p_ji)^2`, or the constant 1 (so `1 - d^T` after `T` draws).
    """

    numerator: torch.Tensor
    denominator: torch.Tensor


# Pickled under its first home, which re-exports it: `last.pt` files of the earlier format name
# it there, and `train.trainer.LEGACY_STATE_TYPES` allows it by that name.
RatioState.__module__ = "estimator_lab.estimators.baselines"


@dataclass(eq=False, repr=False)
class MovingRatioBaseline(Baseline):
    """`c = ` the ratio of moving averages (decay `d`) of a numerator and a denominator.

    Each draw gives values `(x_t, w_t)` (`observe`); after `T` draws the state holds
    `sum_t (1 - d) d^(T - t) x_t` and `sum_t (1 - d) d^(T - t) w_t`, and `c` is their ratio
    (0 before any draw). Subclasses define `unit_shape` and `observe`.

    Args:
        decay: `d` in `[0, 1)`.
    """

    decay: float

    def __post_init__(self) -> None:
        self.decay = _check_decay(self.decay)

    def unit_shape(self, graph: StochasticGraph) -> tuple[int, ...]:
        """The shape of `c` (and of both averages) for `graph`."""
        raise NotImplementedError

    def observe(
        self, losses: torch.Tensor, gates: torch.Tensor, probs: torch.Tensor, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        """One draw's numerator and denominator values (`Baseline.update`'s arguments), in
        the dtype and on the device of `like`."""
        raise NotImplementedError

    def init(self, graph: StochasticGraph) -> RatioState:
        zero = torch.zeros(self.unit_shape(graph), **_float_options(graph))
        return RatioState(numerator=zero, denominator=zero.clone())

    def value(self, state: RatioState) -> torch.Tensor:
        return safe_ratio(state.numerator, state.denominator)

    @torch.no_grad()
    def update(self, state, losses, gates, probs) -> RatioState:
        numerator, denominator = self.observe(losses, gates, probs, state.numerator)
        d = self.decay
        return RatioState(
            numerator=d * state.numerator + (1 - d) * numerator,
            denominator=d * state.denominator + (1 - d) * denominator,
        )


@dataclass(eq=False, repr=False)
class EmaBaseline(MovingRatioBaseline):
    """`c = ` the exponential moving average of the batch-mean loss, one value for all gates.

    After `T` draws with batch-mean losses `x_1 .. x_T`, `c = sum_t d^(T-t) x_t / sum_t d^(T-t)`
    (the bias-corrected average of Adam, so the first draw is weighted fully instead of being
    shrunk towards zero): the moving average of `x_t` over that of 1. Before any draw `c = 0`
    and the estimator is plain REINFORCE. An average of i.i.d. values with variance `s^2` has
    variance `s^2 (1 - d) / (1 + d)` in the long run: an effective sample size of
    `(1 + d) / (1 - d)` draws (19 for `d = 0.9`).

    A per-gate moving average of the unweighted loss would hold the same number for every gate
    (all gates of an example see the same loss), so this baseline is a single value; per-gate
    weighting is what `OptimalBaseline` adds.

    Args:
        decay: `d` in `[0, 1)`.
    """

    decay: float = 0.9

    def unit_shape(self, graph: StochasticGraph) -> tuple[int, ...]:
        return ()

    def observe(self, losses, gates, probs, like) -> tuple[torch.Tensor, float]:
        return losses.detach().mean().to(like), 1


@dataclass(eq=False, repr=False)
class OptimalBaseline(MovingRatioBaseline):
    """Paper Eq. 10 per gate, `c_i = E[(b_i - p_i)^2 L] / E[(b_i - p_i)^2]`, by moving averages.

    A unit is a gate index `i` (every layer's gates, concatenated), shared by the examples of
    the batch: each draw adds `mean_j (b_ji - p_ji)^2 L_j` to the numerator's moving average and
    `mean_j (b_ji - p_ji)^2` to the denominator's (decay `d`), and `c_i` is their ratio. The
    common bias factor `1 - d^T` of both averages cancels in the ratio, so no correction is
    needed; before any draw `c = 0` (plain REINFORCE).

    On a fixed batch the ratio converges to the pooled Eq. 10 value
    `c_i = sum_j E[(b_ji - p_ji)^2 L_j] / sum_j E[(b_ji - p_ji)^2]`, which is the constant shared
    by the examples that minimises `sum_j Var[(b_ji - p_ji)(L_j - c_i)]`, the total variance of
    gate `i`'s logit draws over the batch (examples are independent, so variances add, and the
    paper's argument applies to the sum). Its error is about `sqrt((1 - d) / (1 + d))` times the
    standard deviation of one draw's ratio (`OracleValues.pooled` is the limit).

    Args:
        decay: `d` in `[0, 1)`; the default 0.99 (an effective 199 draws) keeps the ratio's
            relative error small where `p_i` is near 0 or 1 and the denominator is small.
    """

    decay: float = 0.99

    def unit_shape(self, graph: StochasticGraph) -> tuple[int, ...]:
        return (graph.num_gates,)

    def observe(self, losses, gates, probs, like) -> tuple[torch.Tensor, torch.Tensor]:
        """`mean_j (b_j - p_j)^2 L_j` and `mean_j (b_j - p_j)^2` over the `B` examples, for
        gates and probabilities of shape `B x unit_shape`."""
        weights = (gates - probs).detach().square().to(like)  # B x units
        per_example = losses.detach().to(weights).reshape(-1, *(1,) * (weights.dim() - 1))
        return (weights * per_example).mean(0), weights.mean(0)
