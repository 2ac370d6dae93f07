"""`estimator-lab run STUDY`: dispatch, the quick preset, the default folder and bad names."""

import json

import pytest

from estimator_lab.cli import main
from estimator_lab.studies import bias_small_graphs
from estimator_lab.studies.bias_small_graphs import SmallGraphsConfig

TINY = SmallGraphsConfig(graphs=("toy:n=3",), estimators=("reinforce", "st"), draws=40, groups=4)


def test_unknown_study_is_one_line_and_exit_2(capsys):
    assert main(["run", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown study 'nope'" in err and "bias_small_graphs" in err and "\n" not in err


def test_quick_runs_the_quick_preset_into_the_default_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bias_small_graphs, "QUICK", TINY)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "bias_small_graphs", "--quick", "--seed", "3", "--quiet"]) == 0
    report = tmp_path / "reports" / "bias_small_graphs-quick" / "report.md"
    assert "report written to reports/bias_small_graphs-quick/report.md" in capsys.readouterr().out
    manifest = json.loads((report.parent / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["study"] == "bias_small_graphs"
    assert manifest["config"]["graphs"] == ["toy:n=3"] and manifest["config"]["draws"] == 40


def test_out_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(bias_small_graphs, "QUICK", TINY)
    assert main(["run", "bias_small_graphs", "--quick", "--out", str(tmp_path / "x"),
                 "--quiet"]) == 0
    assert (tmp_path / "x" / "report.md").is_file()


@pytest.mark.slow
@pytest.mark.network
def test_real_quick_preset_of_bias_small_graphs(mnist_env, tmp_path):
    # About a minute on a 2-core CPU: the real --quick, tiny conditional network included.
    assert main(["run", "bias_small_graphs", "--quick", "--out", str(tmp_path / "q"),
                 "--quiet"]) == 0
    assert (tmp_path / "q" / "summary.csv").is_file()
