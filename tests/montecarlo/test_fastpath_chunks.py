"""The fast path's statistics do not depend on the chunk size (1, 7, 256), its in-place Gram
sums are owned by one accumulator, and the float32 noise is rounded exactly as `Tensor.to`.

Everything but the noise test runs in float64 on a small conditional network, with seeded
noise: there is no randomized assertion. Chunks of 1, 7 and 256 cut the 260 draws differently
(256: one chunk across many batch-means groups, then a remainder of 4), so the sums are formed in
different orders and agree only to rounding: 1e-12 of each tensor's largest entry.
"""

from dataclasses import asdict
from functools import partial

import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.graphs import ConditionalConfig
from estimator_lab.montecarlo import run_draws
from estimator_lab.montecarlo.fastpath import restore_accumulator
from estimator_lab.noise import below_one_in
from estimator_lab.testing import conditional_problem

CONFIG = ConditionalConfig(num_inputs=20, num_gater_hidden=6, num_gates=12, num_classes=4)
NUM_DRAWS = 260
GROUP_SIZE = 10
RTOL = 1e-12  # relative to each tensor's largest entry; the observed gaps are ~1e-15


small_problem = partial(conditional_problem, batch_size=5, seed=3, **asdict(CONFIG))
"""The float64 network of `CONFIG`, output weights times 4, on 5 normal examples."""


@pytest.fixture(scope="module")
def runs():
    """The paired run of the variance study (reinforce against local-expectation, with
    batch-means groups and a reference for the expert weight), by chunk size."""
    net, batch = small_problem()
    estimators = {n: get_estimator(n) for n in ("reinforce", "local-expectation")}
    references = {"expert.weight": torch.full((CONFIG.num_gates * CONFIG.num_inputs,), 0.1,
                                              dtype=torch.float64)}
    return {chunk: run_draws(net, estimators, batch, num_draws=NUM_DRAWS, seed=5,
                             chunk_size=chunk, group_size=GROUP_SIZE, references=references,
                             paired_with="local-expectation")
            for chunk in (1, 7, 256)}


def assert_close_to(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    scale = float(b.abs().max())
    assert scale > 0, what  # an all-zero comparison would be vacuous
    torch.testing.assert_close(a, b, rtol=0, atol=RTOL * scale, msg=what)


@pytest.mark.parametrize("chunk", [1, 7])
def test_chunk_sizes_1_7_and_256_give_the_same_statistics(runs, chunk):
    got, expected = runs[chunk], runs[256]
    assert got.keys() == expected.keys() == {
        "reinforce", "local-expectation", "reinforce - local-expectation"}
    for name in expected:
        assert got[name].path == expected[name].path == "fast"
        for tensor in expected[name].names():
            a, b = got[name][tensor], expected[name][tensor]
            assert a.count == b.count == NUM_DRAWS
            if not bool(b.variance.any()):  # a pathwise gradient both estimators share
                assert not bool(a.mean.any() or a.variance.any()), (name, tensor)
                continue
            assert_close_to(a.mean, b.mean, f"{name} {tensor} mean")
            assert_close_to(a.variance, b.variance, f"{name} {tensor} variance")
        # Every batch-means group, the shared-input weights' among them.
        a, b = got[name].groups.to_frame(), expected[name].groups.to_frame()
        assert a[["name", "group"]].equals(b[["name", "group"]])
        assert set(b["group"]) == set(range(NUM_DRAWS // GROUP_SIZE))
        assert "expert.weight" in set(b["name"])
        for column in ("total_variance", "squared_bias"):
            x, y = torch.tensor(a[column].to_numpy()), torch.tensor(b[column].to_numpy())
            known = torch.isfinite(y)  # squared bias: NaN for names without a reference
            assert torch.equal(torch.isfinite(x), known), (name, column)
            if bool(known.any()):
                assert_close_to(x[known], y[known], f"{name} groups {column}")


def test_a_different_seed_changes_the_statistics(runs):
    """The comparison above can fail: another seed moves the means well past 1e-12."""
    net, batch = small_problem()
    other = run_draws(net, {"reinforce": get_estimator("reinforce")}, batch,
                      num_draws=NUM_DRAWS, seed=6, chunk_size=256)["reinforce"]
    mean = runs[256]["reinforce"]["expert.weight"].mean
    assert float((other["expert.weight"].mean - mean).abs().max()) > 1e-3 * float(
        mean.abs().max())


def test_in_place_sums_are_owned_by_one_accumulator():
    """A state dict taken mid-run, an accumulator restored from it and one merged into an
    empty one do not change when the first accumulator goes on adding draws."""
    net, batch = small_problem()
    estimators = {"reinforce": get_estimator("reinforce")}
    first = run_draws(net, estimators, batch, num_draws=20, seed=5, chunk_size=7)["reinforce"]
    rest = run_draws(net, estimators, batch, num_draws=20, seed=5, chunk_size=7,
                     first_draw=20)["reinforce"]
    state = first.state_dict()
    saved = {layer: g["gram"].clone() for layer, g in state["grams"].items()}
    restored = restore_accumulator(state)
    before = restored["expert.weight"].variance.clone()
    copy = restore_accumulator(first.state_dict())
    empty = restore_accumulator(first.state_dict())
    empty.grams.clear()
    empty.merge(copy)
    merged_before = empty["expert.weight"].variance.clone()
    first.merge(rest)  # the first accumulator changes ...
    assert first["expert.weight"].count == 40
    for layer, gram in saved.items():  # ... the others do not
        assert torch.equal(state["grams"][layer]["gram"], gram), layer
    assert torch.equal(restored["expert.weight"].variance, before)
    copy.merge(rest)
    assert torch.equal(empty["expert.weight"].variance, merged_before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_noise_is_rounded_as_tensor_to_and_kept_below_one(dtype):
    """Values around the rounding ties and just below 1, against `Tensor.to` then a clamp."""
    eps = torch.finfo(dtype).eps
    edges = torch.tensor([0.0, 2.0**-149, 0.1, 0.5, 0.5 + eps / 4, 0.5 + eps / 8,
                          1 - eps / 2, 1 - eps / 4, 1 - eps / 8, 1 - 2.0**-53],
                         dtype=torch.float64)
    values = torch.cat([edges, torch.rand(10_000, generator=torch.Generator().manual_seed(0),
                                          dtype=torch.float64)])
    got = below_one_in(values, dtype)
    expected = values.to(dtype).clamp_(max=1 - eps / 2)
    assert got.dtype == dtype
    assert torch.equal(got, expected)
    assert bool((got < 1).all())
