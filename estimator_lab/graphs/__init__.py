"""Models with stochastic gates."""

from estimator_lab.graphs.base import PreparedBatch, StochasticGraph
from estimator_lab.graphs.conditional import ConditionalConfig, ConditionalNetwork

__all__ = ["ConditionalConfig", "ConditionalNetwork", "PreparedBatch", "StochasticGraph"]
