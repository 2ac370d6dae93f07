"""Smoke test of `analyses/binary_vae/run.py --quick` (real MNIST, seconds on CPU), in tmp_path."""

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd

RUN = Path(__file__).parents[2] / "analyses" / "binary_vae" / "run.py"


def load():
    spec = importlib.util.spec_from_file_location("binary_vae_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_quick_run_trains_in_parts_and_writes_the_report(mnist_env, tmp_path):
    run = load()
    cache, out = tmp_path / "cache", tmp_path / "report"
    common = ["--quick", "--cache", str(cache), "--out", str(out)]
    first = [label for label in run.ESTIMATORS if label != "st"]
    assert run.main([*common, "--estimators", ",".join(first)]) == 0
    assert not out.exists()  # `st` is missing: no report yet
    assert run.main([*common, "--estimators", "st"]) == 0

    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["estimator"]) == set(run.ESTIMATORS)
    checkpoints = run.QUICK.checkpoint_evaluations()
    assert sorted(curves["evaluations"].unique()) == checkpoints
    # equal budgets: steps = evaluations // evaluations per step
    runs = pd.read_csv(out / "runs.csv").set_index("estimator")
    assert (runs["steps"] * runs["evaluations_per_step"] <= run.QUICK.evaluations).all()
    assert runs.loc["st", "steps"] == run.QUICK.evaluations
    assert runs.loc["arms", "evaluations_per_step"] == 4
    # one initialisation per seed: every estimator starts from the same bound
    start = curves[curves["evaluations"] == 0]
    assert start["test_bound"].nunique() == 1
    assert (curves["test_bound"] >= curves["test_elbo"]).all()  # IWAE bound >= ELBO

    variances = pd.read_csv(out / "variances.csv")
    assert (variances["mean_variance"] > 0).all()
    assert (variances["mean_variance_high"] >= variances["mean_variance"]).all()
    ratios = pd.read_csv(out / "paired_ratios.csv")
    assert set(ratios["estimator"]) == set(run.ESTIMATORS) - {run.REFERENCE}
    assert ((ratios["ratio_low"] <= ratios["variance_ratio"])
            & (ratios["variance_ratio"] <= ratios["ratio_high"])).all()
    arm = ratios[ratios["estimator"] == "arm"]
    assert (arm["variance_ratio"] > 1).all()  # DisARM is ARM Rao-Blackwellised

    text = (out / "report.md").read_text()
    assert "- command: `python analyses/binary_vae/run.py --quick" in text
    assert "- run length: 24 loss evaluations" in text
    assert "![curves](curves.png)" in text and (out / "curves.png").stat().st_size > 0
    assert json.loads((out / "manifest.json").read_text())["study"] == "binary_vae"
    # a second call trains nothing: the cache is read back
    assert run.main([*common, "--report-only"]) == 0
    assert pd.read_csv(out / "curves.csv").equals(curves)
