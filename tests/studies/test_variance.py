"""The variance study: small graphs against the exact gradient, the paper network against the
paired local-expectation reference, and bad input."""

import pandas as pd
import pytest

from estimator_lab.cli import main
from estimator_lab.stats import SUMMARY_COLUMNS
from estimator_lab.studies.variance import GATE_COLUMNS


def test_variance_on_a_small_graph(tmp_path):
    out = tmp_path / "var"
    assert main(["variance", "--graph", "toy:n=3", "--estimators", "reinforce,st", "--draws",
                 "400", "--group-size", "20", "--out", str(out), "--quiet"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["graph", *SUMMARY_COLUMNS]
    gates = pd.read_csv(out / "gates.csv")
    assert list(gates.columns) == GATE_COLUMNS and len(gates) == 2 * 3
    st = summary.set_index(["estimator", "parameter"]).loc[("st", "theta")]
    assert st["squared_bias_pvalue"] < 1e-6
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"report.md", "report.html", "tables.tex", "manifest.json"} <= written.keys()
    assert main(["report", str(out)]) == 0  # rebuilt from the saved tables, nothing rerun
    assert {p.name: p.read_bytes() for p in out.iterdir()} == written


@pytest.mark.network
def test_variance_on_the_paper_network_with_the_paired_reference(mnist_env, tmp_path):
    out = tmp_path / "paper"
    assert main(["variance", "--estimators", "reinforce", "--draws", "8", "--group-size", "4",
                 "--chunk-size", "4", "--out", str(out), "--quiet"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["estimator"]) == {"reinforce", "local-expectation"}
    assert summary.groupby("estimator")["numel"].sum().tolist() == [2_706_010 + 64_000] * 2
    assert "mean of local-expectation draws" in (out / "report.md").read_text()


@pytest.mark.parametrize(("argv", "message"), [
    (["--graph", "toy:n=99"], "exceed the enumeration limit"),
    (["--draws", "10"], "draws must be at least two groups"),
    (["--estimators", "nope"], "unknown estimator 'nope'"),
])
def test_bad_variance_input(argv, message, tmp_path, capsys):
    assert main(["variance", *argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.ddp
def test_torchrun_two_workers_match_one_process(tmp_path):
    """`torchrun --nproc_per_node=2` splits the draws and merges them: the same summary."""
    import subprocess
    import sys

    argv = ["variance", "--graph", "toy:n=3", "--estimators", "reinforce,st", "--draws", "400",
            "--group-size", "20", "--quiet", "--device", "cpu"]
    single, double = tmp_path / "one", tmp_path / "two"
    assert main([*argv, "--out", str(single)]) == 0
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node=2", "-m", "estimator_lab.cli", *argv, "--out", str(double)],
                   check=True, capture_output=True, timeout=300)
    one = pd.read_csv(single / "summary.csv")
    two = pd.read_csv(double / "summary.csv")
    numbers = ["draws", "mean_variance", "total_variance", "mean_norm", "squared_bias"]
    pd.testing.assert_frame_equal(one[numbers], two[numbers], rtol=1e-10)
    assert '"world_size": 2' in (double / "manifest.json").read_text()
