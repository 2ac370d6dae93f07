"""The validation battery: planted bugs caught with messages that say what is wrong, correct
and biased estimators judged right, the report card and the command line.

Note [false-failure rates]: the seeds are fixed. Each statistical check controls its
family-wise error at `alpha = 1e-3` (Holm within a graph, Bonferroni across graphs), so a test
that expects a correct estimator to pass fails falsely with probability at most 1e-3 per
statistical check it runs (the contract's unbiasedness, the suite's). The planted bugs are
caught with z far beyond the thresholds (|z| > 8 at these budgets, threshold about 4).
"""

import math
from pathlib import Path

import pytest

from estimator_lab.cli import main as cli_main
from estimator_lab.testing.planted import (
    FlippedSignDisARM,
    RebarWithoutConditionalNoisePath,
    ReinforceWithSampledGateBaseline,
)
from estimator_lab.validation import BUDGETS, Budget, Target, resolve_target, validate
from estimator_lab.validation.budget import MULTILAYER_GRAPH, SINGLE_LAYER_GRAPHS

EXAMPLE = Path(__file__).parents[2] / "examples" / "learned_baseline.py"
TINY = Budget("tiny", contract_draws=1000, draws=2000, group_size=100,
              graphs=(SINGLE_LAYER_GRAPHS[1], MULTILAYER_GRAPH), network_draws=0,
              training_steps=0, warmup_steps=20)
"""Seconds per estimator: one single-layer and one two-layer graph, no network, no training."""


def _validate(cls):
    return validate(Target(cls.__name__, cls), TINY)


@pytest.mark.statistical
@pytest.mark.parametrize("cls, what", [
    (FlippedSignDisARM, "mean differs from the exact gradient on sbn:4,inputs=6"),
    (ReinforceWithSampledGateBaseline, "mean differs from the exact gradient on sbn:4,inputs=6"),
    (RebarWithoutConditionalNoisePath, "mean differs from the exact gradient on sbn:4,inputs=6"),
], ids=["flipped-sign-disarm", "sampled-gate-baseline", "rebar-without-conditional-noise"])
def test_planted_bugs_are_caught_and_explained(cls, what):
    result = _validate(cls)
    assert not result.passed
    line = result["unbiasedness"].line
    assert result["unbiasedness"].status == "fail"
    assert line.startswith("biased (claims is_unbiased=True): ")
    assert what in line and "Holm p=" in line and "worst coordinate" in line
    assert result["contract"].status == "fail"
    assert "unbiasedness: claims is_unbiased=True but its mean draw differs" in \
        result["contract"].line


@pytest.mark.statistical
def test_flipped_sign_is_an_exact_negation_on_the_gate_logits():
    bias = _validate(FlippedSignDisARM)["unbiasedness"].details["sbn:4,inputs=6"]
    assert bias["worst_coordinate"].startswith("gate_logits")
    # mean = -exact on the gate logits: the worst coordinate's sign is flipped
    assert bias["worst_mean"] * bias["worst_exact"] < 0


@pytest.mark.statistical
def test_worked_example_passes_end_to_end():
    result = validate(resolve_target(str(EXAMPLE)), TINY)
    assert result.passed, result.summary()
    assert result["unbiasedness"].status == "pass"
    assert "exact mean equals the gradient on sbn:4,inputs=6, sbn:3-2,inputs=4" in \
        result["unbiasedness"].line
    assert result["variance"].status == "info"
    assert result["full network"].status == result["training"].status == "skip"
    assert result["binary vae"].status == "skip" and result.binary_vae is None


def test_the_binary_vae_check_runs_in_the_thorough_budget_only():
    assert BUDGETS["thorough"].binary_vae_evaluations > 0
    assert [BUDGETS[name].binary_vae_evaluations for name in ("quick", "standard")] == [0, 0]
    with pytest.raises(ValueError, match="binary_vae_evaluations must be >= 0, got -1"):
        TINY.replace(binary_vae_evaluations=-1)


@pytest.mark.statistical
def test_biased_estimator_is_flagged_biased_not_failed():
    result = validate(resolve_target("st"), TINY)
    assert result.passed
    verdict = result["unbiasedness"]
    assert verdict.status == "biased"
    assert verdict.line.startswith("biased, as declared (is_unbiased=False): mean differs")


def test_single_layer_estimator_skips_multilayer_graphs():
    result = validate(resolve_target("disarm"), TINY.replace(graphs=(MULTILAYER_GRAPH,)))
    assert result["unbiasedness"].status == "skip"
    assert "single-layer estimator" in result["unbiasedness"].line


def test_exact_moments_past_the_enumeration_guard_are_left_out_not_a_failure():
    # sbn:4-4-4 (thorough's suite): RLOO's two samples of 12 gates make 2^24 configurations
    result = validate(resolve_target("st"), TINY.replace(graphs=("sbn:4-4-4",)))
    assert result["unbiasedness"].status == "biased", result.summary()
    rows = result.graphs[0].variance.set_index("estimator")["exact_total_variance"]
    assert math.isnan(rows["rloo"]) and not math.isnan(rows["reinforce-oracle"])


def test_budgets_are_frozen_and_checked():
    with pytest.raises(AttributeError):
        BUDGETS["quick"].draws = 1
    with pytest.raises(ValueError, match="at least two groups"):
        TINY.replace(draws=100)


@pytest.mark.statistical
def test_command_line_writes_the_report_card_and_exits_1_on_failure(tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setitem(BUDGETS, "quick", TINY)
    out = tmp_path / "card"
    target = "estimator_lab.testing.planted:ReinforceWithSampledGateBaseline"
    with pytest.raises(SystemExit) as exit_status:
        cli_main(["validate", target, "--out", str(out), "--quiet", "--graphs",
                  SINGLE_LAYER_GRAPHS[1]])
    assert exit_status.value.code == 1
    printed = capsys.readouterr().out
    assert "FAIL   unbiasedness: biased (claims is_unbiased=True)" in printed
    card = (out / "report.md").read_text()
    assert "**FAIL** (contract, unbiasedness)" in card
    assert f"estimator-lab validate {target} --budget quick" in card
    assert {"report.html", "verdicts.json", "variance.png"} <= {p.name for p in out.iterdir()}


def test_command_line_bad_graph_is_a_one_line_error(capsys):
    assert cli_main(["validate", "disarm", "--graphs", "toy:n=40"]) == 2
    assert "exceed the enumeration limit" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.statistical
@pytest.mark.parametrize("name", __import__("estimator_lab.estimators").estimators.available())
def test_every_registered_estimator_is_judged_by_its_claim(name):
    """Unbiased built-ins pass; biased ones are flagged `biased` on the quick suite."""
    budget = BUDGETS["quick"].replace(network_draws=0, training_steps=0)
    result = validate(resolve_target(name), budget)
    assert result.passed, result.summary()
    claims = result.target.probe().is_unbiased
    assert result["unbiasedness"].status == ("pass" if claims else "biased"), result.summary()
