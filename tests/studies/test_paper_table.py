"""Smoke test of the paper-table study: tiny runs, every gater, a complete report."""

import pandas as pd
import pytest

from estimator_lab.studies.paper_table import PaperTableConfig, paper_table_report, run_paper_table
from estimator_lab.train.gaters import PAPER_GATERS


@pytest.mark.network
def test_tiny_study_writes_the_table_curves_and_sparse_timing(mnist_env, tmp_path,
                                                               assert_rebuilt_identically):
    config = PaperTableConfig(max_epochs=1, patience=1, train_size=64, eval_size=64,
                              runs_dir=str(tmp_path / "runs"), sparse_examples=4, device="cpu")
    report = run_paper_table(config, tmp_path / "out", progress=False)
    table = pd.read_csv(tmp_path / "out" / "table.csv")
    assert list(table["gater"]) == [g.label for g in PAPER_GATERS.values()]
    assert list(table["paper_test"]) == [g.paper[2] for g in PAPER_GATERS.values()]
    assert (table["epochs_run"] == 1).all()
    sparse = pd.read_csv(tmp_path / "out" / "sparse.csv")
    assert len(sparse) == 5 and (sparse["max_abs_difference"] < 1e-4).all()
    assert (sparse["madds_ratio"] > 1).all()
    usage = pd.read_csv(tmp_path / "out" / "gate_usage.csv")
    assert list(usage["gater"]) == list(sparse["gater"])
    assert usage["agreement"].between(0, 1).all()
    text = report.read_text()
    assert "Straight-through" in text and "learning_curves" in text
    # The report rebuilds from the run folders without training, and from its own tables.
    paper_table_report(config, tmp_path / "again")
    pd.testing.assert_frame_equal(table, pd.read_csv(tmp_path / "again" / "table.csv"))
    assert_rebuilt_identically(tmp_path / "out")
