"""Batch-means group summaries: exact per-group values, independent of chunking and workers."""

import numpy as np
import pytest
import torch

from estimator_lab.montecarlo import MomentAccumulator
from estimator_lab.montecarlo.groups import GroupSummaries


def feed(summary: GroupSummaries, draws: torch.Tensor, cuts, offset=0):
    start = 0
    for stop in [*cuts, draws.shape[0]]:
        if stop > start:
            summary.update({"w": draws[start:stop]}, first_index=offset + start)
        start = stop


def test_group_values_match_numpy_and_ignore_chunking():
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=(1000, 5)) + 3
    reference = np.full(5, 4.0)
    direct_w = [x[g * 100:(g + 1) * 100].var(0, ddof=1).sum() for g in range(10)]
    direct_b = [np.square(x[g * 100:(g + 1) * 100].mean(0) - reference).sum() - w / 100
                for g, w in enumerate(direct_w)]
    draws = torch.tensor(x)
    results = []
    for cuts in ([], list(range(1, 1000)), list(range(7, 1000, 7)), [256, 512, 768]):
        summary = GroupSummaries(100, references={"w": torch.tensor(reference)})
        feed(summary, draws, cuts)
        frame = summary.to_frame()
        np.testing.assert_allclose(frame["total_variance"], direct_w, rtol=1e-12)
        np.testing.assert_allclose(frame["squared_bias"], direct_b, rtol=1e-9, atol=1e-12)
        results.append(frame)
    numbers = ["group", "total_variance", "squared_bias"]
    for frame in results[1:]:
        np.testing.assert_allclose(frame[numbers].to_numpy(dtype=float),
                                   results[0][numbers].to_numpy(dtype=float), rtol=1e-12)


def test_workers_with_split_groups_merge_to_the_single_run():
    x = torch.tensor(np.random.default_rng(1).normal(size=(530, 3)))
    whole = GroupSummaries(50)
    feed(whole, x, [])
    first, second = GroupSummaries(50), GroupSummaries(50)
    feed(first, x[:273], [100], offset=0)  # group 5 is split between the two workers
    feed(second, x[273:], [], offset=273)
    first.merge(second)
    np.testing.assert_allclose(first.to_frame()["total_variance"],
                               whole.to_frame()["total_variance"], rtol=1e-12)
    assert len(whole.to_frame()) == 10  # draws 500..529 form no complete group


def test_accumulator_with_groups_needs_first_index_and_bad_sizes_raise():
    acc = MomentAccumulator(group_size=10)
    with pytest.raises(ValueError, match="first_index"):
        acc.update({"w": torch.ones(3, 2)})
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        GroupSummaries(1)
    with pytest.raises(ValueError, match="group sizes differ"):
        GroupSummaries(4).merge(GroupSummaries(5))
