"""Registry of estimators by name, with plugin discovery through entry points.

Plugins register a `GradientEstimator` subclass under the `estimator_lab.estimators` entry-point
group (`name = "package.module:Class"`) or call `register_estimator(name)` at import time.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from importlib.metadata import entry_points

from estimator_lab.estimators.base import GradientEstimator

ENTRY_POINT_GROUP = "estimator_lab.estimators"
_REGISTRY: dict[str, type[GradientEstimator]] = {}


def register_estimator(
    name: str,
) -> Callable[[type[GradientEstimator]], type[GradientEstimator]]:
    """Class decorator that registers an estimator under `name` and sets its `name` flag.

    Raises:
        ValueError: if `name` is taken by another class.
    """

    def decorate(cls: type[GradientEstimator]) -> type[GradientEstimator]:
        if not issubclass(cls, GradientEstimator):
            raise TypeError(f"{cls.__name__} must subclass GradientEstimator")
        known = _REGISTRY.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"estimator name {name!r} is taken by {known.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_plugins() -> None:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _REGISTRY:
            register_estimator(entry.name)(entry.load())


def available() -> list[str]:
    """Sorted names of the built-in and plugin estimators."""
    _load_plugins()
    return sorted(_REGISTRY)


def get_estimator(name: str, **hyper) -> GradientEstimator:
    """A new estimator by registry name, built with its hyper-parameters.

    Raises:
        KeyError: for an unknown name, listing the closest registered names.
    """
    if name not in _REGISTRY:
        _load_plugins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown estimator {name!r}{hint} (available: {', '.join(available())})")
    return _REGISTRY[name](**hyper)


_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:$")
"""A Google docstring section header (`Args:`, `References:`, ...)."""


def describe(cls: type[GradientEstimator]) -> tuple[str, str]:
    """An estimator class's one-line description and its reference, from its docstring.

    The description is the docstring's first paragraph on one line; the reference is its
    `References:` section on one line, taken from the nearest class of the MRO that has one
    (so a variant inherits its family's), or `""` where none has.

    Example:
        >>> from estimator_lab.estimators import get_estimator
        >>> describe(type(get_estimator("reinforce")))[1]
        'Williams (1992); Bengio, Léonard, Courville (2013), Theorem 1.'
    """
    description = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
    for klass in cls.__mro__:
        lines = inspect.cleandoc(klass.__dict__.get("__doc__") or "").splitlines()
        if "References:" in lines:
            section = []
            for line in lines[lines.index("References:") + 1:]:
                if _SECTION.match(line):
                    break
                section.append(line)
            return description, " ".join(" ".join(section).split())
    return description, ""
