"""The draw engine: vmap against the loop, closed-form draws, chunking and common noise."""

from dataclasses import asdict

import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.graphs import ConditionalConfig
from estimator_lab.montecarlo import GATE_LOGITS, iter_draw_chunks, run_draws, uniform_noise
from estimator_lab.montecarlo.engine import gradient_draws, tracked_parameters
from estimator_lab.testing import conditional_problem

CONFIG = ConditionalConfig(num_inputs=6, num_gater_hidden=4, num_gates=5, num_classes=3)
BATCH_SIZE = 3
ESTIMATORS = ["reinforce", "st", "local-expectation"]
PARAMETER_NAMES = [
    "gater_hidden.weight", "gater_hidden.bias", "gater_out.weight", "gater_out.bias",
    "expert.weight", "expert.bias", "output.weight", "output.bias",
]


def noise_for(seed: int, num_draws: int) -> torch.Tensor:
    return uniform_noise(
        seed, range(num_draws), (BATCH_SIZE, CONFIG.num_gates), dtype=torch.float64
    )


@pytest.fixture(scope="module")
def problem():
    """The float64 network of `CONFIG`, output weights times 4, on `BATCH_SIZE` examples."""
    return conditional_problem(batch_size=BATCH_SIZE, **asdict(CONFIG))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_vmap_and_loop_agree(problem, name):
    net, batch = problem
    noise = noise_for(1, 6)
    estimator = get_estimator(name)
    vmapped = gradient_draws(net, estimator, batch, noise, method="vmap")
    looped = gradient_draws(net, estimator, batch, noise, method="loop")
    assert list(vmapped) == [GATE_LOGITS, *PARAMETER_NAMES]
    assert list(looped) == list(vmapped)
    params = dict(net.named_parameters())
    for key, value in vmapped.items():
        shape = (BATCH_SIZE, CONFIG.num_gates) if key == GATE_LOGITS else params[key].shape
        assert value.shape == (6, *shape), key
        assert value.dtype == torch.float64, key
        torch.testing.assert_close(value, looped[key], rtol=1e-10, atol=1e-12, msg=key)
    # Different noise rows give different draws (the draws are not all one value).
    assert not torch.allclose(vmapped[GATE_LOGITS][0], vmapped[GATE_LOGITS][1:])


def gates_and_losses(net, batch, noise):
    """Hard gates `1[u < p]` for each noise row, their per-example losses and `p`."""
    with torch.no_grad():
        prepared = net.prepare(batch)
        p = torch.sigmoid(prepared.logits)
        gates = (noise < p).double()
        return prepared, gates, net.loss(prepared, gates), p


def test_reinforce_logit_draws_have_the_closed_form(problem):
    net, batch = problem
    noise = noise_for(2, 8)
    draws = gradient_draws(net, get_estimator("reinforce"), batch, noise)[GATE_LOGITS]
    _, gates, losses, p = gates_and_losses(net, batch, noise)
    expected = losses.unsqueeze(-1) * (gates - p) / BATCH_SIZE  # L_j (b_ji - p_ji) / B
    torch.testing.assert_close(draws, expected, rtol=1e-12, atol=1e-15)


def test_straight_through_logit_draws_are_the_gate_gradient(problem):
    net, batch = problem
    noise = noise_for(3, 8)
    draws = gradient_draws(net, get_estimator("st"), batch, noise)[GATE_LOGITS]
    prepared, gates, _, _ = gates_and_losses(net, batch, noise)
    gates.requires_grad_(True)
    # Each example's loss depends on its own gates only, so the gradient of the sum of all
    # losses with respect to b_ji is dL_j / db_ji.
    (grad,) = torch.autograd.grad(net.loss(prepared, gates).sum(), gates)
    torch.testing.assert_close(draws, grad / BATCH_SIZE, rtol=1e-12, atol=1e-15)


def test_local_expectation_logit_draws_have_the_closed_form(problem):
    net, batch = problem
    noise = noise_for(4, 8)
    draws = gradient_draws(net, get_estimator("local-expectation"), batch, noise)[GATE_LOGITS]
    prepared, gates, _, p = gates_and_losses(net, batch, noise)
    with torch.no_grad():
        flips = net.gate_flip_losses(prepared, gates)
    expected = p * (1 - p) * (flips[0] - flips[1]) / BATCH_SIZE
    torch.testing.assert_close(draws, expected, rtol=1e-12, atol=1e-15)


def concatenated_draws(net, batch, names, chunk_size, seed=5, num_draws=30):
    estimators = {n: get_estimator(n) for n in names}
    chunks = list(iter_draw_chunks(
        net, estimators, batch, num_draws=num_draws, seed=seed, chunk_size=chunk_size
    ))
    ranges = [r for r, _, _ in chunks]
    assert ranges[0].start == 0 and ranges[-1].stop == num_draws
    assert all(a.stop == b.start for a, b in zip(ranges, ranges[1:], strict=False))
    assert all(len(r) <= chunk_size for r in ranges)
    return {
        n: {k: torch.cat([c[n][k] for _, c, _ in chunks]) for k in chunks[0][1][n]} for n in names
    }


def test_draws_and_moments_do_not_depend_on_the_chunk_size(problem):
    net, batch = problem
    names = ["reinforce", "st"]
    reference = concatenated_draws(net, batch, names, chunk_size=64)
    for chunk_size in (1, 7):
        draws = concatenated_draws(net, batch, names, chunk_size=chunk_size)
        for n in names:
            for k, value in reference[n].items():
                torch.testing.assert_close(draws[n][k], value, rtol=1e-12, atol=1e-15)

    estimators = {n: get_estimator(n) for n in names}
    results = {
        chunk_size: run_draws(
            net, estimators, batch, num_draws=30, seed=5, chunk_size=chunk_size
        )
        for chunk_size in (1, 7, 64)  # 64 > num_draws: one chunk holds every draw
    }
    for n in names:
        assert results[64][n].names() == [GATE_LOGITS, *PARAMETER_NAMES]
        for k in results[64][n].names():
            ref = results[64][n][k]
            # The moments match the draws themselves (a two-pass reference).
            flat = reference[n][k].flatten(1)
            torch.testing.assert_close(ref.mean, flat.mean(0), rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(ref.variance, flat.var(0), rtol=1e-10, atol=1e-24)
            for chunk_size in (1, 7):
                other = results[chunk_size][n][k]
                assert other.count == ref.count == 30
                torch.testing.assert_close(other.mean, ref.mean, rtol=1e-12, atol=1e-15)
                torch.testing.assert_close(other.m2, ref.m2, rtol=1e-10, atol=1e-24)


def test_run_draws_matches_on_the_loop_method(problem):
    net, batch = problem
    estimators = {"local-expectation": get_estimator("local-expectation")}
    kwargs = {"num_draws": 10, "seed": 6, "chunk_size": 4}
    vmapped = run_draws(net, estimators, batch, method="vmap", **kwargs)["local-expectation"]
    looped = run_draws(net, estimators, batch, method="loop", **kwargs)["local-expectation"]
    for k in vmapped.names():
        torch.testing.assert_close(vmapped[k].mean, looped[k].mean, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(vmapped[k].m2, looped[k].m2, rtol=1e-10, atol=1e-20)


def test_common_random_numbers_share_the_pathwise_part(problem):
    net, batch = problem
    draws = concatenated_draws(net, batch, ["reinforce", "st"], chunk_size=16, num_draws=32)
    # Identical gates, and ST's forward value `b + (a - stopgrad(a))` is exactly b.
    for name in ("output.weight", "output.bias", "expert.weight", "expert.bias"):
        assert torch.equal(draws["reinforce"][name], draws["st"][name]), name
    # The gater's gradients differ: score function against straight-through.
    gater = "gater_out.weight"
    assert not torch.allclose(draws["reinforce"][gater], draws["st"][gater])


def test_tracked_parameter_subsets_and_include_logits(problem):
    net, batch = problem
    noise = noise_for(7, 4)
    estimator = get_estimator("reinforce")
    full = gradient_draws(net, estimator, batch, noise)
    subset = gradient_draws(
        net, estimator, batch, noise, parameters=["output.bias", "expert.weight"]
    )
    assert list(subset) == [GATE_LOGITS, "output.bias", "expert.weight"]
    for key in subset:
        torch.testing.assert_close(subset[key], full[key], rtol=1e-12, atol=1e-15)
    no_logits = gradient_draws(
        net, estimator, batch, noise, parameters=["output.bias"], include_logits=False
    )
    assert list(no_logits) == ["output.bias"]
    only_logits = gradient_draws(net, estimator, batch, noise, parameters=[])
    assert list(only_logits) == [GATE_LOGITS]
    torch.testing.assert_close(only_logits[GATE_LOGITS], full[GATE_LOGITS], rtol=1e-12, atol=0)
    for method in ("vmap", "loop"):
        looped = gradient_draws(
            net, estimator, batch, noise, parameters=["gater_out.bias"], include_logits=False,
            method=method,
        )
        torch.testing.assert_close(looped["gater_out.bias"], full["gater_out.bias"],
                                   rtol=1e-10, atol=1e-14)

    results = run_draws(
        net, {"st": get_estimator("st")}, batch, num_draws=5, seed=1, chunk_size=2,
        parameters=["output.weight"], include_logits=False,
    )
    assert results["st"].names() == ["output.weight"]
    assert results["st"]["output.weight"].mean.shape == (CONFIG.num_classes * CONFIG.num_gates,)
    assert results["st"]["output.weight"].count == 5


def test_gradient_draws_leave_the_parameters_alone(problem):
    net, batch = problem
    before = {n: p.clone() for n, p in net.named_parameters()}
    for method in ("vmap", "loop"):
        gradient_draws(net, get_estimator("st"), batch, noise_for(8, 2), method=method)
    assert all(torch.equal(before[n], p) for n, p in net.named_parameters())
    assert all(p.grad is None for p in net.parameters())


def test_unknown_parameter_name_raises_key_error_naming_it(problem):
    net, batch = problem
    with pytest.raises(KeyError, match="output.wieght"):
        tracked_parameters(net, ["output.bias", "output.wieght"])
    with pytest.raises(KeyError, match="no_such_param"):
        gradient_draws(
            net, get_estimator("st"), batch, noise_for(0, 2), parameters=["no_such_param"]
        )
    with pytest.raises(KeyError, match="no_such_param"):
        run_draws(
            net, {"st": get_estimator("st")}, batch, num_draws=2, seed=0,
            parameters=["no_such_param"],
        )


@pytest.mark.parametrize(("num_draws", "chunk_size"), [(0, 4), (-1, 4), (4, 0)])
def test_non_positive_counts_raise(problem, num_draws, chunk_size):
    net, batch = problem
    estimators = {"st": get_estimator("st")}
    with pytest.raises(ValueError, match="must be >= 1"):
        run_draws(
            net, estimators, batch, num_draws=num_draws, seed=0, chunk_size=chunk_size
        )
    with pytest.raises(ValueError):
        list(iter_draw_chunks(
            net, estimators, batch, num_draws=num_draws, seed=0, chunk_size=chunk_size
        ))


def test_bad_method_raises(problem):
    net, batch = problem
    with pytest.raises(ValueError, match="method"):
        gradient_draws(net, get_estimator("st"), batch, noise_for(0, 2), method="jacrev")
    with pytest.raises(ValueError, match="method"):
        run_draws(
            net, {"st": get_estimator("st")}, batch, num_draws=2, seed=0, method="batched"
        )
