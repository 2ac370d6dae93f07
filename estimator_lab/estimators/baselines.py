"""Baselines for REINFORCE as composable objects with explicit state (paper section 3, Eq. 10).

A `Baseline` is a triple of pure functions in the optax style: `init(graph) -> state`,
`value(state) -> c` and `update(state, losses, gates, probs) -> state`. `with_baseline`
combines one with REINFORCE into a `GradientEstimator` whose surrogate is

    mean_j [ L_j + sum_i stopgrad(L_j - c_ji) log P(b_ji | a_ji) ],

the sum running over every gate of every layer, so the draw on the gate logits is
`(L_j - c_ji) (b_ji - p_ji) / B` (paper, Corollary 1). The baseline `c` is a function of the
state only, never of the current draw's gates, so `E[(b_ji - p_ji) c_ji] = 0` and the estimator
stays unbiased whatever the state; the engine freezes the state while it measures variance and
only `GradientEstimator.update` (never `surrogate`) advances it.

Units are indexed by gate: `c` broadcasts against the `B x G` gates (all layers concatenated in
layer order), so a baseline returns a 0-dim tensor (one value), a `G` tensor (one per gate,
shared by the examples of a batch), a `B x 1` tensor (one per example) or a `B x G` tensor.

Baselines:
    - `EmaBaseline`: an exponential moving average of the batch-mean loss (one value).
    - `OptimalBaseline`: Eq. 10, `c_i = E[(b_i - p_i)^2 L] / E[(b_i - p_i)^2]`, from moving
      averages of the numerator and the denominator per gate, as the paper proposes.
    - `OracleBaseline`: Eq. 10 from supplied expectations (`oracle_baseline_values`: exact by
      enumeration, or from a seeded Monte Carlo pilot).

References:
    Williams (1992); Weaver and Tao (2001); Bengio, Léonard, Courville (2013), Corollary 1 and
    Eq. 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from estimator_lab.configurations import (
    DEFAULT_MAX_CONFIGURATIONS,
    EnumerationTooLarge,
    check_enumerable,
    iter_configuration_chunks,
)
from estimator_lab.estimators.base import (
    GradientEstimator,
    bernoulli_log_prob,
    hard_bernoulli,
    trace_log_prob,
)
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.estimators.reinforce import Reinforce
from estimator_lab.graphs.base import GateTrace, PreparedBatch, StochasticGraph
from estimator_lab.noise import uniform_noise


class Baseline:
    """A baseline `c` for REINFORCE: state-only, so the centred estimator stays unbiased.

    Subclasses implement the three pure functions below; states are frozen dataclasses of
    detached tensors, and `update` returns a new one.
    """

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


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """`numerator / denominator`, 0 where both are 0 (the denominator is never negative)."""
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


class MovingRatioBaseline(Baseline):
    """`c = ` the ratio of moving averages (decay `d`) of a numerator and a denominator.

    Each draw gives values `(x_t, w_t)` (`observe`); after `T` draws the state holds
    `sum_t (1 - d) d^(T - t) x_t` and `sum_t (1 - d) d^(T - t) w_t`, and `c` is their ratio
    (0 before any draw). Subclasses define `unit_shape` and `observe`.

    Args:
        decay: `d` in `[0, 1)`.
    """

    def __init__(self, decay: float) -> None:
        self.decay = _check_decay(decay)

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
        return _ratio(state.numerator, state.denominator)

    @torch.no_grad()
    def update(self, state, losses, gates, probs) -> RatioState:
        numerator, denominator = self.observe(losses, gates, probs, state.numerator)
        d = self.decay
        return RatioState(
            numerator=d * state.numerator + (1 - d) * numerator,
            denominator=d * state.denominator + (1 - d) * denominator,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(decay={self.decay})"


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

    def __init__(self, decay: float = 0.9) -> None:
        super().__init__(decay)

    def unit_shape(self, graph: StochasticGraph) -> tuple[int, ...]:
        return ()

    def observe(self, losses, gates, probs, like) -> tuple[torch.Tensor, float]:
        return losses.detach().mean().to(like), 1


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

    def __init__(self, decay: float = 0.99) -> None:
        super().__init__(decay)

    def unit_shape(self, graph: StochasticGraph) -> tuple[int, ...]:
        return (graph.num_gates,)

    def observe(self, losses, gates, probs, like) -> tuple[torch.Tensor, torch.Tensor]:
        """`mean_j (b_j - p_j)^2 L_j` and `mean_j (b_j - p_j)^2` over the `B` examples, for
        gates and probabilities of shape `B x unit_shape`."""
        weights = (gates - probs).detach().square().to(like)  # B x units
        per_example = losses.detach().to(weights).reshape(-1, *(1,) * (weights.dim() - 1))
        return (weights * per_example).mean(0), weights.mean(0)


@dataclass(frozen=True)
class OracleValues:
    """The expectations of Eq. 10 per example and gate.

    Attributes:
        numerator: a `B x G` tensor, `E[(b_ji - p_ji)^2 L_j]`.
        denominator: a `B x G` tensor, `E[(b_ji - p_ji)^2]`.
        method: `"enumeration"` (exact) or `"pilot"` (Monte Carlo).
        num_draws: the pilot's draws (0 for enumeration).
    """

    numerator: torch.Tensor
    denominator: torch.Tensor
    method: str
    num_draws: int = 0

    @property
    def per_example(self) -> torch.Tensor:
        """`c_ji`, a `B x G` tensor: Eq. 10 for each example's own gates (0 where `p` is
        exactly 0 or 1: the gate never varies and its score term is zero anyway)."""
        return _ratio(self.numerator, self.denominator)

    @property
    def pooled(self) -> torch.Tensor:
        """`c_i`, a `G` tensor: Eq. 10 pooled over the batch (see `OptimalBaseline`)."""
        return _ratio(self.numerator.sum(0), self.denominator.sum(0))


@torch.no_grad()
def oracle_baseline_values(
    graph: StochasticGraph,
    batch: tuple[torch.Tensor, ...],
    *,
    method: str = "auto",
    num_pilot_draws: int = 100_000,
    seed: int | None = None,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    chunk_size: int = 4096,
) -> OracleValues:
    """`E[(b_ji - p_ji)^2 L_j]` and `E[(b_ji - p_ji)^2]` for every example `j` and gate `i`.

    With `method="enumeration"` the expectations are exact sums over the `2^G` configurations of
    one example's gates (every layer: on a multi-layer graph `p_ji` is the probability given the
    configuration's upstream gates). With `method="pilot"` they are averages over
    `num_pilot_draws` Monte Carlo draws from `uniform_noise(seed, ...)`. `"auto"` enumerates
    when `2^G <= max_configurations` and otherwise runs the pilot.

    Per-example values are a legitimate baseline: `c_ji` is an expectation over example `j`'s
    gates, not a function of the gates `b_j` of the draw it centres.

    Args:
        graph: the model (run in float64 for reference values).
        batch: the minibatch of `B` examples.
        method: `"auto"`, `"enumeration"` or `"pilot"`.
        num_pilot_draws: Monte Carlo draws of the pilot.
        seed: the pilot's noise seed (required when the pilot runs).
        max_configurations: the enumeration guard.
        chunk_size: configurations (or pilot draws) evaluated at once.

    Returns:
        an `OracleValues`.

    Raises:
        EnumerationTooLarge: for `method="enumeration"` on a graph too large to enumerate.
        ValueError: for an unknown method, or a pilot without a seed.

    Example:
        >>> from estimator_lab.graphs.sbn import SigmoidBeliefNet
        >>> net = SigmoidBeliefNet(3, (2, 2), torch.Generator().manual_seed(0)).double()
        >>> values = oracle_baseline_values(net, (torch.ones(1, 3, dtype=torch.float64),))
        >>> values.method, tuple(values.per_example.shape)
        ('enumeration', (1, 4))
    """
    return _oracle_values(graph, graph.prepare(batch), method=method,
                          num_pilot_draws=num_pilot_draws, seed=seed,
                          max_configurations=max_configurations, chunk_size=chunk_size)


@torch.no_grad()
def _oracle_values(
    graph: StochasticGraph,
    prepared: PreparedBatch,
    *,
    method: str = "auto",
    num_pilot_draws: int = 100_000,
    seed: int | None = None,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    chunk_size: int = 4096,
) -> OracleValues:
    """`oracle_baseline_values` for a prepared batch (`ReinforceOracle.init`'s)."""
    if method not in ("auto", "enumeration", "pilot"):
        raise ValueError(f"method must be 'auto', 'enumeration' or 'pilot', got {method!r}")
    if method == "auto":
        try:
            check_enumerable(graph.num_gates, max_configurations)
            method = "enumeration"
        except EnumerationTooLarge:
            method = "pilot"
    options = {"dtype": prepared.logits.dtype, "device": prepared.logits.device}
    numerator = torch.zeros(prepared.batch_size, graph.num_gates, **options)
    denominator = torch.zeros_like(numerator)
    if method == "enumeration":
        check_enumerable(graph.num_gates, max_configurations)
        for chunk in iter_configuration_chunks(graph.num_gates, chunk_size, **options):
            configs = chunk.unsqueeze(1).expand(-1, prepared.batch_size, -1)  # C x B x G
            trace = graph.sample(prepared, configs, _given_gates)
            weight = trace_log_prob(trace).exp()  # C x B
            numerator += _weighted_sum(trace, weight * trace.losses)
            denominator += _weighted_sum(trace, weight)
        return OracleValues(numerator, denominator, "enumeration")
    if seed is None:
        raise ValueError("the Monte Carlo pilot needs an explicit seed")
    if num_pilot_draws < 1:
        raise ValueError(f"num_pilot_draws must be >= 1, got {num_pilot_draws}")
    shape = (prepared.batch_size, graph.num_gates)
    for start in range(0, num_pilot_draws, chunk_size):
        indices = range(start, min(start + chunk_size, num_pilot_draws))
        trace = graph.sample(prepared, uniform_noise(seed, indices, shape, **options),
                             hard_bernoulli)
        weight = torch.full(trace.losses.shape, 1 / num_pilot_draws, **options)
        numerator += _weighted_sum(trace, weight * trace.losses)
        denominator += _weighted_sum(trace, weight)
    return OracleValues(numerator, denominator, "pilot", num_pilot_draws)


def _given_gates(layer: int, logits: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Gate function that passes explicit configurations through `graph.sample`."""
    return gates


def _weighted_sum(trace: GateTrace, weight: torch.Tensor) -> torch.Tensor:
    """`sum_c weight_cj (b_cji - p_cji)^2`, a `B x G` tensor, for `C x B` weights."""
    spread = (trace.all_gates - torch.sigmoid(trace.all_logits)).square()
    return (weight.unsqueeze(-1) * spread).sum(0)


@dataclass(frozen=True)
class ConstantState:
    """The fixed values of an `OracleBaseline`: `baseline` broadcasts against `B x G`."""

    baseline: torch.Tensor


class OracleBaseline(Baseline):
    """A fixed baseline: Eq. 10 from exact expectations or a pilot, or any constant values.

    Args:
        values: an `OracleValues` (from `oracle_baseline_values`), or a tensor of baseline
            values that broadcasts against the `B x G` gates.
        pooled: with `OracleValues`, use the `G` pooled values (shared by the examples, valid
            for any batch of the graph's gates) instead of the `B x G` per-example values
            (valid only for the batch they were computed on).
    """

    def __init__(self, values: OracleValues | torch.Tensor, *, pooled: bool = False) -> None:
        if isinstance(values, OracleValues):
            values = values.pooled if pooled else values.per_example
        elif pooled:
            raise ValueError("pooled=True needs OracleValues, not a tensor of baseline values")
        self.values = values.detach()

    def init(self, graph: StochasticGraph) -> ConstantState:
        return ConstantState(self.values)

    def value(self, state: ConstantState) -> torch.Tensor:
        return state.baseline

    def __repr__(self) -> str:
        return f"OracleBaseline(values of shape {tuple(self.values.shape)})"


class ReinforceWithBaseline(GradientEstimator):
    """REINFORCE centred by a `Baseline`: `g_{a_ji} = (L_j - c_ji) (b_ji - p_ji) / B`.

    The surrogate is `mean_j [L_j + sum_i stopgrad(L_j - c_ji) log P(b_ji | a_ji)]` over every
    gate of every layer; parameters the loss touches directly get the pathwise gradient at the
    sampled gates, as in `Reinforce`. `update` draws the gates of its noise and passes the
    losses, gates and probabilities to the baseline's `update`.

    Args:
        baseline: the `Baseline`.

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

    def __init__(self, baseline: Baseline) -> None:
        self.baseline = baseline

    def init(
        self,
        graph: StochasticGraph,
        prepared: PreparedBatch | None = None,
        *,
        seed: int | None = None,
    ) -> Any:
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.baseline!r})"


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
class ReinforceEma(ReinforceWithBaseline):
    """REINFORCE centred by the moving average of the loss (`EmaBaseline`).

    Args:
        decay: the moving average's decay.
    """

    def __init__(self, decay: float = 0.9) -> None:
        super().__init__(EmaBaseline(decay))


@register_estimator("reinforce-optimal")
class ReinforceOptimal(ReinforceWithBaseline):
    """REINFORCE centred by paper Eq. 10 per gate, from moving averages (`OptimalBaseline`).

    Args:
        decay: the decay of the numerator's and denominator's moving averages.
    """

    def __init__(self, decay: float = 0.99) -> None:
        super().__init__(OptimalBaseline(decay))


@register_estimator("reinforce-oracle")
class ReinforceOracle(ReinforceWithBaseline):
    """REINFORCE centred by paper Eq. 10 from exact expectations (`OracleBaseline`).

    Built without values, `init(graph, prepared, seed=seed)` computes them from the batch:
    Eq. 10 pooled over the batch (one value per gate, as a running Eq. 10 estimates them), by
    enumeration when the graph is small enough and otherwise from a pilot of 100,000 draws
    from `uniform_noise(seed, ...)` (`oracle_baseline_values`). Values can also be passed in,
    `get_estimator("reinforce-oracle", values=oracle_baseline_values(graph, batch))`, and
    then `init` uses them whatever the batch.

    Args:
        values: an `OracleValues` or a tensor of baseline values (see `OracleBaseline`).
        pooled: with `values`, use the pooled `G` values instead of the per-example `B x G`
            values (values computed by `init` are always pooled).
    """

    batch_state = True

    def __init__(
        self, values: OracleValues | torch.Tensor | None = None, *, pooled: bool = False
    ) -> None:
        super().__init__(None if values is None else OracleBaseline(values, pooled=pooled))

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
        values = _oracle_values(graph, prepared, seed=seed)
        return OracleBaseline(values, pooled=True).init(graph)

    def baseline_value(self, state: ConstantState) -> torch.Tensor:
        return state.baseline

    def update(
        self, state: ConstantState, graph: StochasticGraph, prepared: PreparedBatch,
        noise: torch.Tensor,
    ) -> ConstantState:
        return state
