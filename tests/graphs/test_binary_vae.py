"""The Bernoulli VAE graph: shapes, the ELBO by enumeration, and unbiased estimators on it.

Reference values are computed in float64 by enumerating the `2^3` latent configurations of a
3-bit VAE with plain tensor formulas written out here (no `prepare`/`loss`), independent of
the graph's code path.
"""

import itertools
import math

import numpy as np
import pytest
import torch

from estimator_lab.estimators import get_estimator
from estimator_lab.exact import exact_gradient, exact_moments
from estimator_lab.graphs.binary_vae import BinaryVAE, BinaryVAEConfig
from estimator_lab.montecarlo import GATE_LOGITS, moments_of
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.noise import uniform_noise
from estimator_lab.stats.unbiasedness import rounding_scale, zero_mean_test
from estimator_lab.train.binary_vae import dynamic_minibatch, evaluate_bounds, train_adam

TINY = {"linear": BinaryVAEConfig(num_inputs=5, num_latents=3),
        "nonlinear": BinaryVAEConfig(num_inputs=5, num_latents=3, hidden=(4,))}


def tiny_problem(kind: str, seed: int = 0, batch_size: int = 2):
    """A float64 3-bit VAE with weights scaled up (so the ELBO depends visibly on the latents)
    and nonzero prior logits, on seeded binary observations."""
    generator = torch.Generator().manual_seed(seed)
    mean = torch.rand(5, generator=generator) * 0.8 + 0.1
    vae = BinaryVAE(TINY[kind], mean, generator).double()
    with torch.no_grad():
        for param in vae.parameters():
            param.mul_(3)
        vae.prior_logits.copy_(torch.tensor([0.5, -1.0, 1.5]))
    x = (torch.rand(batch_size, 5, generator=generator) < 0.5).double()
    return vae, (x,)


def direct_log_joint(vae: BinaryVAE, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`log p(x, b)` for one `D` observation and one `G` configuration, written out."""
    h = b
    layers = [m for m in vae.decoder if isinstance(m, torch.nn.Linear)]
    for index, layer in enumerate(layers):
        h = h @ layer.weight.T + layer.bias
        if index < len(layers) - 1:
            h = torch.where(h > 0, h, 0.3 * h)
    pixels = torch.sigmoid(h)
    prior = torch.sigmoid(vae.prior_logits)
    return (torch.log(torch.where(x > 0, pixels, 1 - pixels)).sum()
            + torch.log(torch.where(b > 0, prior, 1 - prior)).sum())


def direct_posterior(vae: BinaryVAE, x: torch.Tensor) -> torch.Tensor:
    """`q(b_i = 1 | x)`, a `G` tensor, written out."""
    h = x - vae.data_mean
    layers = [m for m in vae.encoder if isinstance(m, torch.nn.Linear)]
    for index, layer in enumerate(layers):
        h = h @ layer.weight.T + layer.bias
        if index < len(layers) - 1:
            h = torch.where(h > 0, h, 0.3 * h)
    return torch.sigmoid(h)


def direct_elbo_and_evidence(vae: BinaryVAE, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per-example ELBO `sum_b q(b) [log p(x, b) - log q(b)]` (differentiable in every
    parameter, `log q` included) and `log p(x) = log sum_b p(x, b)`."""
    elbo, joints = 0.0, []
    q = direct_posterior(vae, x)
    for bits in itertools.product([0.0, 1.0], repeat=vae.num_gates):
        b = torch.tensor(bits, dtype=torch.float64)
        log_q = torch.log(torch.where(b > 0, q, 1 - q)).sum()
        joint = direct_log_joint(vae, x, b)
        elbo = elbo + log_q.exp() * (joint - log_q)
        joints.append(float(joint.detach()))
    return elbo, float(np.logaddexp.reduce(joints))


def test_shapes_names_and_initial_bias():
    mean = torch.linspace(0.0, 1.0, 784)
    for hidden in ((), (200,)):
        vae = BinaryVAE(BinaryVAEConfig(hidden=hidden), mean)
        assert vae.num_gates == 200
        x = (torch.rand(7, 784) < 0.5).float()
        prepared = vae.prepare((x,))
        assert prepared.logits.shape == (7, 200)
        assert vae.loss(prepared, torch.zeros(3, 7, 200)).shape == (3, 7)
        assert vae.loss(prepared, torch.rand(7, 200)).shape == (7,)  # relaxed gates too
        elbo, bound = vae.bounds(x, torch.rand(4, 7, 200))
        assert elbo.shape == bound.shape == (7,)
        expected = torch.logit(mean.clamp(0.001, 0.999))
        torch.testing.assert_close(vae.decoder[-1].bias.detach(), expected)
        assert all(n.startswith("encoder.") for n in vae.encoder_parameters())
    assert BinaryVAEConfig().name == "linear"
    assert BinaryVAEConfig(hidden=(200,)).name == "nonlinear-200"
    linear = BinaryVAE(BinaryVAEConfig(num_inputs=6, num_latents=3))
    assert sorted(n for n, _ in linear.named_parameters()) == [
        "decoder.0.bias", "decoder.0.weight", "encoder.0.bias", "encoder.0.weight",
        "prior_logits"]


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        BinaryVAEConfig(num_latents=0)
    with pytest.raises(ValueError, match="data_mean must have shape"):
        BinaryVAE(BinaryVAEConfig(num_inputs=4, num_latents=2), torch.zeros(5))


@pytest.mark.parametrize("kind", sorted(TINY))
def test_expected_loss_is_minus_the_elbo_and_its_gradient_is_the_elbo_gradient(kind):
    """Enumeration of the graph's loss (log q detached inside) gives `-ELBO` and the gradient
    of `-ELBO` with `log q` differentiated, written out by hand: the detached term has mean 0."""
    vae, batch = tiny_problem(kind)
    value, gradient = exact_gradient(vae, batch)
    per_example = [direct_elbo_and_evidence(vae, x) for x in batch[0]]
    direct = -sum(elbo for elbo, _ in per_example) / len(per_example)
    torch.testing.assert_close(value, direct.detach(), rtol=1e-12, atol=0)
    names = [n for n, _ in vae.named_parameters()]
    expected = torch.autograd.grad(direct, list(vae.parameters()))
    for name, grad in zip(names, expected, strict=True):
        torch.testing.assert_close(gradient[name], grad, rtol=1e-10, atol=1e-12, msg=name)
    # ELBO <= log p(x) on every example
    for elbo, evidence in per_example:
        assert float(elbo.detach()) <= evidence + 1e-12


@pytest.mark.parametrize("kind", sorted(TINY))
def test_bounds_match_the_direct_formula(kind):
    """`bounds`' ELBO and K-sample bound against `log p(x, b) - log q(b)` written out, sample
    by sample; the K-sample bound with `K` large sits between the ELBO and `log p(x)`."""
    vae, (x,) = tiny_problem(kind)
    noise = uniform_noise(5, range(6), (2, 3), dtype=torch.float64)
    elbo, bound = vae.bounds(x, noise)
    for j in range(x.shape[0]):
        q = direct_posterior(vae, x[j])
        weights = []
        for k in range(noise.shape[0]):
            b = (noise[k, j] < q).double()
            log_q = torch.log(torch.where(b > 0, q, 1 - q)).sum()
            weights.append(float((direct_log_joint(vae, x[j], b) - log_q).detach()))
        assert float(elbo[j]) == pytest.approx(np.mean(weights), rel=1e-12)
        expected = np.logaddexp.reduce(weights) - math.log(len(weights))
        assert float(bound[j]) == pytest.approx(expected, rel=1e-12)
    many = uniform_noise(6, range(4000), (2, 3), dtype=torch.float64)
    _, bound = vae.bounds(x, many)
    for j in range(x.shape[0]):
        elbo_j, evidence = direct_elbo_and_evidence(vae, x[j])
        assert float(elbo_j.detach()) < float(bound[j]) <= evidence + 1e-12


EXACT_ESTIMATORS = {"rloo": {}, "arm": {}, "disarm": {}, "arms": {}, "double-cv": {}, "ugc": {}}
"""Estimators whose exact mean `exact_moments` computes (`arms` with its default 2 samples)."""


@pytest.mark.parametrize("kind", sorted(TINY))
@pytest.mark.parametrize("name", sorted(EXACT_ESTIMATORS))
def test_exact_mean_of_unbiased_estimators_is_the_elbo_gradient(kind, name):
    """Each draw is a function of the gates alone or piecewise constant (ARM: piecewise linear)
    in its uniforms between the quadrature cells, so 2 Gauss-Legendre nodes per cell give its
    exact mean: it must equal the enumerated gradient on every coordinate (gate logits and
    every parameter, encoder and decoder). (ARM's variance, quadratic in `u`, is exact with 2
    nodes too but its 1-node error estimate labels it "approximate quadrature".)"""
    vae, batch = tiny_problem(kind)
    _, gradient = exact_gradient(vae, batch)
    estimator = get_estimator(name, **EXACT_ESTIMATORS[name])
    moments = exact_moments(vae, estimator, batch, quadrature_points=2,
                            max_quadrature_dims=3 * vae.num_gates + 1)
    for key, value in gradient.items():
        torch.testing.assert_close(moments.mean[key], value, rtol=1e-9, atol=1e-12,
                                   msg=f"{name}: {key}")


@pytest.mark.parametrize("name, hyper", [("relax", {}), ("arms", {"num_samples": 4}),
                                         ("arms", {"num_samples": 3, "copula": "gaussian"})])
def test_mean_gradient_is_unbiased_by_monte_carlo(name, hyper):
    """RELAX's draws are smooth in the noise and ARMS's copulas for `n > 2` are not split at
    quadrature cells, so these get a Monte Carlo test: 20,000 draws minus the enumerated
    gradient, per-coordinate z-tests with Holm's correction at family-wise level 1e-3 (the
    false-failure rate of this test, per case), on every coordinate."""
    vae, batch = tiny_problem("linear")
    _, gradient = exact_gradient(vae, batch)
    estimator = get_estimator(name, **hyper)
    prepared = vae.prepare(batch)
    noise = uniform_noise(11, range(20_000), estimator.noise_shape(vae, prepared),
                          dtype=torch.float64)
    draws = gradient_draws(vae, estimator, batch, noise, state=estimator.init(vae))
    assert set(draws) == set(gradient) and GATE_LOGITS in draws
    flat = torch.cat([(draws[k] - gradient[k]).flatten(1) for k in gradient], 1)
    reference = torch.cat([gradient[k].flatten() for k in gradient]).abs().numpy()
    result = zero_mean_test(moments_of(flat), alpha=1e-3, rounding=rounding_scale(reference))
    assert not result.rejected.any(), (result.statistic, result.pvalue)


def test_dynamic_minibatch_is_seeded_binary_and_unbiased_for_the_pixels():
    """Pure function of (seed, step); zeros and ones; epochs visit every image once; and the
    mean over many re-binarisations of one image is its intensity (the SE of the mean of
    4,000 Bernoulli draws is at most 0.0079, so a 6-SE bound fails with probability < 1e-8
    per pixel, < 1e-6 over the 24 pixels)."""
    images = torch.rand(6, 4, generator=torch.Generator().manual_seed(0))
    first = dynamic_minibatch(images, 3, seed=5, step=7)
    assert torch.equal(first, dynamic_minibatch(images, 3, seed=5, step=7))
    assert not torch.equal(first, dynamic_minibatch(images, 3, seed=6, step=7))
    assert set(first.unique().tolist()) <= {0.0, 1.0} and first.shape == (3, 4)
    single = images[:1]
    draws = torch.stack([dynamic_minibatch(single, 1, seed=1, step=s)[0] for s in range(4000)])
    assert ((draws.mean(0) - single[0]).abs() < 6 * 0.5 / 4000**0.5).all()


def test_train_adam_is_deterministic_and_calls_back_before_every_step():
    images = torch.rand(20, 5, generator=torch.Generator().manual_seed(1))

    def run():
        vae, _ = tiny_problem("nonlinear")
        vae = vae.float()
        seen = []
        state, seconds = train_adam(vae, get_estimator("relax"), images, steps=4, batch_size=5,
                                    callback=lambda step, state: seen.append((step, state.step)))
        return vae, state, seconds, seen

    vae, state, seconds, seen = run()
    assert seen == [(t, t) for t in range(5)] and state.step == 4 and seconds > 0
    again, _, _, _ = run()
    start = tiny_problem("nonlinear")[0].float()
    for (name, p), q, p0 in zip(vae.named_parameters(), again.parameters(), start.parameters(),
                                strict=True):
        assert torch.equal(p, q), name
        assert not torch.equal(p, p0), name  # every parameter trained


def test_evaluate_bounds_averages_bounds_over_chunks():
    vae, (x,) = tiny_problem("linear", batch_size=5)
    elbo, bound = evaluate_bounds(vae, x, samples=7, seed=3, chunk=2)
    chunks = [vae.bounds(x[s:s + 2], uniform_noise(3, range(i, i + 1), (7, len(x[s:s + 2]), 3),
                                                   dtype=torch.float64)[0])
              for i, s in enumerate(range(0, 5, 2))]
    assert elbo == pytest.approx(float(torch.cat([c[0] for c in chunks]).mean()), rel=1e-12)
    assert bound == pytest.approx(float(torch.cat([c[1] for c in chunks]).mean()), rel=1e-12)
    assert bound >= elbo
