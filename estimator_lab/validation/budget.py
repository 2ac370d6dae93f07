"""Budget presets of the validation battery: how many draws, which graphs, how many steps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

NETWORK_GROUPS = 10
"""Batch-means groups of the full-network draws (intervals of variance ratios)."""


@dataclass(frozen=True)
class Budget:
    """How much work each check of the battery does.

    Attributes:
        name: the preset's name (`quick`, `standard`, `thorough`) or `custom`.
        contract_draws: Monte Carlo draws per graph of `check_estimator`'s unbiasedness check.
        draws: draws per estimator on each small graph (unbiasedness and variance).
        graphs: small-graph specs (`estimator_lab.graphs.specs`), enumerable in float64.
        group_size: draws per batch-means group (variance-ratio intervals).
        network_draws: draws per estimator on the full paper network (0 skips the check),
            in `NETWORK_GROUPS` batch-means groups.
        training_steps: SGD steps of the short training run (0 skips the check).
        binary_vae_evaluations: loss evaluations per example per estimator of the binary-VAE
            check (`binary_vae_check`; 0 skips it).
        warmup_steps: `update` calls on separate noise before an adaptive state is frozen.
        alpha: family-wise false-failure rate of each statistical check.
    """

    name: str
    contract_draws: int
    draws: int
    graphs: tuple[str, ...]
    group_size: int
    network_draws: int
    training_steps: int
    binary_vae_evaluations: int = 0
    warmup_steps: int = 200
    alpha: float = 1e-3

    def __post_init__(self) -> None:
        if self.draws < 2 * self.group_size or self.group_size < 2:
            raise ValueError(f"budget {self.name!r}: draws ({self.draws}) must be at least two "
                             f"groups of at least 2 (group_size {self.group_size})")
        if self.contract_draws < 2 or self.network_draws < 0 or self.training_steps < 0:
            raise ValueError(f"budget {self.name!r}: need contract_draws >= 2 and non-negative "
                             f"network_draws and training_steps")
        if 0 < self.network_draws < NETWORK_GROUPS * 2:
            raise ValueError(f"budget {self.name!r}: network_draws ({self.network_draws}) must "
                             f"be 0 or at least {NETWORK_GROUPS * 2}")
        if self.binary_vae_evaluations < 0:
            raise ValueError(f"budget {self.name!r}: binary_vae_evaluations must be >= 0, got "
                             f"{self.binary_vae_evaluations}")
        if not self.graphs:
            raise ValueError(f"budget {self.name!r}: name at least one small graph")
        if not 0 < self.alpha < 1:
            raise ValueError(f"budget {self.name!r}: alpha must be in (0, 1), got {self.alpha}")

    def replace(self, **changes) -> Budget:
        """A copy with some fields changed (named `custom` unless a name is given)."""
        return dataclasses.replace(self, **({"name": "custom"} | changes))


SINGLE_LAYER_GRAPHS = ("toy:n=2,t=0.45", "sbn:4,inputs=6")
"""Single-layer graphs every estimator runs on (two toy gates: quadrature for noisy rectifiers)."""

MULTILAYER_GRAPH = "sbn:3-2,inputs=4"

BUDGETS = {
    "quick": Budget("quick", contract_draws=2000, draws=4000, group_size=200,
                    graphs=(*SINGLE_LAYER_GRAPHS, MULTILAYER_GRAPH),
                    network_draws=200, training_steps=100),
    "standard": Budget("standard", contract_draws=4000, draws=20_000, group_size=500,
                       graphs=(*SINGLE_LAYER_GRAPHS, MULTILAYER_GRAPH, "toy:n=6,t=0.45",
                               "tiny-conditional:gates=6"),
                       network_draws=1000, training_steps=500),
    "thorough": Budget("thorough", contract_draws=10_000, draws=100_000, group_size=1000,
                       graphs=(*SINGLE_LAYER_GRAPHS, MULTILAYER_GRAPH, "toy:n=6,t=0.45",
                               "tiny-conditional:gates=10", "sbn:4-4-4"),
                       network_draws=4000, training_steps=2000, binary_vae_evaluations=2000),
}
"""The presets; `quick` finishes on a 2-core CPU in a few minutes."""

CATEGORICAL_GRAPHS = ("cat-toy:n=2,k=3,t=0.45", "cat-toy:n=3,k=4,t=0.3", "cat-toy:n=2,k=5,t=0.7")
"""The categorical suite every categorical target runs on: three cat-toys whose class counts,
targets and seeded logits differ (each enumerable, and so are two-sample estimators' moments)."""


def categorical_budget(budget: Budget, graphs: tuple[str, ...]) -> Budget:
    """`budget` for a categorical target: the same draws and level on the categorical `graphs`,
    and none of the Bernoulli-only checks (full network, training, binary VAE) asked for."""
    return dataclasses.replace(budget, graphs=graphs, network_draws=0, training_steps=0,
                               binary_vae_evaluations=0)


CATEGORICAL_BUDGETS = {
    "quick": categorical_budget(BUDGETS["quick"], CATEGORICAL_GRAPHS),
    "standard": categorical_budget(BUDGETS["standard"],
                                   (*CATEGORICAL_GRAPHS, "cat-toy:n=4,k=3,t=0.45")),
    "thorough": categorical_budget(BUDGETS["thorough"],
                                   (*CATEGORICAL_GRAPHS, "cat-toy:n=4,k=3,t=0.45",
                                    "cat-toy:n=3,k=6,t=0.2,batch=2")),
}
"""The presets for a categorical target (`Target.gates == "categorical"`): `BUDGETS`' draws on
the categorical suite; `quick` finishes on a 2-core CPU in seconds."""
