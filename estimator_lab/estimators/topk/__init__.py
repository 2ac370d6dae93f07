"""Estimators for top-k gates (`distribution = "topk"`), in their own registry.

The categorical registry only takes `distribution = "categorical"` classes, so top-k
estimators are registered here (`get_topk_estimator`, `available_topk`); importing this
package imports its modules, which register them. Neither the Bernoulli nor the categorical
registry changes.
"""

from estimator_lab.estimators.topk import (  # noqa: F401  (registers the estimators)
    relaxation,
    score_function,
)
from estimator_lab.estimators.topk.registry import (
    TopKEstimator,
    available_topk,
    get_topk_estimator,
    register_topk_estimator,
    require_topk,
)

__all__ = [
    "TopKEstimator",
    "available_topk",
    "get_topk_estimator",
    "register_topk_estimator",
    "require_topk",
]
