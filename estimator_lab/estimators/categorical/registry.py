"""Registry of categorical-gate estimators, by the plain names of their Bernoulli namesakes.

A categorical estimator is registered here, not in `estimator_lab.estimators.registry`, so the
Bernoulli registry (and every study, check and test that iterates over it) is unchanged. The
same name can mean a Bernoulli and a categorical estimator (`reinforce`, `st`, ...): which one a
graph gets is decided by the graph's `distribution` (`estimator_for`).
"""

from __future__ import annotations

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.registry import EstimatorRegistry, get_estimator

_CATEGORICAL = EstimatorRegistry("categorical", "categorical")
register_categorical_estimator = _CATEGORICAL.register
available_categorical = _CATEGORICAL.available
get_categorical_estimator = _CATEGORICAL.get


def estimator_for(name: str, distribution: str, **hyper) -> GradientEstimator:
    """The estimator `name` for a graph whose gates have `distribution`.

    Bernoulli graphs (and any distribution but `"categorical"` and `"topk"`) get
    `get_estimator(name)`, exactly as before; categorical graphs get the categorical estimator
    of that name, top-k graphs the top-k one (`estimators.topk`).

    Example:
        >>> estimator_for("reinforce", "categorical").distribution
        'categorical'
        >>> estimator_for("reinforce", "topk").distribution
        'topk'
        >>> estimator_for("reinforce", "bernoulli").distribution
        'bernoulli'
    """
    if distribution == "categorical":
        return get_categorical_estimator(name, **hyper)
    if distribution == "topk":
        from estimator_lab.estimators.topk import get_topk_estimator

        return get_topk_estimator(name, **hyper)
    return get_estimator(name, **hyper)
