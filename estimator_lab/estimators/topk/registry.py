"""The base class, graph check and registry of top-k-gate estimators."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import ClassVar

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph
from estimator_lab.graphs.categorical import gate_distribution


class TopKEstimator(GradientEstimator):
    """Base of the estimators for `TopKGraph`s (`distribution = "topk"`).

    One draw reads `B x N x K` uniforms by default, `K` per gate (the Gumbel-top-k noise of
    `topk_gates`); estimators with several gate samples put them in front.
    """

    distribution: ClassVar[str] = "topk"

    def noise_shape(self, graph: StochasticGraph, prepared: PreparedBatch) -> tuple[int, ...]:
        """`B x N x K`: one uniform per class of every gate."""
        require_topk(graph, self)
        return tuple(prepared.logits.shape)


def require_topk(graph: StochasticGraph, estimator: GradientEstimator) -> None:
    """Raises `ValueError` when a top-k estimator meets a graph of other gates."""
    distribution = gate_distribution(graph)
    if distribution != "topk":
        raise ValueError(f"estimator {estimator.name!r} needs top-k gates; "
                         f"{type(graph).__name__} has {distribution} gates")


_TOPK: dict[str, type[GradientEstimator]] = {}


def register_topk_estimator(
    name: str,
) -> Callable[[type[GradientEstimator]], type[GradientEstimator]]:
    """Class decorator: registers a `distribution = "topk"` estimator under `name`.

    Raises:
        TypeError: for a class that is not a top-k `GradientEstimator`.
        ValueError: if `name` is taken by another class.
    """

    def decorate(cls: type[GradientEstimator]) -> type[GradientEstimator]:
        if not issubclass(cls, GradientEstimator) or cls.distribution != "topk":
            raise TypeError(f"{cls.__name__} must be a GradientEstimator with "
                            f"distribution = 'topk'")
        known = _TOPK.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"top-k estimator name {name!r} is taken by {known.__qualname__}")
        cls.name = name
        _TOPK[name] = cls
        return cls

    return decorate


def available_topk() -> list[str]:
    """Sorted names of the top-k estimators."""
    return sorted(_TOPK)


def get_topk_estimator(name: str, **hyper) -> GradientEstimator:
    """A new top-k estimator by name, built with its hyper-parameters.

    Raises:
        KeyError: for an unknown name, listing the closest registered names.

    Example:
        >>> import estimator_lab.estimators.topk
        >>> get_topk_estimator("rloo", num_samples=3).num_samples
        3
    """
    if name not in _TOPK:
        close = difflib.get_close_matches(name, list(_TOPK), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no top-k estimator {name!r}{hint} (top-k: {', '.join(available_topk())})")
    return _TOPK[name](**hyper)
