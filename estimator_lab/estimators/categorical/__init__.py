"""Estimators for categorical gates (`distribution = "categorical"`), by plain names.

Importing this package imports its modules, which register the estimators in the categorical
registry (`get_categorical_estimator`, `estimator_for`); the Bernoulli registry is unchanged.
"""

from estimator_lab.estimators.categorical import (  # noqa: F401  (registers the estimators)
    gumbel,
    indecater,
    reinforce,
    reinmax,
    rloo,
    straight_through,
)
from estimator_lab.estimators.categorical.base import CategoricalEstimator
from estimator_lab.estimators.categorical.registry import (
    available_categorical,
    estimator_for,
    get_categorical_estimator,
    register_categorical_estimator,
)

__all__ = [
    "CategoricalEstimator",
    "available_categorical",
    "estimator_for",
    "get_categorical_estimator",
    "register_categorical_estimator",
]
