"""The bias_small_graphs study on a two-graph suite: every estimator measured or explained, exact
figures against an independent enumeration, and the Monte Carlo check of the exact ones.

Note [Randomized statistical tests]: seeded (seed 0, 400 draws in 20 batch-means groups). The
Monte Carlo total variance of an estimator with exact moments must lie within 4.5 batch-means
standard errors of the exact one: a t variable on 19 degrees of freedom exceeds 4.5 with
probability 2.4e-4, so the about 20 such comparisons fail falsely with probability < 0.5%.
The biased Monte Carlo estimators of the toy (`gumbel`, `st-gumbel`) have relative biases
above 1, tens of standard errors at 400 draws.
"""

import itertools
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from estimator_lab.estimators import available, get_estimator
from estimator_lab.graphs.specs import build_problem
from estimator_lab.studies.bias_small_graphs import (
    SUMMARY_TABLE_COLUMNS,
    SmallGraphsConfig,
    run_small_graphs,
)

TOY, SBN = "toy:n=4,t=0.45", "sbn:2-2"
CONFIG = SmallGraphsConfig(graphs=(TOY, SBN), draws=400, groups=20, seed=0)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("bias_small_graphs") / "out"
    run_small_graphs(CONFIG, out)
    return out, pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])


def test_every_estimator_is_measured_or_explained(study):
    out, summary = study
    assert {"report.md", "report.html", "tables.tex", "manifest.json", "summary.csv",
            "tensors.csv", "coordinates.csv", "graphs.csv", "relative_bias.png",
            "work_variance.pdf"} <= {p.name for p in out.iterdir()}
    assert set(SUMMARY_TABLE_COLUMNS) <= set(summary.columns)
    for graph in CONFIG.graphs:
        assert sorted(summary.loc[summary["graph"] == graph, "estimator"]) == available()
    not_run = summary[summary["moments"] == "not run"]
    assert set(not_run["graph"]) == {SBN}
    assert set(not_run["estimator"]) == {n for n in available() if not get_estimator(n).multilayer}
    assert not_run["reason"].str.contains("supports one gate layer").all()
    monte_carlo = summary[summary["moments"] == "Monte Carlo"]
    assert monte_carlo["reason"].str.startswith("not computable: ").all()
    oracle = summary[summary["estimator"] == "reinforce-oracle"]
    assert oracle["reason"].str.contains("oracle values").all()
    ran = summary[summary["moments"] != "not run"]
    assert np.isfinite(ran[["variance", "mse", "work_variance"]].to_numpy(float)).all()
    text = (out / "report.md").read_text()
    assert "supports one gate layer" in text and "## Headline" in text


def test_report_rebuilds_from_its_tables(study, tmp_path, assert_rebuilt_identically):
    out, _ = study
    assert_rebuilt_identically(shutil.copytree(out, tmp_path / "copy"))


def test_exact_figures_match_an_independent_enumeration(study):
    _, summary = study
    rows = summary.set_index(["graph", "estimator"])
    theta = build_problem(TOY, seed=CONFIG.seed).graph.theta.detach().numpy()
    p, t = 1 / (1 + np.exp(-theta)), 0.45
    gradient = p * (1 - p) * (1 - 2 * t)
    mean, second = np.zeros(4), np.zeros(4)
    for bits in itertools.product([0.0, 1.0], repeat=4):  # REINFORCE: L(b) (b - p)
        b = np.array(bits)
        weight = np.prod(np.where(b > 0, p, 1 - p))
        draw = np.square(b - t).sum() * (b - p)
        mean, second = mean + weight * draw, second + weight * draw**2
    reinforce = rows.loc[(TOY, "reinforce")]
    assert reinforce["moments"] == "exact (enumeration)" and reinforce["biased"] == "no"
    assert reinforce["variance"] == pytest.approx((second - mean**2).sum(), rel=1e-10)
    assert reinforce["relative_bias"] < 1e-12
    assert np.linalg.norm(mean - gradient) / np.linalg.norm(gradient) < 1e-12
    assert reinforce["work_variance"] == reinforce["variance"]  # one evaluation per draw
    for name in ("st", "gumbel", "st-gumbel"):
        assert rows.loc[(TOY, name), "biased"] == "yes", name
    assert rows.loc[(TOY, "st"), "relative_bias"] > 1


@pytest.mark.statistical
def test_monte_carlo_agrees_with_the_exact_moments(study):
    _, summary = study
    exact = summary[summary["moments"].str.startswith("exact")]
    assert len(exact) >= 15
    t_975 = stats.t.ppf(0.975, CONFIG.groups - 1)
    standard_error = (exact["mc_variance_high"] - exact["mc_variance"]) / t_975
    z = (exact["mc_variance"] - exact["variance"]).abs() / standard_error
    zero = exact["variance"] < 1e-20  # local-expectation on the toy: no variance at all
    assert (z[~zero] < 4.5).all(), exact.loc[~zero & (z >= 4.5), ["graph", "estimator"]]
    assert (exact.loc[zero, "mc_variance"] < 1e-20).all()


def test_bad_settings_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="draws >= 2 x groups"):
        SmallGraphsConfig(draws=10, groups=10)
    with pytest.raises(KeyError, match="unknown estimator 'reinforse'"):
        run_small_graphs(SmallGraphsConfig(graphs=(TOY,), estimators=("reinforse",), draws=40,
                                           groups=4), tmp_path / "out")
    assert not (tmp_path / "out").exists()

