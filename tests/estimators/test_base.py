"""The estimator interface: hyper-parameters declared as dataclass fields, the repr generated
from them (`declared_repr`), and one cost method (`evaluations`)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import pytest

from estimator_lab.estimators import available, get_estimator
from estimator_lab.estimators.base import UNNAMED, GradientEstimator, declared_repr
from estimator_lab.estimators.baselines import Baseline
from estimator_lab.estimators.categorical import available_categorical, get_categorical_estimator
from estimator_lab.estimators.topk import available_topk, get_topk_estimator
from estimator_lab.graphs.specs import build_problem

REGISTRIES = {
    "bernoulli": (available, get_estimator),
    "categorical": (available_categorical, get_categorical_estimator),
    "topk": (available_topk, get_topk_estimator),
}

GRAPHS = {"bernoulli": "sbn:3-2,inputs=4,batch=2", "categorical": "cat-toy:n=3,k=4",
          "topk": "topk-toy:n=2,classes=4,k=2"}
"""A small graph of each registry's gates."""

PER_GRAPH = {("bernoulli", "local-expectation"), ("bernoulli", "muprop"),
             ("categorical", "indecater"), ("categorical", "local-expectation")}
"""The estimators whose cost depends on the graph."""


def registered() -> list[tuple[str, str]]:
    return [(registry, name) for registry, (names, _) in REGISTRIES.items() for name in names()]


def build(registry: str, name: str) -> GradientEstimator:
    return REGISTRIES[registry][1](name)


@pytest.mark.parametrize(("registry", "name"), registered(), ids="/".join)
def test_the_repr_is_generated_from_the_declared_fields(registry, name):
    cls = type(build(registry, name))
    for klass in cls.__mro__:
        if klass not in (GradientEstimator, Baseline, object):
            assert "__repr__" not in vars(klass), f"{klass.__qualname__} writes its own repr"
    assert cls.__repr__ is declared_repr


@pytest.mark.parametrize(("registry", "name"), registered(), ids="/".join)
def test_every_hyper_parameter_is_a_declared_field(registry, name):
    """What the registry passes as `**hyper` is exactly the dataclass's init fields (InitVars
    included), so nothing is stored beside the declaration."""
    cls = type(build(registry, name))
    declared = {f.name for f in getattr(cls, "__dataclass_fields__", {}).values() if f.init}
    assert set(inspect.signature(cls).parameters) == declared


def test_derived_attributes_stay_out_of_the_repr():
    estimator = get_categorical_estimator("reinforce-optimal", decay=0)
    assert estimator.baseline.decay == estimator.decay == 0.0
    assert repr(estimator) == "CategoricalReinforceOptimal(decay=0.0)"


def test_estimators_compare_and_hash_by_identity():
    first, second = get_estimator("rloo"), get_estimator("rloo")
    assert first != second and repr(first) == repr(second)
    assert len({first, second}) == 2


def test_validation_runs_after_the_fields_are_set():
    with pytest.raises(ValueError, match=r"^temperature must be > 0, got 0$"):
        get_estimator("gumbel", temperature=0)
    with pytest.raises(ValueError, match=r"^need hidden >= 1 and learning_rate > 0, got 0, "):
        get_estimator("relax", hidden=0)
    with pytest.raises(ValueError, match=r"^decay must be in \[0, 1\), got 1$"):
        get_estimator("reinforce-ema", decay=1)


def test_unnamed_fields_and_non_dataclasses():
    @dataclass(eq=False, repr=False)
    class Wrapper(GradientEstimator):
        inner: object = field(default=None, metadata=UNNAMED)
        scale: float = 1.0

    class Plain(GradientEstimator):
        pass

    assert repr(Wrapper(Plain(), 2.0)) == "Wrapper(Plain(), scale=2.0)"


@pytest.mark.parametrize(("registry", "name"), registered(), ids="/".join)
def test_one_cost_method(registry, name):
    """`evaluations()` is `None` exactly where the cost depends on the graph, and otherwise
    the cost on any graph."""
    estimator = build(registry, name)
    graph = build_problem(GRAPHS[registry]).graph
    cost = estimator.evaluations(graph)
    assert isinstance(cost, int) and cost >= 1
    assert not hasattr(estimator, "evaluations_per_draw")
    if (registry, name) in PER_GRAPH:
        assert estimator.evaluations() is None
    else:
        assert estimator.evaluations() == cost
