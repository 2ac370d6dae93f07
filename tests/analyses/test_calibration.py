"""Smoke test of the calibration study (10 replications of 500 draws)."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).parents[2] / "analyses" / "calibration" / "run.py"


def test_quick_calibration_writes_its_report(tmp_path):
    out = tmp_path / "calibration"
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], check=True,
                   capture_output=True)
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 8 and results["measured"].between(0, 1).all()
    assert len(pd.read_csv(out / "replications.csv")) == 10
    assert (out / "pvalues.png").exists() and "Calibration" in (out / "report.md").read_text()
