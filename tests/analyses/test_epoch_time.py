"""Smoke test of the epoch-time benchmark (3 steps, two gaters, one thread, seconds)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).parents[2] / "analyses" / "paper_table" / "epoch_time.py"


def test_quick_benchmark_writes_its_report(tmp_path):
    out = tmp_path / "epoch_time"
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(out)],
                   check=True, capture_output=True)
    results = pd.read_csv(out / "results.csv")
    assert list(results["gater"]) == ["straight-through", "baseline-sigmoid"]
    assert (results["threads"] == 1).all() and (results["step_ms"] > 0).all()
    assert (results["epoch_s"] > 1562 * results["step_ms"] / 1e3).all()  # + evaluation
    assert json.loads((out / "manifest.json").read_text())["quick"] is True
    assert "bare_step_ms" in (out / "report.md").read_text()


def test_bad_thread_count_is_refused(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--threads", "0", "--out",
                           str(tmp_path / "x")], capture_output=True, text=True)
    assert done.returncode == 2 and "--threads" in done.stderr
    assert not (tmp_path / "x").exists()
