"""Gradient estimators behind one interface, and their registry.

Importing this package imports every module in it, which registers the built-in estimators.
"""

import importlib
import pkgutil

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.registry import available, get_estimator, register_estimator

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["GradientEstimator", "available", "get_estimator", "register_estimator"]
