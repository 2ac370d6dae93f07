"""The categorical estimator contract: every categorical estimator passes it, and it catches a
planted bug (a wrong softmax Jacobian) in an estimator that claims to be unbiased."""

import pytest
import torch

from estimator_lab.estimators.categorical import available_categorical, get_categorical_estimator
from estimator_lab.estimators.categorical.base import require_categorical
from estimator_lab.estimators.categorical.indecater import IndeCateR
from estimator_lab.graphs.categorical import categorical_gates
from estimator_lab.testing.categorical_contract import (
    CATEGORICAL_CHECKS,
    check_categorical_estimator,
)


class _IndeCateRWithDiagonalJacobian(IndeCateR):
    """IndeCateR with the planted bug: `p = exp(theta) / stopgrad(sum exp(theta))`, so the
    backward uses `diag(p)` where the softmax Jacobian is `diag(p) - p p^T`. Its draw is
    `diag(p_i) L_i`, biased by `-p_i (p_i . L_i)`, while it keeps `is_unbiased = True`.
    Everything else (the graph check included) is IndeCateR's, so only this bug can fail."""

    name = "planted-indecater-diagonal-jacobian"

    def surrogate(self, graph, prepared, noise, state):
        require_categorical(graph, self)
        logits = prepared.logits
        gates = categorical_gates(logits, noise)
        per_class = graph.category_losses(prepared, gates).detach()
        probs = logits.exp() / logits.exp().sum(-1, keepdim=True).detach()
        exact_part = ((probs - probs.detach()) * per_class).sum((-2, -1))
        return (graph.loss(prepared, gates) + exact_part).mean()


class _IndeCateRWithoutGraphCheck(IndeCateR):
    """IndeCateR that forgets `require_categorical`: a Bernoulli graph then fails with an
    AttributeError deep inside (no `category_losses`), which the shapes check must report."""

    name = "planted-indecater-no-graph-check"

    def surrogate(self, graph, prepared, noise, state):
        gates = categorical_gates(prepared.logits, noise)
        per_class = graph.category_losses(prepared, gates).detach()
        probs = torch.softmax(prepared.logits, -1)
        exact_part = ((probs - probs.detach()) * per_class).sum((-2, -1))
        return (graph.loss(prepared, gates) + exact_part).mean()


@pytest.mark.statistical
@pytest.mark.parametrize("name", available_categorical())
def test_every_categorical_estimator_passes_the_contract(name):
    # The Monte Carlo part fails a correct unbiased estimator with probability <= 1e-3 (Holm).
    report = check_categorical_estimator(get_categorical_estimator(name))
    report.raise_if_failed()
    assert [r.name for r in report] == list(CATEGORICAL_CHECKS)


def test_the_contract_catches_a_wrong_softmax_jacobian():
    report = check_categorical_estimator(_IndeCateRWithDiagonalJacobian())
    assert [r.name for r in report.failures] == ["unbiasedness"]
    message = report["unbiasedness"].message
    assert "claims is_unbiased=True" in message and "exact relative bias" in message
    assert report["unbiasedness"].details["relative_exact_bias"] > 0.01


def test_the_correct_estimator_passes_where_the_planted_one_fails():
    report = check_categorical_estimator(IndeCateR(), checks=["unbiasedness"])
    assert report.passed
    assert report["unbiasedness"].details["relative_exact_bias"] < 1e-12


def test_a_bernoulli_estimator_fails_the_categorical_contract():
    from estimator_lab.estimators import get_estimator

    report = check_categorical_estimator(get_estimator("reinforce"), checks=["flags", "shapes"])
    assert not report["flags"].passed and "distribution must be 'categorical'" in (
        report["flags"].message)
    assert not report["shapes"].passed


def test_the_contract_names_an_accidental_refusal_of_a_bernoulli_graph():
    report = check_categorical_estimator(_IndeCateRWithoutGraphCheck(), checks=["shapes"])
    assert not report["shapes"].passed
    message = report["shapes"].message
    assert "a Bernoulli graph raised AttributeError" in message and "require_categorical" in message


def test_unknown_checks_are_refused():
    with pytest.raises(ValueError, match="unknown checks"):
        check_categorical_estimator(IndeCateR(), checks=["speed"])
