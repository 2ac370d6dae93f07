"""The fast path: Gram sums against explicit weight gradients, and against `run_draws`.

Everything runs in float64, where the fast path and the generic engine compute the same
statistics by different sums: they agree to ~1e-15 relative, so 1e-10 leaves room only for
rounding. Draw noise is seeded: there is no randomized assertion here.
"""

from dataclasses import asdict
from functools import partial

import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.estimators.registry import available
from estimator_lab.graphs import ConditionalConfig
from estimator_lab.graphs.toy import ToyGraph
from estimator_lab.montecarlo import GATE_LOGITS, run_draws
from estimator_lab.montecarlo.engine import NonFiniteDrawError
from estimator_lab.montecarlo.fastpath import (
    FastAccumulator,
    gram_moments_of,
    merge_gram_moments,
    weight_moments,
)
from estimator_lab.montecarlo.runner import fast_moments
from estimator_lab.stats.summary import summary_frame
from estimator_lab.testing import conditional_problem

CONFIG = ConditionalConfig(num_inputs=20, num_gater_hidden=6, num_gates=12, num_classes=4)
BATCH_SIZE = 5
NUM_DRAWS = 60
SEED = 11
PARAMETER_NAMES = [
    "gater_hidden.weight", "gater_hidden.bias", "gater_out.weight", "gater_out.bias",
    "expert.weight", "expert.bias", "output.weight", "output.bias",
]
RTOL = 1e-10  # relative to the largest entry of each tensor; the observed gaps are ~1e-15


small_problem = partial(conditional_problem, batch_size=BATCH_SIZE, **asdict(CONFIG))
"""The float64 network of `CONFIG`, output weights times 4, on `BATCH_SIZE` normal examples."""


@pytest.fixture(scope="module")
def problem():
    return small_problem()


def assert_moments_close(got, expected, rtol=RTOL, what=""):
    """Same count, and mean and variance within `rtol` of the largest entry."""
    assert got.count == expected.count, what
    for field in ("mean", "variance"):
        a, b = getattr(got, field), getattr(expected, field)
        assert a.shape == b.shape, (what, field)
        scale = float(b.abs().max())
        assert scale > 0, (what, field)  # a test of an all-zero tensor would be vacuous
        torch.testing.assert_close(a, b, rtol=0, atol=rtol * scale, msg=f"{what} {field}")


def assert_runs_close(got, expected, rtol=RTOL):
    assert got.names() == expected.names()
    for name in expected.names():
        assert_moments_close(got[name], expected[name], rtol, what=name)


# --- the Gram algebra, against explicit per-draw weight gradients -------------------------


def explicit_weight_draws(deltas, inputs):
    """`K x out x in` weight gradients `Delta_k^T H`."""
    return torch.einsum("kbo,bi->koi", deltas, inputs)


def random_deltas(seed, count=40, batch=4, out=3, offset=0.0):
    generator = torch.Generator().manual_seed(seed)
    deltas = torch.randn(count, batch, out, generator=generator, dtype=torch.float64) + offset
    inputs = torch.randn(batch, 5, generator=generator, dtype=torch.float64)
    return deltas, inputs


@pytest.mark.parametrize("offset", [0.0, 1e4], ids=["centred", "far-from-zero"])
def test_weight_moments_equal_the_two_pass_moments_of_explicit_gradients(offset):
    # A mean 1e4 times the spread: without the shift, E[G^2] - E[G]^2 would lose ~8 digits.
    deltas, inputs = random_deltas(0, offset=offset)
    draws = explicit_weight_draws(deltas, inputs).flatten(1)
    moments = weight_moments(gram_moments_of(deltas), inputs)
    assert moments.count == 40
    torch.testing.assert_close(moments.mean, draws.mean(0), rtol=1e-13, atol=0)
    torch.testing.assert_close(moments.variance, draws.var(0), rtol=1e-9, atol=0)


def test_merge_of_gram_sums_about_different_shifts_equals_the_sums_of_the_union():
    deltas, inputs = random_deltas(1, count=30, offset=2.0)
    whole = gram_moments_of(deltas)
    a = gram_moments_of(deltas[:7])  # shift: draw 0
    b = gram_moments_of(deltas[7:])  # shift: draw 7, recentred onto draw 0 by the merge
    merged = merge_gram_moments(a, b)
    assert merged.count == 30
    assert torch.equal(merged.shift, whole.shift)
    torch.testing.assert_close(merged.total, whole.total, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merged.gram, whole.gram, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        weight_moments(merged, inputs).variance, weight_moments(whole, inputs).variance,
        rtol=1e-12, atol=0,
    )
    # Chunks about one shift (the accumulator's case) add directly.
    c = gram_moments_of(deltas[7:], shift=a.shift)
    torch.testing.assert_close(merge_gram_moments(a, c).gram, whole.gram, rtol=1e-12, atol=1e-12)


def test_gram_sums_reject_bad_shapes():
    with pytest.raises(ValueError, match="K x B x out"):
        gram_moments_of(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="K x B x out"):
        gram_moments_of(torch.zeros(0, 2, 3))
    a, b = gram_moments_of(torch.ones(2, 2, 3)), gram_moments_of(torch.ones(2, 2, 4))
    with pytest.raises(ValueError, match="cannot merge"):
        merge_gram_moments(a, b)


# --- fast_moments against run_draws -------------------------------------------------------


@pytest.mark.parametrize("name", ["reinforce", "st", "local-expectation"])
def test_fast_path_matches_the_generic_engine(problem, name):
    net, batch = problem
    estimators = {name: get_estimator(name)}
    kwargs = {"num_draws": NUM_DRAWS, "seed": SEED, "chunk_size": 16}
    fast = fast_moments(net, estimators, batch, **kwargs)[name]
    generic = run_draws(net, estimators, batch, path="generic", **kwargs)[name]
    assert isinstance(fast, FastAccumulator)
    assert fast.names() == [GATE_LOGITS, *PARAMETER_NAMES]
    assert_runs_close(fast, generic)
    # The weights of shared-input layers are never held per draw: Gram sums, `out x B x B`.
    assert set(fast.grams) == {"gater_hidden", "gater_out", "expert"}
    assert fast.grams["expert"].gram.shape == (CONFIG.num_gates, BATCH_SIZE, BATCH_SIZE)
    assert fast["expert.weight"].mean.shape == (CONFIG.num_gates * CONFIG.num_inputs,)
    assert fast.elapsed_s > 0


NEEDS_ARGUMENTS = {"reinforce-oracle"}  # its baseline values come from the caller
VMAP_ESTIMATORS = [
    n for n in available() if n not in NEEDS_ARGUMENTS and get_estimator(n).supports_vmap
]


def test_the_vmap_estimators_include_the_paper_s():
    assert {"reinforce", "st", "local-expectation"} <= set(VMAP_ESTIMATORS)


@pytest.mark.parametrize("name", VMAP_ESTIMATORS)
def test_every_vmap_estimator_matches_the_generic_engine(problem, name):
    """The fast path assumes parameters reach the surrogate only through the layer outputs:
    every registered estimator that supports vmap must agree with the generic engine."""
    net, batch = problem
    estimators = {name: get_estimator(name)}
    kwargs = {"num_draws": 12, "seed": SEED, "chunk_size": 5}
    fast = fast_moments(net, estimators, batch, **kwargs)
    generic = run_draws(net, estimators, batch, path="generic", **kwargs)
    assert_runs_close(fast[name], generic[name])


def test_chunk_size_does_not_change_the_moments(problem):
    net, batch = problem
    estimators = {n: get_estimator(n) for n in ("reinforce", "st")}
    num_draws = 16
    runs = {
        chunk: fast_moments(net, estimators, batch, num_draws=num_draws, seed=SEED,
                            chunk_size=chunk)
        for chunk in (1, 7, 64)  # 64 > num_draws: one chunk holds every draw
    }
    for name in estimators:
        for chunk in (1, 7):
            assert_runs_close(runs[chunk][name], runs[64][name], rtol=1e-12)
    # A different seed gives different moments (the comparison above can fail).
    other = fast_moments(net, estimators, batch, num_draws=num_draws, seed=SEED + 1)
    weight = "expert.weight"
    assert not torch.allclose(other["st"][weight].mean, runs[64]["st"][weight].mean)


def test_shares_of_a_run_merge_into_the_whole_run(problem):
    net, batch = problem
    estimators = {"reinforce": get_estimator("reinforce")}
    whole = fast_moments(net, estimators, batch, num_draws=NUM_DRAWS, seed=SEED, chunk_size=8)
    first = fast_moments(net, estimators, batch, num_draws=23, seed=SEED, chunk_size=8)
    rest = fast_moments(net, estimators, batch, num_draws=NUM_DRAWS - 23, seed=SEED,
                        chunk_size=8, first_draw=23)
    merged = first["reinforce"]
    merged.merge(rest["reinforce"])
    assert merged["expert.weight"].count == NUM_DRAWS
    assert_runs_close(merged, whole["reinforce"], rtol=1e-12)


def test_merge_rejects_accumulators_of_another_batch(problem):
    net, batch = problem
    estimators = {"st": get_estimator("st")}
    a = fast_moments(net, estimators, batch, num_draws=3, seed=0)["st"]
    x, y = batch
    b = fast_moments(net, estimators, (x + 1, y), num_draws=3, seed=0)["st"]
    with pytest.raises(ValueError, match="different layer inputs"):
        a.merge(b)


def test_summary_frame_reads_fast_accumulators_like_generic_ones(problem):
    net, batch = problem
    estimators = {n: get_estimator(n) for n in ("reinforce", "st")}
    kwargs = {"num_draws": 20, "seed": SEED, "chunk_size": 8}
    fast = summary_frame(fast_moments(net, estimators, batch, **kwargs))
    generic = summary_frame(run_draws(net, estimators, batch, path="generic", **kwargs))
    assert list(fast.columns) == list(generic.columns)
    assert fast[["estimator", "parameter", "numel", "draws"]].equals(
        generic[["estimator", "parameter", "numel", "draws"]])
    for column in ("mean_variance", "total_variance", "mean_norm", "signal_norm", "snr"):
        torch.testing.assert_close(torch.tensor(fast[column].to_numpy()),
                                   torch.tensor(generic[column].to_numpy()),
                                   rtol=1e-10, atol=0, msg=column)


# --- run_draws chooses the fast path, with every option -----------------------------------


def test_run_draws_takes_the_fast_path_by_itself_and_records_it(problem):
    net, batch = problem
    runs = run_draws(net, {"st": get_estimator("st")}, batch, num_draws=4, seed=0)
    assert runs["st"].path == "fast" and isinstance(runs["st"], FastAccumulator)
    toy = ToyGraph([0.0, 1.0], target=0.45)
    assert run_draws(toy, {"st": get_estimator("st")}, toy.example_batch(), num_draws=4,
                     seed=0)["st"].path == "generic"
    assert run_draws(net, {"st": get_estimator("st")}, batch, num_draws=4, seed=0,
                     method="loop")["st"].path == "generic"
    only_logits = run_draws(net, {"st": get_estimator("st")}, batch, num_draws=4, seed=0,
                            parameters=[])
    assert only_logits["st"].path == "generic"  # no shared-input weight to save on


def assert_groups_close(fast, generic, rtol):
    a, b = fast.groups.to_frame(), generic.groups.to_frame()
    assert a[["name", "group"]].equals(b[["name", "group"]]) and len(a) > 0
    for column in ("total_variance", "squared_bias"):
        x, y = torch.tensor(a[column].to_numpy()), torch.tensor(b[column].to_numpy())
        known = torch.isfinite(y)  # squared bias: NaN for names without a reference
        assert torch.equal(torch.isfinite(x), known) and bool(known.any()), column
        scale = float(y[known].abs().max())
        torch.testing.assert_close(x[known], y[known], rtol=0, atol=rtol * scale, msg=column)


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_the_paths_agree_with_pairing_groups_and_references(problem, chunk_size):
    """The two paths agree to 1e-10 of the largest entry (float64) on the moments, the paired
    differences and every batch-means group (total variance and squared bias, against a
    reference and against zero for the pairs), whatever the chunk size."""
    net, batch = problem
    estimators = {n: get_estimator(n) for n in ("reinforce", "st", "local-expectation")}
    references = {"expert.weight": torch.ones(CONFIG.num_gates * CONFIG.num_inputs,
                                              dtype=torch.float64),
                  "gater_hidden.weight": torch.zeros(CONFIG.num_gater_hidden * CONFIG.num_inputs,
                                                     dtype=torch.float64)}
    options = dict(num_draws=NUM_DRAWS, seed=SEED, group_size=8, references=references,
                   paired_with="local-expectation")
    fast = run_draws(net, estimators, batch, chunk_size=chunk_size, **options)
    generic = run_draws(net, estimators, batch, chunk_size=16, path="generic", **options)
    assert fast.keys() == generic.keys() == {*estimators, "reinforce - local-expectation",
                                             "st - local-expectation"}
    for name in fast:
        assert fast[name].path == "fast" and generic[name].path == "generic"
        assert fast[name].names() == generic[name].names()
        for tensor in generic[name].names():
            a, b = fast[name][tensor], generic[name][tensor]
            if " - " in name and not bool(b.variance.any()):
                # st and local-expectation share their expert gradients: exactly zero
                assert not bool(a.mean.any() or a.variance.any()), (name, tensor)
                continue
            assert_moments_close(a, b, what=f"{name} {tensor}")
        assert_groups_close(fast[name], generic[name], RTOL)


def test_the_paths_agree_on_higher_moments(problem):
    net, batch = problem
    estimators = {"reinforce": get_estimator("reinforce")}
    options = dict(num_draws=30, seed=SEED, chunk_size=7, higher_moments=True)
    fast = run_draws(net, estimators, batch, **options)["reinforce"]
    generic = run_draws(net, estimators, batch, path="generic", **options)["reinforce"]
    assert fast.path == "fast"
    for name in generic.names():
        for field in ("m3", "m4"):
            a, b = getattr(fast[name], field), getattr(generic[name], field)
            torch.testing.assert_close(a, b, rtol=0, atol=RTOL * float(b.abs().max()),
                                       msg=f"{name} {field}")


def test_the_paths_agree_in_float32_to_1e_6():
    """The paper's setting (float32 draws, float64 moments): the paths sum the same float32
    draws in different orders, so they agree to float32 rounding, well within 1e-6 relative
    (of each tensor's largest entry)."""
    net, batch = small_problem()
    net = net.float()
    batch = (batch[0].float(), batch[1])
    estimators = {n: get_estimator(n) for n in ("reinforce", "st")}
    fast = run_draws(net, estimators, batch, num_draws=40, seed=SEED, chunk_size=8)
    generic = run_draws(net, estimators, batch, num_draws=40, seed=SEED, chunk_size=8,
                        path="generic")
    for name in estimators:
        assert_runs_close(fast[name], generic[name], rtol=1e-6)


# --- errors ---------------------------------------------------------------------------------


def test_graph_without_shared_input_layers_raises():
    toy = ToyGraph([0.0, 1.0], target=0.45)
    with pytest.raises(ValueError, match="declares no shared-input layers"):
        fast_moments(toy, {"st": get_estimator("st")}, toy.example_batch(), num_draws=2, seed=0)


def test_estimator_without_vmap_raises(problem):
    net, batch = problem

    class Looped(type(get_estimator("st"))):
        supports_vmap = False

    with pytest.raises(ValueError, match="does not support vmap"):
        fast_moments(net, {"looped": Looped()}, batch, num_draws=2, seed=0)


def test_an_estimator_that_reads_shared_weights_directly_is_refused(problem):
    """Negative control: the decomposition misses a direct use of a shared-input weight, and
    the first-draw check against autograd catches it."""
    net, batch = problem
    straight_through = type(get_estimator("st"))

    class ReadsExpertWeights(straight_through):
        def surrogate(self, graph, prepared, noise, state):
            penalty = 0.1 * graph.expert.weight.square().sum()  # not through prepare
            return super().surrogate(graph, prepared, noise, state) + penalty

    estimators = {"reads-weights": ReadsExpertWeights()}
    with pytest.raises(ValueError, match="'reads-weights'.*expert.weight is not Delta"):
        fast_moments(net, estimators, batch, num_draws=4, seed=0)
    # The generic engine sees the penalty's gradient 0.2 W in every draw: the moments differ.
    generic = run_draws(net, estimators, batch, num_draws=4, seed=0)["reads-weights"]
    assert generic.path == "generic"  # `run_draws` falls back by itself
    plain = run_draws(net, {"st": get_estimator("st")}, batch, num_draws=4, seed=0,
                      path="generic")["st"]
    torch.testing.assert_close(generic["expert.weight"].mean - plain["expert.weight"].mean,
                               0.2 * net.expert.weight.detach().reshape(-1), rtol=1e-12,
                               atol=1e-15)


@pytest.mark.parametrize(("num_draws", "chunk_size"), [(0, 4), (4, 0)])
def test_non_positive_counts_raise(problem, num_draws, chunk_size):
    net, batch = problem
    with pytest.raises(ValueError, match="must be >= 1"):
        fast_moments(net, {"st": get_estimator("st")}, batch, num_draws=num_draws, seed=0,
                     chunk_size=chunk_size)


def test_non_finite_draws_raise_naming_the_estimator():
    net, batch = small_problem()
    with torch.no_grad():
        net.gater_out.weight[0, 0] = torch.nan  # the gate logits of unit 0 are NaN
    with pytest.raises(NonFiniteDrawError, match="'reinforce', draw 0"):
        fast_moments(net, {"reinforce": get_estimator("reinforce")}, batch, num_draws=2, seed=0)
