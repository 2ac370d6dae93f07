"""REINFORCE centred by a `Baseline` (paper Corollary 1): `ReinforceWithBaseline`,
`with_baseline`, and the registered `reinforce-ema`, `reinforce-optimal` and `reinforce-oracle`.

The surrogate is `mean_j [L_j + sum_i stopgrad(L_j - c_ji) log P(b_ji | a_ji)]` over every gate
of every layer; the baseline `c` depends on the state only, so the estimator stays unbiased
whatever the state (`estimators.baselines` has the whole family).

References:
    Williams (1992); Bengio, Léonard, Courville (2013), Corollary 1 and Eq. 10.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Any

import torch

from estimator_lab.estimators.base import (
    UNNAMED,
    GradientEstimator,
    bernoulli_log_prob,
    hard_bernoulli,
)
from estimator_lab.estimators.moving_baselines import Baseline, EmaBaseline, OptimalBaseline
from estimator_lab.estimators.oracle_baseline import (
    ConstantState,
    OracleBaseline,
    OracleValues,
    prepared_oracle_values,
)
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.estimators.reinforce import Reinforce
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


@dataclass(eq=False, repr=False)
class ReinforceWithBaseline(GradientEstimator):
    """REINFORCE centred by a `Baseline`: `g_{a_ji} = (L_j - c_ji) (b_ji - p_ji) / B`.

    The surrogate is `mean_j [L_j + sum_i stopgrad(L_j - c_ji) log P(b_ji | a_ji)]` over every
    gate of every layer; parameters the loss touches directly get the pathwise gradient at the
    sampled gates, as in `Reinforce`. `update` draws the gates of its noise and passes the
    losses, gates and probabilities to the baseline's `update`.

    Args:
        baseline: the `Baseline`; the repr shows it alone (`ReinforceWithBaseline(EmaBaseline(
            decay=0.9))`).

    Example:
        >>> from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork
        >>> config = ConditionalConfig(num_inputs=8, num_gater_hidden=4, num_gates=3)
        >>> net = ConditionalNetwork(config, torch.Generator().manual_seed(0))
        >>> prepared = net.prepare((torch.rand(2, 8), torch.tensor([0, 1])))
        >>> est = with_baseline(Reinforce(), EmaBaseline(decay=0.9))
        >>> state = est.update(est.init(net), net, prepared, torch.rand(2, 3))
        >>> est.surrogate(net, prepared, torch.rand(2, 3), state).shape
        torch.Size([])
    """

    is_unbiased = True
    multilayer = True
    discrete_noise = True

    baseline: Baseline = field(metadata=UNNAMED)

    def init(self, graph: StochasticGraph) -> Any:
        return self.baseline.init(graph)

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        trace = graph.sample(prepared, noise, hard_bernoulli)
        losses = trace.losses
        log_prob = bernoulli_log_prob(trace.all_logits, trace.all_gates)  # B x G
        baseline = self.baseline_value(state).detach()
        if torch.broadcast_shapes(baseline.shape, log_prob.shape) != log_prob.shape:
            raise ValueError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast against the "
                f"{tuple(log_prob.shape)} gates (B x G) of this batch"
            )
        weights = losses.detach().unsqueeze(-1) - baseline
        return (losses + (weights * log_prob).sum(-1)).mean()

    def baseline_value(self, state: Any) -> torch.Tensor:
        """`c` in `state`: `self.baseline.value(state)`."""
        return self.baseline.value(state)

    @torch.no_grad()
    def update(
        self, state: Any, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor
    ) -> Any:
        trace = graph.sample(prepared, noise, hard_bernoulli)
        return self.baseline.update(
            state, trace.losses, trace.all_gates, torch.sigmoid(trace.all_logits)
        )


def with_baseline(estimator: GradientEstimator, baseline: Baseline) -> ReinforceWithBaseline:
    """REINFORCE (`estimator`, a `Reinforce`) centred by `baseline`.

    Raises:
        TypeError: for an estimator other than `Reinforce`: only the plain score function has a
            single score term to centre.
    """
    if type(estimator) is not Reinforce:
        raise TypeError(f"with_baseline centres plain REINFORCE, got {estimator!r}")
    return ReinforceWithBaseline(baseline)


@register_estimator("reinforce-ema")
@dataclass(eq=False, repr=False)
class ReinforceEma(ReinforceWithBaseline):
    """REINFORCE centred by the moving average of the loss (`EmaBaseline`).

    Args:
        decay: the moving average's decay (held by the baseline).
    """

    baseline: EmaBaseline = field(init=False, metadata=UNNAMED)
    decay: InitVar[float] = 0.9

    def __post_init__(self, decay: float) -> None:
        self.baseline = EmaBaseline(decay)


@register_estimator("reinforce-optimal")
@dataclass(eq=False, repr=False)
class ReinforceOptimal(ReinforceWithBaseline):
    """REINFORCE centred by paper Eq. 10 per gate, from moving averages (`OptimalBaseline`).

    Args:
        decay: the decay of the numerator's and denominator's moving averages (held by the
            baseline).
    """

    baseline: OptimalBaseline = field(init=False, metadata=UNNAMED)
    decay: InitVar[float] = 0.99

    def __post_init__(self, decay: float) -> None:
        self.baseline = OptimalBaseline(decay)


@register_estimator("reinforce-oracle")
@dataclass(eq=False, repr=False)
class ReinforceOracle(ReinforceWithBaseline):
    """REINFORCE centred by paper Eq. 10 from exact expectations (`OracleBaseline`).

    Built without values, `init(graph, prepared, seed=seed)` computes them from the batch:
    Eq. 10 pooled over the batch (one value per gate, as a running Eq. 10 estimates them), by
    enumeration when the graph is small enough and otherwise from a pilot of 100,000 draws
    from `uniform_noise(seed, ...)` (`oracle_baseline_values`). Values can also be passed in,
    `get_estimator("reinforce-oracle", values=oracle_baseline_values(graph, batch))`, and
    then `init` uses them whatever the batch.

    Args:
        values: an `OracleValues` or a tensor of baseline values (see `OracleBaseline`), held
            by the baseline (`None`, the default: no baseline until `init`).
        pooled: with `values`, use the pooled `G` values instead of the per-example `B x G`
            values (values computed by `init` are always pooled).
    """

    batch_state = True

    baseline: OracleBaseline | None = field(init=False, metadata=UNNAMED)
    values: InitVar[OracleValues | torch.Tensor | None] = None
    pooled: InitVar[bool] = field(default=False, kw_only=True)

    def __post_init__(self, values: OracleValues | torch.Tensor | None, pooled: bool) -> None:
        self.baseline = None if values is None else OracleBaseline(values, pooled=pooled)

    def init(
        self,
        graph: StochasticGraph,
        prepared: PreparedBatch | None = None,
        *,
        seed: int | None = None,
    ) -> ConstantState:
        if self.baseline is not None:
            return super().init(graph)
        if prepared is None:
            raise ValueError(
                "reinforce-oracle computes its baseline values from the batch: "
                "init(graph, graph.prepare(batch), seed=seed), or pass them in, "
                "get_estimator('reinforce-oracle', values=oracle_baseline_values(graph, batch))"
            )
        values = prepared_oracle_values(graph, prepared, seed=seed)
        return OracleBaseline(values, pooled=True).init(graph)

    def baseline_value(self, state: ConstantState) -> torch.Tensor:
        return state.baseline

    def update(
        self, state: ConstantState, graph: StochasticGraph, prepared: PreparedBatch,
        noise: torch.Tensor,
    ) -> ConstantState:
        return state
