"""Registry of categorical-gate estimators, by the plain names of their Bernoulli namesakes.

A categorical estimator is registered here, not in `estimator_lab.estimators.registry`, so the
Bernoulli registry (and every study, check and test that iterates over it) is unchanged. The
same name can mean a Bernoulli and a categorical estimator (`reinforce`, `st`, ...): which one a
graph gets is decided by the graph's `distribution` (`estimator_for`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.registry import get_estimator

_CATEGORICAL: dict[str, type[GradientEstimator]] = {}


def register_categorical_estimator(
    name: str,
) -> Callable[[type[GradientEstimator]], type[GradientEstimator]]:
    """Class decorator: registers a `distribution = "categorical"` estimator under `name`.

    Raises:
        TypeError: for a class that is not a categorical `GradientEstimator`.
        ValueError: if `name` is taken by another class.
    """

    def decorate(cls: type[GradientEstimator]) -> type[GradientEstimator]:
        if not issubclass(cls, GradientEstimator) or cls.distribution != "categorical":
            raise TypeError(f"{cls.__name__} must be a GradientEstimator with "
                            f"distribution = 'categorical'")
        known = _CATEGORICAL.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"categorical estimator name {name!r} is taken by "
                             f"{known.__qualname__}")
        cls.name = name
        _CATEGORICAL[name] = cls
        return cls

    return decorate


def available_categorical() -> list[str]:
    """Sorted names of the categorical estimators."""
    return sorted(_CATEGORICAL)


def get_categorical_estimator(name: str, **hyper) -> GradientEstimator:
    """A new categorical estimator by name, built with its hyper-parameters.

    Raises:
        KeyError: for an unknown name, listing the closest registered names.
    """
    if name not in _CATEGORICAL:
        close = difflib.get_close_matches(name, list(_CATEGORICAL), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no categorical estimator {name!r}{hint} "
                       f"(categorical: {', '.join(available_categorical())})")
    return _CATEGORICAL[name](**hyper)


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
