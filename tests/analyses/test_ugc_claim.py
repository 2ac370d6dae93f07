"""Smoke test of `analyses/ugc_claim/run.py` on its `--quick` graphs, written into tmp_path."""

import importlib.util
from pathlib import Path

import pandas as pd

RUN = Path(__file__).parents[2] / "analyses" / "ugc_claim" / "run.py"


def load():
    spec = importlib.util.spec_from_file_location("ugc_claim_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_report_and_table(tmp_path):
    assert load().main(["--quick", "--out", str(tmp_path)]) == 0
    results = pd.read_csv(tmp_path / "results.csv")
    assert set(results["graph"]) == {"toy:n=3,t=0.45", "sbn:3,inputs=4,batch=1,scale=3"}
    assert (results["var_disarm"] >= 0).all() and (results["var_ugc"] >= 0).all()
    logits = results[results["tensor"] == "gate_logits"]
    # on its DisARM coordinates UGC's draw is DisARM's: equal variances
    disarm_side = logits[~logits["bitflip"].astype(bool)]
    assert ((disarm_side["var_ugc"] - disarm_side["var_disarm"]).abs()
            <= 1e-12 * logits["var_disarm"].max()).all()
    text = (tmp_path / "report.md").read_text()
    assert "- command: `python analyses/ugc_claim/run.py --quick`" in text
    assert "- git commit: `" in text and "- seconds: " in text
    assert "**Verdict: the claim holds on" in text
