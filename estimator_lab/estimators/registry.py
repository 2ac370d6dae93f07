"""Registries of estimators by name (`EstimatorRegistry`), with plugin discovery through entry
points for the Bernoulli one (`register_estimator`, `get_estimator`, `available`).

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


class EstimatorRegistry:
    """Estimator classes by name, for one gate distribution.

    Args:
        distribution: the `distribution` flag every registered class must have, or `None` for
            the Bernoulli registry, which takes any `GradientEstimator` (its classes include the
            STS, noisy-rectifier and Concrete gates).
        label: how messages name its estimators (`"categorical"`, `"top-k"`; `""` for the
            Bernoulli registry).
        entry_point_group: the entry-point group plugins are loaded from (`None`: none).

    Example:
        >>> registry = EstimatorRegistry("categorical", "categorical")
        >>> registry.available()
        []
    """

    def __init__(
        self,
        distribution: str | None = None,
        label: str = "",
        entry_point_group: str | None = None,
    ) -> None:
        self.distribution = distribution
        self.label = label
        self.entry_point_group = entry_point_group
        self._classes: dict[str, type[GradientEstimator]] = {}

    def register(self, name: str) -> Callable[[type[GradientEstimator]], type[GradientEstimator]]:
        """Class decorator that registers an estimator under `name` and sets its `name` flag.

        Raises:
            TypeError: for a class that is not a `GradientEstimator` (of the registry's
                `distribution`, where it has one).
            ValueError: if `name` is taken by another class.
        """

        def decorate(cls: type[GradientEstimator]) -> type[GradientEstimator]:
            if self.distribution is None:
                need = "subclass GradientEstimator"
            else:
                need = f"be a GradientEstimator with distribution = {self.distribution!r}"
            if not issubclass(cls, GradientEstimator) or (
                self.distribution is not None and cls.distribution != self.distribution
            ):
                raise TypeError(f"{cls.__name__} must {need}")
            known = self._classes.get(name)
            if known is not None and known is not cls:
                kind = f"{self.label} estimator" if self.label else "estimator"
                raise ValueError(f"{kind} name {name!r} is taken by {known.__qualname__}")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorate

    def _load_plugins(self) -> None:
        if self.entry_point_group is None:
            return
        for entry in entry_points(group=self.entry_point_group):
            if entry.name not in self._classes:
                self.register(entry.name)(entry.load())

    def available(self) -> list[str]:
        """Sorted names of the registered (built-in and plugin) estimators."""
        self._load_plugins()
        return sorted(self._classes)

    def get(self, name: str, **hyper) -> GradientEstimator:
        """A new estimator by registry name, built with its hyper-parameters.

        Raises:
            KeyError: for an unknown name, listing the closest registered names.
        """
        if name not in self._classes:
            self._load_plugins()
        if name not in self._classes:
            close = difflib.get_close_matches(name, list(self._classes), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            names = ", ".join(self.available())
            if self.label:
                raise KeyError(f"no {self.label} estimator {name!r}{hint} ({self.label}: {names})")
            raise KeyError(f"unknown estimator {name!r}{hint} (available: {names})")
        return self._classes[name](**hyper)


_BERNOULLI = EstimatorRegistry(entry_point_group=ENTRY_POINT_GROUP)
register_estimator = _BERNOULLI.register
available = _BERNOULLI.available
get_estimator = _BERNOULLI.get


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
