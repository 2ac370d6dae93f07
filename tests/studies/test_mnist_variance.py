"""The mnist_variance study: grouped fast-path moments against the generic engine, the
sparsity shift, the shared training snapshots, and a tiny end-to-end run on MNIST.

Every check is deterministic (the same seeded draws computed two ways, or a bisection);
none is statistical.
"""

import json

import pandas as pd
import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.montecarlo import run_draws
from estimator_lab.stats import SUMMARY_COLUMNS
from estimator_lab.studies.checkpoints import CheckpointConfig, training_checkpoints
from estimator_lab.studies.mnist_variance import (
    PARAMETER_GROUPS,
    REFERENCE,
    MnistVarianceConfig,
    measure_grouped,
    run_mnist_variance,
    shift_to_activity,
)
from estimator_lab.testing import conditional_problem


def _tiny_problem():
    """A float64 4-gate, 10-class net at its initialisation on 3 uniform inputs, labels 0, 1, 2."""
    graph, (x, _) = conditional_problem(num_gater_hidden=3, num_classes=10, output_scale=1.0,
                                        inputs="uniform", batch_seed=1)
    return graph, (x, torch.tensor([0, 1, 2]))


def _group_values(accumulator, store: str, group: str) -> dict[int, float]:
    """Batch-means values of a parameter group, summed over its tensors."""
    parts = [getattr(accumulator.groups, store)[t] for t in PARAMETER_GROUPS[group]]
    return {g: sum(p[g] for p in parts) for g in parts[0]}


def test_grouped_moments_are_those_of_the_generic_engine():
    graph, batch = _tiny_problem()
    estimators = {"reinforce": get_estimator("reinforce"), "st": get_estimator("st")}
    reference = {REFERENCE: get_estimator(REFERENCE)}
    ref_run, _ = measure_grouped(graph, reference, batch, groups=4, group_size=5, seed=9,
                                 keep_group_means=True)
    runs, differences = measure_grouped(graph, estimators, batch, groups=4, group_size=5,
                                        seed=0, reference=ref_run[REFERENCE])
    generic = run_draws(graph, estimators, batch, num_draws=20, seed=0, group_size=5)
    generic_ref = run_draws(graph, reference, batch, num_draws=20, seed=9, group_size=5,
                            chunk_size=5)[REFERENCE]
    for name in estimators:
        for group, tensors in PARAMETER_GROUPS.items():
            expected = _group_values(generic[name], "total_variance", group)
            measured = runs[name].groups.total_variance[group]
            assert measured == pytest.approx(expected, rel=1e-9), (name, group)
            mean = torch.cat([generic[name][t].mean for t in tensors])
            assert torch.allclose(runs[name][group].mean, mean, rtol=1e-9, atol=1e-14)
            variance = torch.cat([generic[name][t].variance for t in tensors])
            assert torch.allclose(runs[name][group].variance, variance, rtol=1e-8, atol=1e-14)
    # Group 1 of the difference: ||mean_1(st) - mean_1(r)||^2 - (W_st + W_r) / m.
    own = run_draws(graph, estimators, batch, num_draws=5, seed=0, first_draw=5)["st"]
    theirs = run_draws(graph, reference, batch, num_draws=5, seed=9, first_draw=5)[REFERENCE]
    for group, tensors in PARAMETER_GROUPS.items():
        gap = torch.cat([own[t].mean - theirs[t].mean for t in tensors])
        spread = sum(float(own[t].variance.sum() + theirs[t].variance.sum()) for t in tensors)
        assert differences["st"].groups.squared_bias[group][1] == pytest.approx(
            float(gap.square().sum()) - spread / 5, rel=1e-7, abs=1e-15), group
    assert runs["st"].groups.squared_bias == {}  # only difference runs carry squared bias
    reference_means = torch.cat([generic_ref[t].mean for t in PARAMETER_GROUPS["gater_out"]])
    assert torch.allclose(ref_run[REFERENCE]["gater_out"].mean, reference_means, rtol=1e-9)


def test_grouped_moments_refuse_a_reference_without_group_means():
    graph, batch = _tiny_problem()
    estimator = {"st": get_estimator("st")}
    run, _ = measure_grouped(graph, estimator, batch, groups=2, group_size=2, seed=0)
    with pytest.raises(ValueError, match="must keep the means of its 2 groups"):
        measure_grouped(graph, estimator, batch, groups=2, group_size=2, seed=0,
                        reference=run["st"])
    with pytest.raises(ValueError, match="at least 2 groups"):
        measure_grouped(graph, estimator, batch, groups=1, group_size=2, seed=0)


@pytest.mark.parametrize("target", [0.5, 0.1, 0.02])
def test_the_bias_shift_sets_the_mean_gate_activity(target):
    graph, batch = _tiny_problem()
    delta = shift_to_activity(graph, batch, target)
    with torch.no_grad():
        activity = torch.sigmoid(graph.logits(batch) + delta).mean()
    assert float(activity) == pytest.approx(target, rel=1e-9)


@pytest.mark.network
def test_snapshots_are_trained_once_and_then_read_from_the_cache(mnist_env, tmp_path):
    config = CheckpointConfig(epochs=(0, 2), train_size=64)
    first = training_checkpoints(config, cache_dir=tmp_path)
    again = training_checkpoints(config, cache_dir=tmp_path)
    assert first.trained and not again.trained
    assert again.log == json.loads(json.dumps(first.log))
    assert [row["epoch"] for row in first.log] == [0, 2]
    assert first.log[1]["train_loss"] > 0 and 0 <= first.log[1]["valid_error"] <= 100
    states = [torch.load(first.files[e], weights_only=True) for e in (0, 2)]
    assert not torch.equal(states[0]["gater_out.weight"], states[1]["gater_out.weight"])
    with pytest.raises(ValueError, match="distinct, increasing"):
        CheckpointConfig(epochs=(3, 1))


@pytest.mark.network
def test_a_tiny_run_writes_the_report(mnist_env, tmp_path, assert_rebuilt_identically):
    config = MnistVarianceConfig(
        checkpoints=CheckpointConfig(epochs=(0, 1), train_size=64),
        estimators=("reinforce", "st", "sts"), groups=2, group_size=3, warmup_steps=2,
        sparsity_targets=(0.1,), sparsity_estimators=("st",), temperatures=(0.5,),
        temperature_estimators=("gumbel",))
    folder = run_mnist_variance(config, tmp_path / "mv").parent
    summary = pd.read_csv(folder / "summary.csv")
    assert list(summary.columns) == ["epoch", "estimator", "parameter", "target",
                                     *list(SUMMARY_COLUMNS)[2:]]
    assert set(summary["estimator"]) == {"reinforce", "st", "sts", REFERENCE}
    assert set(summary["parameter"]) == set(PARAMETER_GROUPS)
    assert summary.groupby(["epoch", "estimator"])["numel"].sum().unique().tolist() == [
        2_706_010 + 32 * 2000]
    assert set(summary.loc[summary["estimator"] == "sts", "target"]) == {"sts"}
    sparsity = pd.read_csv(folder / "sparsity.csv")
    assert sparsity["activity"].tolist() == pytest.approx([0.1] * len(sparsity))
    temperature = pd.read_csv(folder / "temperature.csv")
    assert set(temperature["estimator"]) == {"gumbel"}
    text = (folder / "report.md").read_text()
    assert "its own sts gates" in text and "Rank by gate-logit MSE" in text
    assert_rebuilt_identically(folder)
