"""Smoke test of the throughput benchmark: tiny network, the command on a small graph, every
case in its own child process (tens of seconds on a loaded CPU)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).parents[2] / "analyses" / "throughput" / "run.py"
ENGINE_MODES = ["fast", "fast+ref", "generic", "generic+ref", "naive", "naive+ref"]


def run(*args):
    subprocess.run([sys.executable, str(SCRIPT), "--quick", *args], check=True,
                   capture_output=True)


def test_quick_benchmark_writes_its_report_and_adds_estimators(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    run("--out", str(first))
    results = pd.read_csv(first / "results.csv")
    engine = results[results["case"] == "engine"]
    assert sorted(engine["mode"]) == sorted(ENGINE_MODES)
    assert (engine["path"] == engine["mode"].map(
        lambda m: "fast" if m.startswith("fast") else "generic")).all()
    cli = results[results["case"] == "cli"]
    assert sorted(cli["mode"]) == ["OMP_NUM_THREADS=1", "variance", "variance, threads"]
    assert (cli["path"] == "fast").all()  # the command took the fast path by itself
    assert sorted(results.loc[results["case"] == "memory", "draws"]) == [100, 400]
    assert (results["draws_per_second"] > 0).all() and (results["peak_rss_mib"] > 0).all()
    assert results["load_before"].notna().all()
    # The fast path reproduces the generic moments on the same float32 draws.
    gaps = results.loc[results["mode"].str.startswith("generic"), ["mean_gap", "variance_gap"]]
    assert len(gaps) == 2 and (gaps < 1e-5).all().all()
    profile = pd.read_csv(first / "profile.csv")
    assert {"total", "stage", "torch op", "copies", "python"} <= set(profile["kind"])
    stages = profile[profile["kind"] == "stage"].set_index("name")["seconds"]
    assert stages.filter(like="FastDraws").iloc[0] > 0 and stages.filter(like="noise").iloc[0] > 0
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["quick"] is True and manifest["machine"]["cores"] >= 1
    report = (first / "report.md").read_text()
    for heading in ("The command against the naive loop", "Peak memory", "Profile of the fast"):
        assert heading in report
    # A second run adds an estimator and keeps the first run's rows and profile.
    run("--estimators", "st", "--add-to", str(first), "--out", str(second))
    combined = pd.read_csv(second / "results.csv")
    assert set(combined["estimator"]) == {"reinforce", "st"}
    assert len(combined[combined["estimator"] == "reinforce"]) == len(
        results[results["estimator"] == "reinforce"])
    assert pd.read_csv(second / "profile.csv").equals(profile)
    assert len(json.loads((second / "manifest.json").read_text())["earlier_runs"]) == 1
    assert "| st |" in (second / "report.md").read_text()
