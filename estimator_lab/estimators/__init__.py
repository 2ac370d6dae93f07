"""Gradient estimators behind one interface, and their registry.

Importing this package registers the built-in estimators.
"""

from estimator_lab.estimators import local_expectation, reinforce, straight_through  # noqa: F401
from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.registry import available, get_estimator, register_estimator

__all__ = ["GradientEstimator", "available", "get_estimator", "register_estimator"]
