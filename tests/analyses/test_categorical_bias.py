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
    assert list(graphs["part"]) == ["cat-toy"] * len(config.classes) + ["vae"]
    graphs = graphs[graphs["part"] == "cat-toy"]
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
    check_vae(module, out, config)
    text = (out / "report.md").read_text()
    assert "## Headline" in text and "## Gradient analysis on a small categorical VAE" in text
    assert "python analyses/categorical_bias/run.py --quick" in text
    assert {"relative_bias.png", "work_variance.png", "mse.png", "vae_relative_bias.png",
            "vae_relative_std.png", "vae.csv", "manifest.json"} <= {
        p.name for p in out.iterdir()}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["study"] == "categorical_bias" and manifest["config"]["draws"] == config.draws


def check_vae(module, out, config):
    """The VAE part of the quick run: every estimator and temperature of the grid once, on the
    gate logits of the 4^2 synthetic VAE (every estimator with discrete noise exact there,
    rloo's 4^4 pairs of samples included), measures consistent with their definitions."""
    vae = pd.read_csv(out / "vae.csv")
    graph = pd.read_csv(out / "graphs.csv").set_index("part").loc["vae"]
    assert graph["graph"] == config.vae and graph["configurations"] == 4**2
    assert sorted(zip(vae["estimator"], vae["temperature"].fillna(-1), strict=True)) == sorted(
        (name, -1 if tau is None else tau) for name, tau in module.estimator_grid(config))
    assert (vae["draws"] == config.vae_draws).all()
    exact = vae[vae["moments"] == "exact (enumeration)"]
    assert set(vae["estimator"]) - set(exact["estimator"]) == {"gumbel", "st-gumbel",
                                                                 "gumbel-rao"}
    claims = exact[exact["claims_unbiased"]]
    assert len(claims) == 5 and (claims["relative_bias"] < module.EXACT_BIAS_RESOLUTION).all()
    assert (claims["cosine"] > 1 - 1e-12).all()
    assert (exact.loc[exact["estimator"].isin(["st", "gst", "reinmax"]), "biased"] == "yes").all()
    norm = graph["gradient_norm"]
    assert np.allclose(vae["relative_std"], np.sqrt(vae["variance"]) / norm, rtol=1e-12)
    mc = vae[vae["moments"] == "Monte Carlo"]
    assert (mc["relative_std_low"] <= mc["relative_std"]).all()
    assert (mc["relative_std"] <= mc["relative_std_high"]).all()
    assert vae["cosine"].between(-1, 1 + 1e-12).all()


def test_report_only_rewrites_the_same_report_from_the_tables(tmp_path):
    module = load()
    out = tmp_path / "report"
    assert module.main(["--quick", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "report.md").write_text("edited")
    assert module.main(["--report-only", "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
