"""The battery's optional binary-VAE check on a few loss evaluations (real MNIST, seconds)."""

import pytest
import torch

from estimator_lab.validation import binary_vae_check as check
from estimator_lab.validation.budget import BUDGETS
from estimator_lab.validation.target import resolve_target


@pytest.fixture
def small(monkeypatch, mnist_env):
    """Smaller evaluation sets, so the check runs in seconds."""
    for name, value in {"TEST_EXAMPLES": 40, "TEST_SAMPLES": 5, "VARIANCE_DRAWS": 20,
                        "VARIANCE_GROUPS": 4}.items():
        monkeypatch.setattr(check, name, value)


def run(target: str, evaluations: int):
    return check.binary_vae_check(resolve_target(target), BUDGETS["quick"], seed=0,
                                  device=torch.device("cpu"), evaluations=evaluations)


def test_target_against_disarm_and_rloo_at_equal_evaluations(small):
    verdict, table = run("ugc", 6)
    assert verdict.status == "info", verdict.line
    assert table["estimator"].tolist() == ["ugc", "disarm", "rloo"]
    assert table.set_index("estimator")["steps"].to_dict() == {"ugc": 2, "disarm": 3, "rloo": 3}
    assert (table["test_bound"] >= table["test_elbo"]).all()
    assert "x DisARM's [" in verdict.line and "rank" in verdict.line
    ratio, low, high = verdict.details["variance_ratio_to_disarm"]
    assert 0 < low <= ratio <= high


def test_disarm_itself_has_no_ratio_and_skips_are_explained(small):
    verdict, table = run("disarm", 4)
    assert verdict.status == "info" and "DisARM's" not in verdict.line
    assert table["estimator"].tolist() == ["disarm", "rloo"]
    verdict, table = run("arm", 0)
    assert verdict.status == "skip" and table is None
    verdict, table = run("sts", 4)
    assert verdict.status == "skip" and "'sts'" in verdict.line
