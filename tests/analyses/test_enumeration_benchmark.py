"""Smoke test of the enumeration benchmark (tiny case, seconds)."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).parents[2] / "analyses" / "enumeration" / "run.py"


def test_quick_benchmark_writes_its_report(tmp_path):
    out = tmp_path / "enumeration"
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], check=True,
                   capture_output=True)
    results = pd.read_csv(out / "results.csv")
    assert results["configurations"].tolist() == [16]
    assert (results["configurations_per_second"] > 0).all()
    assert "configurations_per_second" in (out / "report.md").read_text()
