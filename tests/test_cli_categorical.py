"""The CLI on graphs with categorical gates: the `cat-toy` must-show of `bias`, bad specs, and the
estimator listing (`estimators --gates`).

Note [Randomized statistical tests]: the bias run is seeded (seed 0, 20,000 draws). Its Holm
tests run at family-wise level 1e-4 per estimator; four estimators (`reinforce`, `rloo`,
`indecater`, and `reinmax`, exact on this quadratic loss) have exact means equal to the exact
gradient, so the chance that a correct implementation sees one of them flagged is at most
4e-4. The biased ones (`st`, `gst` with exact relative biases near 1, `gumbel-rao` with Holm
p-values of 0 at this budget) are flagged at any seed.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch

from estimator_lab.cli import main
from estimator_lab.estimators import available
from estimator_lab.estimators.categorical import available_categorical, get_categorical_estimator
from estimator_lab.estimators.topk import available_topk
from estimator_lab.graphs.categorical import CategoricalToy
from estimator_lab.studies.bias import RESULT_COLUMNS

MUST_SHOW = ["reinforce", "rloo", "gumbel-rao", "reinmax", "gst", "indecater", "st"]
EXACT_ON_CAT_TOY = {"reinforce", "rloo", "indecater", "reinmax"}
"""Estimators whose exact mean on cat-toy is the exact gradient (`reinmax`: the loss is
quadratic in each gate's one-hot, where ReinMax at tau = 1 is exact)."""

EXACT_RESOLUTION = 1e-9
"""An exact relative bias above this is a bias (float64 rounding leaves ~1e-15)."""


@pytest.fixture(scope="module")
def cat_toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cat") / "bias"
    argv = ["bias", "--graph", "cat-toy:n=3,k=4,t=0.45", "--estimators", ",".join(MUST_SHOW),
            "--draws", "20000", "--seed", "0", "--alpha", "1e-4", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    return out


@pytest.mark.statistical
def test_cat_toy_bias_writes_one_row_per_estimator_and_logit_coordinate(cat_toy_run):
    results = pd.read_csv(cat_toy_run / "results.csv")
    assert list(results.columns) == RESULT_COLUMNS
    assert list(dict.fromkeys(results["estimator"])) == MUST_SHOW
    for _, rows in results.groupby("estimator"):
        # B x N x K = 1 x 3 x 4 gate logits, then the N x K parameter theta
        assert rows["parameter"].tolist() == ["gate_logits"] * 12 + ["theta"] * 12
        assert rows["index"].tolist() == list(range(12)) * 2
    assert (cat_toy_run / "report.md").read_text().count("4^3 configurations") == 1


@pytest.mark.statistical
def test_cat_toy_exact_gradient_is_the_closed_form_and_graph_pt_holds_the_logits(cat_toy_run):
    saved = torch.load(cat_toy_run / "graph.pt")
    toy = CategoricalToy.seeded(3, 4, 0.45, seed=0)
    assert saved["spec"] == "cat-toy:n=3,k=4,t=0.45" and saved["seed"] == 0
    assert torch.equal(saved["state_dict"]["theta"], toy.theta.detach())
    closed = toy.true_gradient()["theta"].reshape(-1).numpy()
    results = pd.read_csv(cat_toy_run / "results.csv")
    for _, rows in results.groupby("estimator"):
        for parameter in ("gate_logits", "theta"):  # B = 1: the logits' gradient is theta's
            exact = rows.loc[rows["parameter"] == parameter, "exact"].to_numpy()
            assert abs(exact - closed).max() < 1e-12


@pytest.mark.statistical
def test_cat_toy_unbiased_estimators_are_not_flagged_and_biased_ones_are(cat_toy_run):
    summary = pd.read_csv(cat_toy_run / "summary.csv").set_index("estimator")
    for name in MUST_SHOW:
        row = summary.loc[name]
        assert bool(row["claims_unbiased"]) == get_categorical_estimator(name).is_unbiased
        if name in EXACT_ON_CAT_TOY:
            assert row["exact_method"] == "enumeration", name
            assert row["relative_exact_bias"] < EXACT_RESOLUTION, name
            assert row["verdict"] == "not flagged", name
        else:
            assert row["verdict"] == "biased", name
    assert summary.loc["st", "relative_exact_bias"] > 0.1
    assert summary.loc["gst", "relative_exact_bias"] > 0.1
    assert summary.loc["gumbel-rao", "exact_method"].startswith("not computable")


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ("cat-toy:k=1", "cat-toy needs k >= 2 classes, got k=1"),
        ("cat-toy:k=abc", "cat-toy k must be int, got 'abc'"),
        ("cat-toy:n=0", "cat-toy needs n >= 1 gates, got n=0"),
        ("cat-toy:t=inf", "cat-toy target t must be finite"),
        ("cat-toy:n=12,k=5", "5^12 = 244,140,625 configurations, more than the limit"),
        ("cat-toy:n=1000000000,k=2", "2^1000000000 configurations, more than the limit"),
        ("cat-toy:n=3,q=1", "unknown q"),
    ],
)
@pytest.mark.parametrize("command", ["bias", "variance"])
def test_bad_cat_toy_specs_are_one_line_and_exit_2(command, graph, message, tmp_path, capsys):
    out = tmp_path / "out"
    status = main([command, "--graph", graph, "--draws", "100", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("estimator-lab: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_bernoulli_only_estimator_on_a_categorical_graph_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["bias", "--graph", "cat-toy:n=2,k=3", "--estimators", "reinforce,arm",
                   "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "no categorical estimator 'arm'" in err
    assert not out.exists()


def _listing(gates: str, capsys) -> tuple[list[list[str]], list[str]]:
    assert main(["estimators", "--gates", gates]) == 0
    table, *described = capsys.readouterr().out.split("\n\n")
    return [line.split() for line in table.splitlines()], described


def test_estimators_lists_the_categorical_registry_with_its_distribution(capsys):
    rows, described = _listing("categorical", capsys)
    assert [row[0] for row in rows[1:]] == available_categorical()
    assert {row[2] for row in rows[1:]} == {"categorical"}
    assert {row[0]: row[1] for row in rows[1:]}["indecater"] == "True"
    assert all(entry.startswith(f"{row[0]} (categorical): ")
               for entry, row in zip(described, rows[1:], strict=True))
    rows, described = _listing("all", capsys)
    assert (len(rows) - 1 == len(described)
            == len(available()) + len(available_categorical()) + len(available_topk()))
    assert [row[2] for row in rows[1:]].count("categorical") == len(available_categorical())


def test_estimators_lists_the_topk_registry(capsys):
    rows, described = _listing("topk", capsys)
    assert [row[0] for row in rows[1:]] == available_topk()
    assert {row[2] for row in rows[1:]} == {"topk"}
    assert all(entry.startswith(f"{row[0]} (topk): ")
               for entry, row in zip(described, rows[1:], strict=True))


@pytest.mark.statistical
def test_cat_toy_bias_report_is_rebuilt_identically(cat_toy_run, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(cat_toy_run, folder)
    original = (folder / "report.md").read_text()
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.md").read_text() == original


def test_topk_variance_runs_every_topk_estimator_against_the_exact_gradient(tmp_path):
    """`variance` on a top-k graph: one summary row per top-k estimator and tracked tensor,
    the reference being the exact gradient by enumeration (its norm is that of the
    enumeration's), and the report rebuilds identically (deterministic: seeded draws)."""
    from estimator_lab.exact.topk import topk_exact_gradient
    from estimator_lab.graphs.specs import build_problem

    spec, out = "topk-toy:n=2,classes=4,k=2", tmp_path / "variance"
    names = available_topk()
    assert main(["variance", "--graph", spec, "--estimators", ",".join(names), "--draws", "200",
                 "--seed", "0", "--out", str(out), "--quiet"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["estimator"].drop_duplicates()) == names
    assert set(summary["parameter"]) == {"gate_logits", "theta"}
    assert (summary["draws"] == 200).all()
    problem = build_problem(spec, seed=0)
    _, exact = topk_exact_gradient(problem.graph, problem.batch, parameters=["theta"])
    theta = summary[summary["parameter"] == "theta"]
    assert (theta["reference_norm"] - float(exact["theta"].norm())).abs().max() < 1e-12
    assert theta[["total_variance", "mean_norm", "cosine"]].notna().all().all()
    original = (out / "report.md").read_text()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == original
