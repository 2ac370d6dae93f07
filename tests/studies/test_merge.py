"""Sharded variance runs: partials of draw ranges merge into the statistics of one run, and
partials of different runs or with overlapping or missing ranges are refused in one line.

No randomness is asserted on: every run is seeded, and merged and whole runs make the very
same draws, so their statistics agree to float64 rounding of the merge (1e-12 relative).
"""

import pandas as pd
import pytest
import torch

from estimator_lab.studies.variance import VarianceConfig, merge_partials, run_variance

GRAPH = "tiny-conditional:gates=6,hidden=4,batch=3"
NUMBERS = ["draws", "mean_variance", "total_variance", "total_variance_low",
           "total_variance_high", "mean_norm", "squared_bias", "squared_bias_low",
           "squared_bias_high"]


def config(**changes):
    base = dict(graph=GRAPH, estimators=("reinforce", "st"), draws=120, group_size=10,
                seed=3, chunk_size=7, device="cpu")
    return VarianceConfig(**(base | changes))


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    run_variance(config(), out)
    return out


def shards(tmp_path, ranges, **changes):
    parts = []
    for i, (start, stop) in enumerate(ranges):
        part = tmp_path / f"part{i}"
        written = run_variance(config(draw_range=(start, stop), **changes), part)
        assert written == part / "partial.pt"
        torch.load(written, weights_only=True)  # plain containers and tensors only
        parts.append(part)
    return parts


def assert_same_statistics(a, b):
    for table, columns in (("summary.csv", NUMBERS), ("gates.csv", ["mean", "variance"]),
                           ("ratios.csv", ["variance_ratio", "ratio_low", "ratio_high"])):
        x, y = pd.read_csv(a / table), pd.read_csv(b / table)
        assert len(x) == len(y) > 0
        pd.testing.assert_frame_equal(x[columns], y[columns], rtol=1e-12, atol=0)


@pytest.mark.parametrize("ranges", [[(0, 40), (40, 80), (80, 120)],  # whole groups
                                    [(0, 33), (33, 101), (101, 120)]])  # groups cut
def test_three_shards_merge_into_the_whole_run(tmp_path, whole, ranges):
    parts = shards(tmp_path, ranges)
    merged = merge_partials(list(reversed(parts)), tmp_path / "merged")
    assert_same_statistics(whole, merged.parent)
    assert "merged_from" in (merged.parent / "manifest.json").read_text()


@pytest.mark.parametrize("chunk_size", [1, 256])
def test_the_chunk_size_does_not_change_the_statistics(tmp_path, whole, chunk_size):
    out = tmp_path / "run"
    run_variance(config(chunk_size=chunk_size), out)
    assert_same_statistics(whole, out)


def test_mismatched_partials_are_refused_in_one_line(tmp_path):
    a = shards(tmp_path / "a", [(0, 60)])
    other_seed = shards(tmp_path / "b", [(60, 120)], seed=4)
    with pytest.raises(ValueError, match=r"is from another run .*\(differs in seed\b"):
        merge_partials(a + other_seed, tmp_path / "out")
    other_estimators = shards(tmp_path / "c", [(60, 120)], estimators=("reinforce",))
    with pytest.raises(ValueError, match=r"differs in estimators"):
        merge_partials(a + other_estimators, tmp_path / "out")
    overlapping = shards(tmp_path / "d", [(50, 120)])
    with pytest.raises(ValueError, match=r"draws 50:120 overlaps the previous range"):
        merge_partials(a + overlapping, tmp_path / "out")
    gapped = shards(tmp_path / "e", [(70, 120)])
    with pytest.raises(ValueError, match=r"leaves a gap"):
        merge_partials(a + gapped, tmp_path / "out")
    with pytest.raises(ValueError, match=r"draws 60:120 are missing"):
        merge_partials(a, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_draw_range_outside_the_draws_is_refused():
    with pytest.raises(ValueError, match="must satisfy 0 <= START < STOP <= draws"):
        config(draw_range=(100, 130))
