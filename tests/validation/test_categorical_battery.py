"""The categorical suite of the validation battery: categorical targets get the categorical
contract and exact bias and variance on cat-toy graphs, a planted wrong softmax Jacobian fails,
ReinMax is judged on graphs and temperatures where its bias is known exactly, and the
Bernoulli-only checks say why they did not run.

Note [false-failure rates]: the seeds are fixed. A correct estimator fails a statistical check
with probability at most `alpha = 1e-3` per check (the contract's Monte Carlo part, Holm; the
suite's, Holm within a graph and Bonferroni across its three graphs). The planted bug and
ReinMax at tau = 2 are caught by the exact means (enumeration, no Monte Carlo error), and the
planted bug also at |z| far above the Holm threshold (about 4).
"""

from pathlib import Path

import pytest

from estimator_lab.cli import main as cli_main
from estimator_lab.estimators.categorical.reinmax import CategoricalReinMax
from estimator_lab.validation import Target, resolve_target, validate
from estimator_lab.validation.battery import BERNOULLI_ONLY
from estimator_lab.validation.budget import CATEGORICAL_BUDGETS, CATEGORICAL_GRAPHS

QUICK = CATEGORICAL_BUDGETS["quick"]
PLANTED = (f"{Path(__file__).parents[1] / 'testing' / 'test_categorical_contract.py'}"
           ":_IndeCateRWithDiagonalJacobian")
"""IndeCateR with `diag(p)` for the softmax Jacobian `diag(p) - p p^T`, claiming is_unbiased
(the contract's planted bug), loaded as a file plugin."""


class _HotReinMax(CategoricalReinMax):
    """ReinMax at `tau = 2`: biased on cat-toy (exact relative bias 0.57 to 3.1)."""

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__(temperature)


def _bias(result, key: str) -> list[float]:
    return [result["unbiasedness"].details[spec][key] for spec in CATEGORICAL_GRAPHS]


@pytest.mark.statistical
def test_indecater_passes_the_categorical_suite_with_exact_variances():
    result = validate(resolve_target("indecater"), QUICK)
    assert result.passed, result.summary()
    assert result.target.gates == "categorical"
    assert [g.spec for g in result.graphs] == list(CATEGORICAL_GRAPHS)
    assert result["contract"].line.startswith("all 6 checks pass (flags, shapes, dtypes")
    assert result["unbiasedness"].status == "pass"
    assert f"exact mean equals the gradient on {', '.join(CATEGORICAL_GRAPHS)}" in \
        result["unbiasedness"].line
    assert max(_bias(result, "exact_relative_bias")) < 1e-12
    for graph in result.graphs:
        assert graph.objective.startswith("exact gradient (enumeration of ")
        assert list(graph.variance["estimator"]) == ["indecater", "reinforce", "rloo"]
        assert graph.variance["exact_total_variance"].notna().all()
    # cat-toy's loss is separable, so IndeCateR's draw is exact: zero variance, said as such
    assert "(indecater" not in result["variance"].line
    for check, why in BERNOULLI_ONLY.items():
        assert result[check].status == "skip"
        assert result[check].line == f"not run for a categorical target: {why}"
    assert result.network is result.curves is result.binary_vae is None


@pytest.mark.statistical
def test_a_zero_variance_reference_is_named_not_divided_by():
    result = validate(resolve_target("reinforce", gates="categorical"), QUICK)
    assert result.passed, result.summary()
    line = result["variance"].line
    assert line.startswith("not lower than the best unbiased reference on any graph")
    assert line.count("x rloo [") == 3 and line.count("(indecater: zero variance, exact)") == 3


@pytest.mark.statistical
def test_a_wrong_softmax_jacobian_fails_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "card"
    with pytest.raises(SystemExit) as exit_status:
        cli_main(["validate", PLANTED, "--out", str(out), "--quiet"])
    assert exit_status.value.code == 1
    printed = capsys.readouterr().out
    assert "FAIL   contract: 1 of 6 checks fail: unbiasedness: claims is_unbiased=True" in printed
    assert ("FAIL   unbiasedness: biased (claims is_unbiased=True): mean differs from the exact "
            f"gradient on {CATEGORICAL_GRAPHS[0]}") in printed
    details = __import__("json").loads((out / "verdicts.json").read_text())[1]["details"]
    assert all(details[spec]["exact_relative_bias"] > 0.01 for spec in CATEGORICAL_GRAPHS)
    card = (out / "report.md").read_text()
    assert "**FAIL** (contract, unbiasedness)" in card
    assert "Distribution checked: **categorical** gates only" in card
    assert "`check_categorical_estimator` on the CPU" in card
    assert "`indecater` IndeCateR" in card and "`disarm`" not in card


@pytest.mark.statistical
def test_reinmax_is_exact_at_tau_1_on_the_quadratic_suite_and_biased_at_tau_2():
    """ReinMax is second-order accurate: exact for cat-toy's loss, quadratic in the one-hot
    gates, at tau = 1; the contract's cubic probe shows its bias there. At tau = 2 its exact
    mean is off on every cat-toy."""
    result = validate(resolve_target("reinmax", gates="categorical"), QUICK)
    assert result.passed, result.summary()
    assert result["unbiasedness"].status == "info"
    assert result["unbiasedness"].line.startswith("declares is_unbiased=False, but no bias")
    assert max(_bias(result, "exact_relative_bias")) < 1e-12
    assert "bias detected: exact relative bias" in result.contract.set_index("check").at[
        "unbiasedness", "message"]

    hot = validate(Target("_HotReinMax", _HotReinMax), QUICK)
    assert hot.passed, hot.summary()
    assert hot["unbiasedness"].status == "biased"
    assert hot["unbiasedness"].line.startswith("biased, as declared (is_unbiased=False): ")
    assert min(_bias(hot, "exact_relative_bias")) > 0.1


def test_names_in_both_registries_mean_the_bernoulli_estimator_unless_asked():
    assert resolve_target("reinforce").gates == "bernoulli"
    categorical = resolve_target("reinforce", gates="categorical")
    assert categorical.gates == "categorical" and categorical.registry_name == "reinforce"
    assert categorical.probe().distribution == "categorical"
    assert resolve_target("indecater").gates == "categorical"  # only the categorical one
    plugin = resolve_target("estimator_lab.estimators.categorical.indecater:IndeCateR")
    assert plugin.gates == "categorical" and plugin.registry_name is None


@pytest.mark.parametrize("target, gates, message", [
    ("indecater", "bernoulli", "unknown estimator 'indecater'"),
    ("disarm", "categorical", "no categorical estimator 'disarm'"),
    ("estimator_lab.estimators.categorical.indecater:IndeCateR", "bernoulli",
     "is an estimator for categorical gates (distribution 'categorical'), not bernoulli"),
    ("estimator_lab.estimators.arm:DisARM", "categorical",
     "is an estimator for bernoulli gates (distribution 'bernoulli'), not categorical"),
])
def test_gates_that_do_not_fit_say_why_in_one_line(target, gates, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        resolve_target(target, gates=gates)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("argv, message", [
    (["indecater", "--graphs", "toy:n=2"], "a target for categorical gates needs graphs with "
     "categorical gates; toy:n=2 has other gates"),
    (["disarm", "--graphs", "cat-toy:n=2,k=3;toy:n=2"], "a target for bernoulli gates needs "
     "graphs with bernoulli gates; cat-toy:n=2,k=3 has other gates"),
    (["disarm", "--gates", "categorical"], "no categorical estimator 'disarm'"),
])
def test_command_line_gates_and_graphs_that_do_not_fit_are_one_line_errors(argv, message,
                                                                           capsys):
    assert cli_main(["validate", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_categorical_budgets_ask_for_no_bernoulli_only_work():
    for budget in CATEGORICAL_BUDGETS.values():
        assert budget.graphs[:3] == CATEGORICAL_GRAPHS
        assert budget.network_draws == budget.training_steps == 0
        assert budget.binary_vae_evaluations == 0
