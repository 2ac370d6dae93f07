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

Modules, one job each (every name is importable from here):
    - `moving_baselines`: the `Baseline` protocol, `RatioState`, `MovingRatioBaseline`,
      `EmaBaseline`, `OptimalBaseline`.
    - `oracle_baseline`: Eq. 10's expectations (`OracleValues`, `oracle_baseline_values`,
      `prepared_oracle_values`) and the fixed `OracleBaseline` (`ConstantState`).
    - `reinforce_baseline`: the estimators, `ReinforceWithBaseline`, `with_baseline`,
      `ReinforceEma`, `ReinforceOptimal`, `ReinforceOracle`.

References:
    Williams (1992); Weaver and Tao (2001); Bengio, Léonard, Courville (2013), Corollary 1 and
    Eq. 10.
"""

from estimator_lab.estimators.moving_baselines import (
    Baseline,
    EmaBaseline,
    MovingRatioBaseline,
    OptimalBaseline,
    RatioState,
    safe_ratio,
)
from estimator_lab.estimators.oracle_baseline import (
    ConstantState,
    OracleBaseline,
    OracleValues,
    oracle_baseline_values,
    prepared_oracle_values,
)
from estimator_lab.estimators.reinforce_baseline import (
    ReinforceEma,
    ReinforceOptimal,
    ReinforceOracle,
    ReinforceWithBaseline,
    with_baseline,
)

__all__ = [
    "Baseline",
    "ConstantState",
    "EmaBaseline",
    "MovingRatioBaseline",
    "OptimalBaseline",
    "OracleBaseline",
    "OracleValues",
    "RatioState",
    "ReinforceEma",
    "ReinforceOptimal",
    "ReinforceOracle",
    "ReinforceWithBaseline",
    "oracle_baseline_values",
    "prepared_oracle_values",
    "safe_ratio",
    "with_baseline",
]
