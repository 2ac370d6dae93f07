"""Streaming moments: exact agreement with numpy on merged chunks, float32 input, edge cases.

Float64 data keep the reference statistics well conditioned, so a relative tolerance of
1e-12 is meaningful. The relative error of a computed mean is about `eps * kappa`, with
`kappa = sum|x| / |sum x|`. With `kappa` large (a column whose mean is near zero but whose
values are not), even numpy's own mean is only good to about 1e-13 relative. So every column
here has a mean far from zero: normal columns with loc 5 and scale <= 3, a lognormal column and
a shifted half-Cauchy column (heavy tails, but positive, so `kappa = 1`). M2 is a sum of
squares, so the variance is well conditioned whatever the data.
"""

import numpy as np
import pytest
import torch

from estimator_lab.montecarlo import MomentAccumulator, Moments, merge_moments, moments_of

NUM_ROWS, NUM_COLS = 1000, 37
SEEDS = [0, 1, 2, 3, 4, 5]


def make_data(seed: int) -> np.ndarray:
    """A 1000 x 37 float64 array: normal columns with various scales, two heavy-tailed ones."""
    rng = np.random.default_rng(seed)
    scales = rng.choice([1e-2, 0.1, 1.0, 3.0], size=NUM_COLS)
    x = rng.normal(loc=5.0, scale=scales, size=(NUM_ROWS, NUM_COLS))
    x[:, 0] = rng.lognormal(mean=0.0, sigma=2.0, size=NUM_ROWS)
    x[:, 1] = 5.0 + np.abs(rng.standard_cauchy(size=NUM_ROWS))
    return x


def random_chunks(x: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """`x` split at random rows into 1..20 chunks, with some size-1 chunks among them."""
    num_chunks = int(rng.integers(1, 21))
    cuts = set(rng.choice(np.arange(1, len(x)), size=num_chunks - 1, replace=False).tolist())
    if num_chunks >= 3:  # force a size-1 chunk at the start and the end
        cuts |= {1, len(x) - 1}
    chunks = np.split(x, sorted(cuts))
    assert sum(len(c) for c in chunks) == len(x)
    return chunks


def assert_matches_numpy(moments: Moments, x: np.ndarray, rtol: float = 1e-12) -> None:
    assert moments.count == len(x)
    assert moments.mean.dtype == torch.float64 and moments.m2.dtype == torch.float64
    np.testing.assert_allclose(moments.mean.numpy(), x.mean(0), rtol=rtol, atol=0)
    np.testing.assert_allclose(moments.variance.numpy(), x.var(0, ddof=1), rtol=rtol, atol=0)
    se = np.sqrt(x.var(0, ddof=1) / len(x))
    np.testing.assert_allclose(moments.standard_error.numpy(), se, rtol=rtol, atol=0)


def merge_randomly(items: list, merge, rng: np.random.Generator):
    """Merges `items` pairwise in a random order, so the merge tree has a random shape."""
    items = list(items)
    while len(items) > 1:
        i, j = rng.choice(len(items), size=2, replace=False)
        merged = merge(items[i], items[j])
        items = [item for k, item in enumerate(items) if k not in (i, j)] + [merged]
    return items[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_sequential_updates_match_numpy(seed):
    x = make_data(seed)
    chunks = random_chunks(x, np.random.default_rng(1000 + seed))
    acc = MomentAccumulator()
    for chunk in chunks:
        acc.update({"w": torch.from_numpy(chunk)})
    assert_matches_numpy(acc["w"], x)


@pytest.mark.parametrize("seed", SEEDS)
def test_merged_accumulators_match_numpy(seed):
    x = make_data(seed)
    rng = np.random.default_rng(2000 + seed)
    accumulators = []
    for chunk in random_chunks(x, rng):
        acc = MomentAccumulator()
        acc.update({"w": torch.from_numpy(chunk)})
        accumulators.append(acc)

    def merge(a, b):
        a.merge(b)
        return a

    assert_matches_numpy(merge_randomly(accumulators, merge, rng)["w"], x)


@pytest.mark.parametrize("seed", SEEDS)
def test_pure_functions_match_numpy(seed):
    x = make_data(seed)
    rng = np.random.default_rng(3000 + seed)
    parts = [moments_of(torch.from_numpy(c)) for c in random_chunks(x, rng)]
    assert_matches_numpy(merge_randomly(parts, merge_moments, rng), x)


def test_single_chunk_and_row_by_row_match_numpy():
    x = make_data(7)[:200]
    whole = MomentAccumulator()
    whole.update({"w": torch.from_numpy(x)})
    assert_matches_numpy(whole["w"], x)
    rows = MomentAccumulator()
    for row in x:
        rows.update({"w": torch.from_numpy(row[None])})
    assert_matches_numpy(rows["w"], x)


def test_float32_chunks_match_float64_statistics_of_the_same_values():
    rng = np.random.default_rng(11)
    scales = rng.choice([1e-2, 0.1, 1.0, 3.0], size=NUM_COLS)
    x32 = rng.normal(loc=5.0, scale=scales, size=(NUM_ROWS, NUM_COLS)).astype(np.float32)
    x32[:, 0] = rng.lognormal(mean=0.0, sigma=1.0, size=NUM_ROWS)
    x = x32.astype(np.float64)  # the reference: exact float64 statistics of the float32 values
    acc = MomentAccumulator()
    for chunk in random_chunks(x32, rng):
        acc.update({"w": torch.from_numpy(chunk)})
    moments = acc["w"]
    assert moments.mean.dtype == torch.float64 and moments.m2.dtype == torch.float64
    # Sums of `x - shift` run in float32 (eps = 1.2e-7). `x - shift` is exact (Sterbenz) when
    # the shift is near the data, so each term carries one rounding and a sum of K terms adds
    # about log2(K) more: the error is ~10 eps ~ 1e-6 of the spread. The shift is the first
    # draw of the first chunk, then the running mean, so M2 loses nothing to cancellation.
    # 1e-5 leaves a 10x margin (over 300 seeds of this recipe the worst errors were 4e-7 of
    # the std for the mean and 2e-6 relative for the variance). The mean is compared against
    # the column's standard deviation: its error is that of the shifted sum, not of |mean|.
    std = x.std(0, ddof=1)
    mean_error = np.abs(moments.mean.numpy() - x.mean(0))
    assert (mean_error <= 1e-5 * std).all(), (mean_error / std).max()
    np.testing.assert_allclose(moments.variance.numpy(), x.var(0, ddof=1), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_overwrite_gives_the_same_result_and_only_then_clobbers_the_input(dtype):
    x = torch.from_numpy(make_data(3)).to(dtype)
    chunks = [x[:1], x[1:300], x[300:301], x[301:]]
    kept, clobbered = MomentAccumulator(), MomentAccumulator()
    for chunk in chunks:
        before = chunk.clone()
        kept.update({"w": chunk}, overwrite=False)
        assert torch.equal(chunk, before)
        scratch = chunk.clone()
        clobbered.update({"w": scratch}, overwrite=True)
        assert torch.equal(chunk, before)
    assert torch.equal(kept["w"].mean, clobbered["w"].mean)
    assert torch.equal(kept["w"].m2, clobbered["w"].m2)
    # overwrite=False also leaves the input alone in the pure function, shift or no shift.
    before = x.clone()
    moments_of(x)
    moments_of(x, shift=x.mean(0))
    assert torch.equal(x, before)


def test_variance_is_nan_for_a_single_draw():
    moments = moments_of(torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64))
    assert moments.count == 1
    assert torch.equal(moments.mean, torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    assert torch.equal(moments.m2, torch.zeros(3, dtype=torch.float64))
    assert torch.isnan(moments.variance).all()
    assert torch.isnan(moments.standard_error).all()
    acc = MomentAccumulator()
    acc.update({"w": torch.tensor([[4.0]])})
    assert torch.isnan(acc["w"].variance).all()


def test_docstring_example():
    acc = MomentAccumulator()
    acc.update({"w": torch.tensor([[1.0], [3.0]])})
    acc.update({"w": torch.tensor([[5.0]])})
    assert (acc["w"].mean.item(), acc["w"].variance.item()) == (3.0, 4.0)


def test_merging_with_an_empty_side():
    x = torch.from_numpy(make_data(5)[:50])
    full = moments_of(x)
    zeros = torch.zeros(NUM_COLS, dtype=torch.float64)
    empty = Moments(0, zeros, zeros.clone())
    assert merge_moments(full, empty) is full
    assert merge_moments(empty, full) is full

    acc = MomentAccumulator()
    acc.update({"w": x})
    acc.merge(MomentAccumulator())
    assert acc.names() == ["w"]
    assert acc["w"] is acc.compute()["w"]
    assert torch.equal(acc["w"].mean, full.mean) and torch.equal(acc["w"].m2, full.m2)

    fresh = MomentAccumulator()
    fresh.merge(acc)
    assert fresh.names() == ["w"]
    assert torch.equal(fresh["w"].mean, full.mean) and torch.equal(fresh["w"].m2, full.m2)
    assert MomentAccumulator().names() == [] and MomentAccumulator().compute() == {}


def test_merging_mismatched_shapes_raises_value_error():
    a = moments_of(torch.rand(5, 3, dtype=torch.float64))
    b = moments_of(torch.rand(5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="shapes"):
        merge_moments(a, b)
    left, right = MomentAccumulator(), MomentAccumulator()
    left.update({"w": torch.rand(5, 3)})
    right.update({"w": torch.rand(5, 4)})
    with pytest.raises(ValueError):
        left.merge(right)


def test_update_with_a_wider_chunk_raises():
    acc = MomentAccumulator()
    acc.update({"w": torch.rand(5, 3)})
    with pytest.raises(ValueError, match="coordinates per draw"):
        acc.update({"w": torch.rand(5, 4)})


def test_update_with_a_one_column_chunk_for_a_wider_tensor_raises():
    acc = MomentAccumulator()
    acc.update({"w": torch.rand(5, 3, dtype=torch.float64)})
    with pytest.raises(ValueError, match="chunk has 1 coordinates per draw"):
        acc.update({"w": torch.rand(5, 1, dtype=torch.float64)})


@pytest.mark.parametrize(
    "draws",
    [torch.rand(5), torch.rand(2, 3, 4), torch.tensor(1.0), torch.empty(0, 3)],
    ids=["1d", "3d", "0d", "empty"],
)
def test_moments_of_rejects_non_2d_and_empty_draws(draws):
    with pytest.raises(ValueError, match="non-empty K x d"):
        moments_of(draws)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_draws_raise(dtype):
    draws = torch.ones(4, 3, dtype=dtype)
    with pytest.raises(TypeError, match="floating point"):
        moments_of(draws)
    with pytest.raises(TypeError):
        MomentAccumulator().update({"w": draws})


def test_update_rejects_an_empty_chunk():
    acc = MomentAccumulator()
    with pytest.raises(ValueError, match="non-empty"):
        acc.update({"w": torch.empty(0, 3)})
    assert acc.names() == []


def test_multi_tensor_accumulator_flattens_and_keeps_first_seen_order():
    rng = np.random.default_rng(21)
    w = rng.normal(5.0, 1.0, size=(30, 4, 3))
    b = rng.normal(-5.0, 0.1, size=(30, 4))
    s = rng.normal(5.0, 2.0, size=(30,))
    acc = MomentAccumulator()
    for start, stop in [(0, 1), (1, 12), (12, 30)]:
        acc.update({
            "w": torch.from_numpy(w[start:stop]),
            "b": torch.from_numpy(b[start:stop]),
            "s": torch.from_numpy(s[start:stop]),
        })
    assert acc.names() == ["w", "b", "s"]
    assert list(acc.compute()) == ["w", "b", "s"]
    assert acc["w"].mean.shape == (12,) and acc["b"].mean.shape == (4,)
    assert acc["s"].mean.shape == (1,)
    assert_matches_numpy(acc["w"], w.reshape(30, 12))
    assert_matches_numpy(acc["b"], b)
    assert_matches_numpy(acc["s"], s.reshape(30, 1))
    # A tensor that first appears in a later chunk starts its own count.
    acc.update({"late": torch.from_numpy(w[:5])})
    assert acc.names() == ["w", "b", "s", "late"]
    assert acc["late"].count == 5 and acc["w"].count == 30


def test_non_contiguous_chunks_are_flattened_row_by_row():
    x = torch.from_numpy(np.random.default_rng(4).normal(5.0, 1.0, size=(3, 4, 20)))
    chunk = x.permute(2, 0, 1)  # 20 x 3 x 4, non-contiguous
    expected = chunk.reshape(20, 12).numpy().copy()  # overwrite=True may clobber `x`
    acc = MomentAccumulator()
    acc.update({"w": chunk}, overwrite=True)
    assert_matches_numpy(acc["w"], expected)
