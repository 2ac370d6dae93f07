"""The minibatch-KL decisiveness study: its exact sum against enumeration through the training
code's own Eq. 14, and a smoke run of the script."""

import importlib.util
import itertools
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from estimator_lab.train.gaters import PAPER_GATERS, sparsity_penalty

SCRIPT = Path(__file__).parents[2] / "analyses" / "paper_table" / "kl_decisiveness.py"
_spec = importlib.util.spec_from_file_location("kl_decisiveness", SCRIPT)
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)


@pytest.mark.parametrize("low", [0.01, 0.05])
def test_excess_matches_enumeration_of_every_minibatch(low):
    """Every on/off pattern of a 5-input minibatch, through `sparsity_penalty` (weight 1)."""
    batch, target = 5, 0.1
    config = replace(PAPER_GATERS["sbn"], kl_weight=1.0, target=target)
    q = (target - low) / (1 - 2 * low)
    expected = 0.0
    for pattern in itertools.product((0, 1), repeat=batch):
        on = torch.tensor(pattern, dtype=torch.float64).unsqueeze(-1)  # B x 1
        sig = on * (1 - low) + (1 - on) * low
        penalty = sparsity_penalty(config, torch.logit(sig), on, l1_weight=0.0)
        expected += q ** sum(pattern) * (1 - q) ** (batch - sum(pattern)) * penalty.item()
    entropy = -(target * math.log(target) + (1 - target) * math.log(1 - target))
    assert study.expected_kl_excess(low, target, batch) == pytest.approx(
        expected - entropy, rel=1e-10)


def test_indecisive_unit_pays_nothing_extra_and_decisiveness_costs_more_as_it_sharpens():
    assert study.expected_kl_excess(0.1) == pytest.approx(0.0, abs=1e-15)
    excess = [study.expected_kl_excess(low) for low in (0.05, 0.01, 0.001)]
    assert 0 < excess[0] < excess[1] < excess[2]
    # a larger minibatch averages more inputs, so its mean strays less from the target
    assert study.expected_kl_excess(0.01, batch_size=256) < study.expected_kl_excess(0.01)


@pytest.mark.parametrize("low, batch", [(0.0, 32), (0.2, 32), (0.01, 0)])
def test_bad_arguments_are_refused(low, batch):
    with pytest.raises(ValueError, match="low"):
        study.expected_kl_excess(low, batch_size=batch)


def test_script_writes_its_report(tmp_path):
    out = tmp_path / "kl"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True,
                   capture_output=True)
    results = pd.read_csv(out / "results.csv")
    assert list(results["low"]) == list(study.LOWS)
    assert results["excess_2000_gates_kl0.1"].iloc[0] == pytest.approx(
        0.1 * 2000 * study.expected_kl_excess(study.LOWS[0]))
    assert json.loads((out / "manifest.json").read_text())["batch_size"] == 32
    assert "excess_per_unit" in (out / "report.md").read_text()
