"""Resolving TARGET: registry names, module:Class, file paths, and one-line errors."""

from pathlib import Path

import pytest

from estimator_lab.estimators.arm import DisARM
from estimator_lab.testing.planted import FlippedSignDisARM
from estimator_lab.validation import resolve_target

EXAMPLE = Path(__file__).parents[2] / "examples" / "learned_baseline.py"


def test_registered_name():
    target = resolve_target("disarm")
    assert target.cls is DisARM and target.registry_name == "disarm"


def test_module_and_class():
    target = resolve_target("estimator_lab.testing.planted:FlippedSignDisARM")
    assert target.cls is FlippedSignDisARM and target.registry_name is None


def test_file_with_one_estimator_class():
    target = resolve_target(str(EXAMPLE))
    assert target.cls.__name__ == "ReinforceLearnedBaseline"
    assert target.label == "learned_baseline.py:ReinforceLearnedBaseline"
    assert resolve_target(f"{EXAMPLE}:ReinforceLearnedBaseline").cls.__name__ == target.cls.__name__


@pytest.mark.parametrize("target, message", [
    ("disarmm", "unknown estimator 'disarmm'; did you mean disarm"),
    ("estimator_lab.no_such_module:X", "cannot import module 'estimator_lab.no_such_module'"),
    ("estimator_lab.testing.planted:Nope", "has no attribute 'Nope'; its estimator classes: "),
    ("estimator_lab.testing.planted:torch", "not a GradientEstimator subclass"),
    ("missing/file.py", "no such file 'missing/file.py'"),
])
def test_bad_targets_say_why_in_one_line(target, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")) as error:
        resolve_target(target)
    assert "\n" not in str(error.value)


def test_file_with_several_classes_asks_for_one(tmp_path):
    path = tmp_path / "two.py"
    path.write_text("from estimator_lab.estimators.reinforce import Reinforce\n"
                    "class A(Reinforce):\n    pass\nclass B(Reinforce):\n    pass\n")
    with pytest.raises(ValueError, match=r"defines 2 \(A, B\) GradientEstimator subclasses"):
        resolve_target(str(path))


def test_class_needing_arguments_is_refused(tmp_path):
    path = tmp_path / "needs.py"
    path.write_text("from estimator_lab.estimators.reinforce import Reinforce\n"
                    "class Needs(Reinforce):\n    def __init__(self, x):\n        pass\n")
    with pytest.raises(ValueError, match=r"Needs\(\) cannot be built without arguments"):
        resolve_target(str(path))
