"""Smoke test of the start-up benchmark: one run of each command, its three files."""

import csv
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "analyses" / "startup" / "run.py"


def test_one_repeat_writes_its_report(tmp_path):
    out = tmp_path / "startup"
    subprocess.run([sys.executable, str(SCRIPT), "--repeats", "1", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    with open(out / "results.csv") as file:
        rows = list(csv.DictReader(file))
    names = [row["command"] for row in rows]
    assert {"estimator-lab --help", 'python -c "import torch"', "estimator-lab estimators"} <= set(
        names) and len(names) == len(set(names))
    statuses = {row["command"]: row["status"] for row in rows}
    assert statuses["estimator-lab --help"] == "0"
    assert statuses["estimator-lab bias --draws abc (argument error)"] == "2"
    assert all(float(row["wall_s"]) > 0 for row in rows)
    assert json.loads((out / "manifest.json").read_text())["repeats"] == 1
    assert "| `estimator-lab --help` |" in (out / "report.md").read_text()
