"""Smoke test of `analyses/categorical_bias/run.py --quick`, written into tmp_path (seconds).

The checks on exact rows are deterministic (enumeration, float64); the Monte Carlo figures are
seeded and only checked for being finite and ordered.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from estimator_lab.estimators.categorical import available_categorical

RUN = Path(__file__).parents[2] / "analyses" / "categorical_bias" / "run.py"


def load():
    spec = importlib.util.spec_from_file_location("categorical_bias_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its frozen dataclass resolves annotations through it
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_the_report_and_exact_figures(tmp_path):
    module = load()
    out = tmp_path / "report"
    assert module.main(["--quick", "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv")
    graphs = pd.read_csv(out / "graphs.csv")
    config = module.QUICK
    assert list(graphs["K"]) == list(config.classes)
    assert (graphs["exact_vs_closed_form"] < 1e-12).all()
    assert (graphs["configurations"] == graphs["K"] ** config.gates).all()
    for k in config.classes:
        assert set(results.loc[results["K"] == k, "estimator"]) == set(available_categorical())
    exact = results[results["moments"] == "exact (enumeration)"]
    claims = exact[exact["claims_unbiased"]]
    assert len(claims) > 0 and (claims["relative_bias"] < module.EXACT_BIAS_RESOLUTION).all()
    assert (exact.loc[exact["estimator"] == "st", "biased"] == "yes").all()
    assert set(results.loc[results["moments"] == "Monte Carlo", "estimator"]) == {
        "gumbel", "st-gumbel", "gumbel-rao"}
    relaxed = results[results["temperature"].notna()]
    assert set(relaxed["temperature"]) == set(config.temperatures)
    assert np.allclose(results["mse"], (results["relative_bias"]
                                        * graphs.set_index("K").loc[results["K"],
                                                                    "gradient_norm"].to_numpy())
                       ** 2 + results["variance"])
    assert (results["work_variance"] == results["variance"] * results["evaluations"]).all()
    mc = results.dropna(subset=["mc_variance_low"])
    assert (mc["mc_variance_low"] <= mc["mc_variance"]).all()
    assert (mc["mc_variance"] <= mc["mc_variance_high"]).all()
    text = (out / "report.md").read_text()
    assert "## Headline" in text and "python analyses/categorical_bias/run.py --quick" in text
    assert {"relative_bias.png", "work_variance.png", "mse.png", "manifest.json"} <= {
        p.name for p in out.iterdir()}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["study"] == "categorical_bias" and manifest["config"]["draws"] == config.draws
