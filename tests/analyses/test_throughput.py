"""Smoke test of the throughput benchmark (tiny network, every case in one child, seconds)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).parents[2] / "analyses" / "throughput" / "run.py"


def test_quick_benchmark_writes_its_report(tmp_path):
    out = tmp_path / "throughput"
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--out", str(out)],
                   check=True, capture_output=True)
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["method"]) == ["fast", "fast", "loop", "loop-each", "vmap"]
    assert (results["estimator"] == "st").all()
    assert (results["draws_per_second"] > 0).all()
    assert (results["peak_rss_mib"] > 0).all()
    # Every method tracks the same coordinates: the gate logits and the four layers.
    parameters = (20 * 6 + 6) + (6 * 12 + 12) + (20 * 12 + 12) + (12 * 4 + 4)
    assert (results["coordinates"] == 32 * 12 + parameters).all()
    # The fast path reproduces the generic moments on the same float32 draws.
    gaps = results.loc[results["method"] == "vmap", ["fast_mean_gap", "fast_variance_gap"]]
    assert (gaps < 1e-4).all().all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"].startswith("cpu") and manifest["quick"] is True
    report = (out / "report.md").read_text()
    assert "fast / loop-each" in report and "peak_rss_mib at 256 draws" in report
