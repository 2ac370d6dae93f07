"""Paper Eq. 10 from its expectations: `OracleValues`, `oracle_baseline_values` (exact by
enumeration, or from a seeded Monte Carlo pilot) and the fixed `OracleBaseline` they give.

`c_ji = E[(b_ji - p_ji)^2 L_j] / E[(b_ji - p_ji)^2]` per example `j` and gate `i`, or pooled
over the batch; `ReinforceOracle` (`estimators.baselines`) centres REINFORCE by it.

References:
    Weaver and Tao (2001); Bengio, Léonard, Courville (2013), Eq. 10.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field

import torch

from estimator_lab.configurations import (
    DEFAULT_MAX_CONFIGURATIONS,
    EnumerationTooLarge,
    check_enumerable,
    iter_configuration_chunks,
)
from estimator_lab.estimators.base import hard_bernoulli, trace_log_prob
from estimator_lab.estimators.moving_baselines import Baseline, safe_ratio
from estimator_lab.graphs.base import GateTrace, PreparedBatch, StochasticGraph
from estimator_lab.noise import uniform_noise


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
        return safe_ratio(self.numerator, self.denominator)

    @property
    def pooled(self) -> torch.Tensor:
        """`c_i`, a `G` tensor: Eq. 10 pooled over the batch (see `OptimalBaseline`)."""
        return safe_ratio(self.numerator.sum(0), self.denominator.sum(0))


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
    return prepared_oracle_values(graph, graph.prepare(batch), method=method,
                                  num_pilot_draws=num_pilot_draws, seed=seed,
                                  max_configurations=max_configurations, chunk_size=chunk_size)


@torch.no_grad()
def prepared_oracle_values(
    graph: StochasticGraph,
    prepared: PreparedBatch,
    *,
    method: str = "auto",
    num_pilot_draws: int = 100_000,
    seed: int | None = None,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    chunk_size: int = 4096,
) -> OracleValues:
    """`oracle_baseline_values` for a prepared batch (`ReinforceOracle.init`'s): the same
    arguments, with `prepared = graph.prepare(batch)` for the batch."""
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


def _shape_of_values(values: torch.Tensor) -> str:
    """How `OracleBaseline`'s repr shows its values: by their shape."""
    return f"values of shape {tuple(values.shape)}"


@dataclass(eq=False, repr=False)
class OracleBaseline(Baseline):
    """A fixed baseline: Eq. 10 from exact expectations or a pilot, or any constant values.

    Args:
        values: an `OracleValues` (from `oracle_baseline_values`), or a tensor of baseline
            values that broadcasts against the `B x G` gates; held as the detached tensor of
            baseline values.
        pooled: with `OracleValues`, use the `G` pooled values (shared by the examples, valid
            for any batch of the graph's gates) instead of the `B x G` per-example values
            (valid only for the batch they were computed on).
    """

    values: OracleValues | torch.Tensor = field(metadata={"repr": _shape_of_values})
    pooled: InitVar[bool] = field(default=False, kw_only=True)

    def __post_init__(self, pooled: bool) -> None:
        values = self.values
        if isinstance(values, OracleValues):
            values = values.pooled if pooled else values.per_example
        elif pooled:
            raise ValueError("pooled=True needs OracleValues, not a tensor of baseline values")
        self.values = values.detach()

    def init(self, graph: StochasticGraph) -> ConstantState:
        return ConstantState(self.values)

    def value(self, state: ConstantState) -> torch.Tensor:
        return state.baseline
