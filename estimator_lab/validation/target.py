"""Resolving `estimator-lab validate TARGET` to an estimator class, and building it for a graph.

TARGET is one of:

- a registered name (`disarm`; plugins under the `estimator_lab.estimators` entry points too),
  of the Bernoulli or the categorical registry (`gst`, `indecater`);
- `package.module:Class`, imported;
- `path/to/file.py:Class`, or `path/to/file.py` holding exactly one `GradientEstimator`
  subclass defined in it, loaded from the file.

A class target is built with no arguments (give hyper-parameters defaults).

The gates a target is validated on (`Target.gates`) are those of its class: `"categorical"`
for a `distribution = "categorical"` estimator (a `CategoricalEstimator`), else `"bernoulli"`
(STS and noisy rectifiers run on Bernoulli graphs). A name in both registries (`reinforce`,
`rloo`, `st`, ...) means the Bernoulli estimator unless `gates="categorical"` asks for the
categorical one (`estimator-lab validate reinforce --gates categorical`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from estimator_lab.estimators import available, get_estimator
from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.categorical import (
    available_categorical,
    get_categorical_estimator,
)
from estimator_lab.estimators.prepare import prepare_estimator, warmed_up_state
from estimator_lab.graphs.base import StochasticGraph


@dataclass(frozen=True)
class Target:
    """The estimator under validation.

    Attributes:
        label: TARGET as given (the name in tables and commands).
        cls: its class.
        registry_name: the registry name when TARGET named one (built by `prepare_estimator`,
            so batch-dependent estimators such as `reinforce-oracle` get their values; the
            registry is the one of `gates`).
    """

    label: str
    cls: type[GradientEstimator]
    registry_name: str | None = None

    def build(
        self, graph: StochasticGraph, batch: tuple[torch.Tensor, ...], *, warmup_steps: int = 0,
        seed: int = 0,
    ) -> tuple[GradientEstimator, Any]:
        """The estimator for `graph` and `batch` and its state after `warmup_steps` updates.

        Warm-up noise comes from the stream `warmed_up_state` uses, apart from measured draws.
        """
        if self.registry_name is not None:
            return prepare_estimator(self.registry_name, graph, batch,
                                     warmup_steps=warmup_steps, seed=seed)
        estimator = self.cls()
        return estimator, warmed_up_state(estimator, graph, batch, warmup_steps=warmup_steps,
                                          seed=seed)

    @property
    def gates(self) -> str:
        """`"categorical"` for a categorical-gate estimator, else `"bernoulli"`: the gates of
        the graphs it is validated on (`GATES`)."""
        return "categorical" if self.cls.distribution == "categorical" else "bernoulli"

    def factory(self, graph: StochasticGraph, batch: tuple[torch.Tensor, ...]):
        """`(graph, batch) -> estimator`, the form `check_estimator` takes."""
        return self.build(graph, batch)[0]

    def probe(self) -> GradientEstimator:
        """An instance for reading flags (registry names built by name alone)."""
        if self.registry_name is None:
            return self.cls()
        build = get_categorical_estimator if self.gates == "categorical" else get_estimator
        return build(self.registry_name)


GATES = ("bernoulli", "categorical")
"""The gates a target can be validated on (`Target.gates`, `resolve_target(gates=...)`)."""


def resolve_target(target: str, gates: str | None = None) -> Target:
    """The `Target` for a registered name, `module:Class`, or `file.py[:Class]`.

    Args:
        target: TARGET (module docstring).
        gates: `"bernoulli"` or `"categorical"` (`GATES`) picks the registry a name is looked
            up in; `None` (default) takes the Bernoulli registry, and the categorical one for
            a name only it holds (`indecater`, `gst`). For a class, a `gates` other than its
            own is an error.

    Raises:
        ValueError: a one-line reason when TARGET cannot be resolved (unknown name with the
            closest names, missing file or module, no or several estimator classes, a class
            that is not a `GradientEstimator` or cannot be built without arguments, a class
            whose gates are not `gates`).
    """
    if gates is not None and gates not in GATES:
        raise ValueError(f"gates must be one of {', '.join(GATES)}, got {gates!r}")
    path, sep, attribute = target.rpartition(":")
    if not sep:
        path, attribute = target, ""
    if path.endswith(".py"):
        cls = _from_file(Path(path), attribute, target)
        label = f"{Path(path).name}:{cls.__name__}"
    elif sep and path:
        cls = _from_module(path, attribute, target)
        label = target
    else:
        return _from_registry(target, gates)
    _check_buildable(cls, target)
    resolved = Target(label, cls)
    if gates is not None and resolved.gates != gates:
        raise ValueError(f"{target!r} is an estimator for {resolved.gates} gates "
                         f"(distribution {cls.distribution!r}), not {gates}")
    return resolved


def _from_registry(name: str, gates: str | None) -> Target:
    """The registered estimator `name` of the registry `gates` picks (`resolve_target`)."""
    if gates is None:
        gates = ("categorical" if name not in available() and name in available_categorical()
                 else "bernoulli")
    build = get_categorical_estimator if gates == "categorical" else get_estimator
    try:
        estimator = build(name)
    except KeyError as error:
        raise ValueError(
            f"{error.args[0]}; or give module:Class or path/to/file.py[:Class]"
        ) from None
    return Target(name, type(estimator), registry_name=name)


def _check_buildable(cls: Any, target: str) -> None:
    if not (inspect.isclass(cls) and issubclass(cls, GradientEstimator)):
        raise ValueError(f"{target!r} is {cls!r}, not a GradientEstimator subclass")
    try:
        cls()
    except TypeError as error:
        raise ValueError(f"{target!r}: {cls.__name__}() cannot be built without arguments "
                         f"({error}); give its hyper-parameters defaults") from None


def _from_module(module: str, attribute: str, target: str) -> type:
    try:
        loaded = importlib.import_module(module)
    except ImportError as error:
        raise ValueError(f"cannot import module {module!r} of {target!r}: {error}") from None
    if not hasattr(loaded, attribute):
        raise ValueError(f"module {module!r} has no attribute {attribute!r}; its estimator "
                         f"classes: {', '.join(_classes_in(loaded)) or 'none'}")
    return getattr(loaded, attribute)


def _from_file(path: Path, attribute: str, target: str) -> type:
    if not path.is_file():
        raise ValueError(f"no such file {str(path)!r} (from {target!r})")
    name = f"estimator_lab_validate_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise ValueError(f"importing {str(path)!r} raised {type(error).__name__}: "
                         f"{error}") from None
    if attribute:
        if not hasattr(module, attribute):
            raise ValueError(f"{str(path)!r} has no attribute {attribute!r}; its estimator "
                             f"classes: {', '.join(_classes_in(module)) or 'none'}")
        return getattr(module, attribute)
    found = _classes_in(module)
    if len(found) != 1:
        what = f"{len(found)} ({', '.join(found)})" if found else "none"
        raise ValueError(f"{str(path)!r} defines {what} GradientEstimator subclasses; name one "
                         f"as {path}:Class")
    return getattr(module, found[0])


def _classes_in(module) -> list[str]:
    """Names of the `GradientEstimator` subclasses defined (not imported) in `module`."""
    return [
        name for name, value in vars(module).items()
        if inspect.isclass(value) and issubclass(value, GradientEstimator)
        and value.__module__ == module.__name__
    ]
