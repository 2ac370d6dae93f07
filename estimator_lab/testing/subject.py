"""The estimator under test (`Subject`) and the settings of one `check_estimator` call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.graphs.base import StochasticGraph

Batch = tuple[torch.Tensor, ...]
EstimatorFactory = Callable[[StochasticGraph, Batch], GradientEstimator]
"""Builds the estimator for a graph and batch (e.g. `reinforce-oracle` with that batch's
per-example values)."""


@dataclass(frozen=True)
class Settings:
    """The arguments of one `check_estimator` call, checked (`dtypes` floating, `devices` as
    `torch.device`s)."""

    dtypes: tuple[torch.dtype, ...]
    devices: tuple[torch.device, ...]
    num_draws: int
    alpha: float
    seed: int

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the checks that need one: float64 when asked for, else the first."""
        return torch.float64 if torch.float64 in self.dtypes else self.dtypes[0]


class Subject:
    """The estimator under test: an instance, or a factory for graph-dependent estimators."""

    def __init__(self, estimator: GradientEstimator | EstimatorFactory) -> None:
        if isinstance(estimator, GradientEstimator):
            self.instance, self.factory = estimator, None
        elif callable(estimator):
            self.instance, self.factory = None, estimator
        else:
            raise TypeError(
                f"check_estimator needs a GradientEstimator instance or a factory "
                f"(graph, batch) -> GradientEstimator, got {estimator!r}"
            )

    def build(self, graph: StochasticGraph, batch: Batch) -> GradientEstimator:
        """The instance, or the factory's estimator for `graph` and `batch`."""
        if self.instance is not None:
            return self.instance
        estimator = self.factory(graph, batch)
        if not isinstance(estimator, GradientEstimator):
            raise TypeError(f"the factory returned {estimator!r}, not a GradientEstimator")
        return estimator

    def label(self) -> str:
        """How the report names the estimator: its name and `repr`, or the factory's name."""
        if self.instance is not None:
            name = getattr(self.instance, "name", "")
            return f"{name!r} ({self.instance!r})" if name else repr(self.instance)
        return f"factory {getattr(self.factory, '__qualname__', repr(self.factory))}"

