"""The paper's gater configurations: noise laws, gradients, sparsity criteria, test-time gates."""

import math

import pytest
import torch
from scipy import integrate, stats

from estimator_lab.train.gaters import (
    PAPER_GATERS,
    BetaNoise,
    GaterConfig,
    activity_threshold,
    deterministic_gates,
    gaussian_rectifier_mean,
    max_norm_,
    next_l1_weight,
    sparsity_penalty,
    training_gates,
)


def test_the_seven_rows_carry_the_papers_settings():
    assert list(PAPER_GATERS) == [
        "noisy-rectifier", "straight-through", "sts", "sbn", "baseline-rectifier",
        "baseline-sigmoid-noise", "baseline-sigmoid",
    ]
    assert PAPER_GATERS["sbn"].gater_lr == 0.001 and PAPER_GATERS["sbn"].learning_rate == 0.1
    assert PAPER_GATERS["sts"].momentum > 0 and PAPER_GATERS["sts"].beta == 40.1
    assert {c.sparsity for c in PAPER_GATERS.values() if c.kind in ("st", "sts", "sbn")} == {"kl"}
    assert PAPER_GATERS["noisy-rectifier"].sparsity == "l1"
    assert PAPER_GATERS["baseline-sigmoid"].num_gates == 200
    assert PAPER_GATERS["baseline-sigmoid"].sparsity is None
    started_at_the_bound = {"straight-through", "sbn"}
    assert {name for name, c in PAPER_GATERS.items() if c.init_norm is not None} == (
        started_at_the_bound)
    for name, config in PAPER_GATERS.items():
        if name in started_at_the_bound:
            assert config.init_norm == config.max_norm == 4.0
        else:
            assert config.max_norm == 2.0
    assert PAPER_GATERS["straight-through"].kl_weight == 0.03
    assert PAPER_GATERS["sbn"].kl_weight == 0.01
    assert PAPER_GATERS["sts"].kl_weight == 0.1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="KL"):
        GaterConfig("x", "rectifier", "x", (0, 0, 0), sparsity="kl")
    with pytest.raises(ValueError, match="unknown gater kind"):
        GaterConfig("x", "tanh", "x", (0, 0, 0))


def test_beta_noise_has_its_mode_at_the_target_and_the_beta_law():
    noise = BetaNoise(beta=40.1, target=0.1)
    law = stats.beta(noise.alpha, noise.beta)
    mode = (noise.alpha - 1) / (noise.alpha + noise.beta - 2)
    assert mode == pytest.approx(0.1, rel=1e-12)
    assert torch.sigmoid(torch.tensor(noise.scale * mode, dtype=torch.float64)).item() == \
        pytest.approx(0.1, rel=1e-12)
    assert noise.mean == pytest.approx(noise.scale * law.mean(), rel=1e-12)
    # Quantiles at fixed uniforms against scipy's, unscaled: the tabulated linear interpolation
    # errs by < 1e-5 (< 3e-4 in logit units after scaling), against a noise spread of ~1.
    u = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    expected = torch.from_numpy(law.ppf(u.numpy()))
    assert torch.allclose(noise(u) / noise.scale, expected, rtol=0, atol=1e-5)
    # Seeded draws follow the law: KS test at level 1e-3 (the false-failure rate for a
    # correct sampler; the seed is fixed so the outcome is deterministic).
    samples = noise(torch.rand(20_000, generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64)) / noise.scale
    assert stats.kstest(samples.numpy(), law.cdf).pvalue > 1e-3


def test_straight_through_passes_dl_dh_to_the_logit_without_the_sigmoid_derivative():
    config = PAPER_GATERS["straight-through"]
    logits = torch.randn(3, 5, requires_grad=True)
    noise = torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(1))
    gates = training_gates(config, logits, noise)
    assert torch.allclose(gates.detach(), (noise[0] < torch.sigmoid(logits)).float(), atol=1e-6)
    weight = torch.randn(3, 5)
    (gates * weight).sum().backward()
    assert torch.allclose(logits.grad, weight)


def test_sts_gates_take_their_two_values_and_differentiate_the_smooth_half_only():
    config = PAPER_GATERS["sts"]
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    noise = torch.rand(2, 4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gates = training_gates(config, logits, noise)
    root = torch.sigmoid(logits).sqrt()
    on = gates != 0
    assert torch.allclose(gates[on], root[on])
    shifted = logits + BetaNoise(40.1)(noise[1])
    assert torch.equal(on, noise[0] < torch.sigmoid(shifted).sqrt())
    gates.sum().backward()
    expected = on * root * (1 - torch.sigmoid(logits)) / 2
    assert torch.allclose(logits.grad, expected.detach())


def test_sbn_gates_carry_no_pathwise_gradient_and_noisy_rectifier_adds_unit_gaussian_noise():
    logits = torch.zeros(2, 3, requires_grad=True)
    noise = torch.full((2, 2, 3), 0.5)
    assert not training_gates(PAPER_GATERS["sbn"], logits, noise).requires_grad
    noise[1] = 0.975  # z = -ndtri(0.975) = -1.96
    gates = training_gates(PAPER_GATERS["noisy-rectifier"], logits + 3, noise)
    assert torch.allclose(gates, torch.full((2, 3), 3 - 1.959964), atol=1e-5)


def test_kl_criterion_is_stationary_at_the_target_and_pushes_towards_it():
    config = PAPER_GATERS["straight-through"]
    target_logit = math.log(0.1 / 0.9)
    for start, sign in ((target_logit, 0), (0.0, 1), (-5.0, -1)):
        logits = torch.full((4, 3), start, dtype=torch.float64, requires_grad=True)
        sparsity_penalty(config, logits, logits, 0.0).backward()
        if sign == 0:  # zero up to the rounding of sigmoid(logit(0.1)) in float64
            assert logits.grad.abs().max().item() < 1e-15
        else:
            assert torch.sign(logits.grad).unique().tolist() == [sign]


def test_l1_criterion_and_its_adaptive_weight():
    config = PAPER_GATERS["baseline-rectifier"]
    gates = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    assert sparsity_penalty(config, gates, gates, 0.5).item() == pytest.approx(0.5 * (0.5 + 1.0))
    assert next_l1_weight(config, 1.0, 0.2) == config.l1_rate
    assert next_l1_weight(config, 1.0, 0.05) == 1 / config.l1_rate
    assert next_l1_weight(config, 1.0, 0.105) == 1.0
    assert next_l1_weight(PAPER_GATERS["straight-through"], 1.0, 0.5) == 1.0


def test_the_tuned_threshold_turns_on_the_target_fraction_at_test_time():
    logits = torch.randn(100, 200, generator=torch.Generator().manual_seed(3))
    threshold = activity_threshold(logits, 0.1)
    for name in ("straight-through", "sts", "sbn", "noisy-rectifier", "baseline-rectifier"):
        gates = deterministic_gates(PAPER_GATERS[name], logits, threshold)
        assert (gates != 0).float().mean().item() == pytest.approx(0.1, abs=1e-4)
    assert torch.equal(deterministic_gates(PAPER_GATERS["baseline-sigmoid"], logits, math.nan),
                       torch.sigmoid(logits))


@pytest.mark.parametrize("a", [-3.0, -0.5, 0.0, 1.2])
def test_gaussian_rectifier_mean_against_quadrature(a):
    value, _ = integrate.quad(lambda z: max(0.0, a + z) * stats.norm.pdf(z), -40, 40,
                              points=[-a], limit=200)
    closed = gaussian_rectifier_mean(torch.tensor([a], dtype=torch.float64), 1.0).item()
    assert closed == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_max_norm_rescales_only_the_rows_above_the_bound():
    weight = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    max_norm_([weight], 2.0)
    assert torch.allclose(weight, torch.tensor([[1.2, 1.6], [0.3, 0.4]]))
