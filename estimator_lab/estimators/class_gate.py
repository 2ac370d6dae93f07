"""What the estimators of gates over `K` classes (categorical, top-k) share: the noise layout
and the graph check."""

from __future__ import annotations

from typing import ClassVar

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph
from estimator_lab.graphs.categorical import gate_distribution


class ClassGateEstimator(GradientEstimator):
    """Base of the estimators for gates over `K` classes (categorical, top-k).

    One draw reads `B x N x K` uniforms by default, `K` per gate (Gumbel noise); estimators
    with several gate samples put them in front. A graph whose gates are not the estimator's
    `distribution` is refused (`require_gates`).

    Attributes:
        gate_label: how messages name the gates (`"categorical"`, `"top-k"`).
    """

    gate_label: ClassVar[str] = ""

    def check_graph(self, graph: StochasticGraph) -> None:
        require_gates(graph, self, self.distribution, self.gate_label)

    def noise_shape(self, graph: StochasticGraph, prepared: PreparedBatch) -> tuple[int, ...]:
        """`B x N x K`: one uniform per class of every gate."""
        self.check_graph(graph)
        return tuple(prepared.logits.shape)


def require_gates(
    graph: StochasticGraph, estimator: GradientEstimator, distribution: str, label: str
) -> None:
    """Raises `ValueError` when `graph`'s gates are not `distribution` (`label` in the message)."""
    found = gate_distribution(graph)
    if found != distribution:
        raise ValueError(f"estimator {estimator.name!r} needs {label} gates; "
                         f"{type(graph).__name__} has {found} gates")
