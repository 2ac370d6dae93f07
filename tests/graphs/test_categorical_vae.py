"""The categorical VAE: -ELBO by enumeration, exact gradient vs finite differences, specs."""

import math

import pytest
import torch

from estimator_lab.estimators.categorical import get_categorical_estimator
from estimator_lab.exact.categorical import categorical_exact_gradient, categorical_exact_moments
from estimator_lab.graphs.categorical_vae import MAX_VAE_CONFIGURATIONS, parse_categorical_vae_spec


def _vae(**options):
    spec = {"data": "synthetic", "batch": "2", "hidden": "8"} | options
    vae, (x,) = parse_categorical_vae_spec(spec, seed=1)
    return vae.double(), (x.double(),)


def _expected_loss(vae, batch):
    value, _ = categorical_exact_gradient(vae, batch, include_logits=False, parameters=[])
    return float(value)


def test_expected_loss_is_reconstruction_plus_kl_to_the_uniform_prior():
    vae, batch = _vae(latents="2", classes="3")
    prepared = vae.prepare(batch)
    q = torch.softmax(prepared.logits, -1)  # B x L x K
    kl = (q * (q.log() + math.log(3))).sum((-2, -1))  # KL(q || uniform), B
    eye = torch.eye(3, dtype=torch.float64)
    total = torch.zeros(2, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            gates = torch.stack([eye[a], eye[b]]).expand(2, 2, 3)
            scores = vae.decoder(gates.flatten(-2))
            log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
                scores, batch[0], reduction="none").sum(-1)
            total += q[:, 0, a] * q[:, 1, b] * -log_lik
    expected = float((total + kl).mean().detach())
    assert abs(_expected_loss(vae, batch) - expected) < 1e-10 * abs(expected)


@pytest.mark.parametrize("sizes", [("3", "4"), ("4", "8")])
def test_exact_gradient_matches_directional_central_differences(sizes):
    latents, classes = sizes
    vae, batch = _vae(latents=latents, classes=classes)
    assert vae.num_configurations == int(classes) ** int(latents)
    _, grads = categorical_exact_gradient(vae, batch)
    params = dict(vae.named_parameters())
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):
        direction = {n: torch.randn(p.shape, generator=generator, dtype=p.dtype)
                     for n, p in params.items()}
        h = 1e-5
        with torch.no_grad():
            for n, p in params.items():
                p += h * direction[n]
        up = _expected_loss(vae, batch)
        with torch.no_grad():
            for n, p in params.items():
                p -= 2 * h * direction[n]
        down = _expected_loss(vae, batch)
        with torch.no_grad():
            for n, p in params.items():
                p += h * direction[n]
        numeric = (up - down) / (2 * h)
        analytic = sum(float((grads[n] * direction[n]).sum()) for n in params)
        # float64 central differences: truncation O(h^2) ~ 1e-10 (losses ~ 500), rounding
        # ~ 500 * 1e-16 / h ~ 1e-8
        assert abs(numeric - analytic) < 1e-6 * max(1.0, abs(analytic))


def test_detached_log_q_keeps_reinforce_exact_on_the_encoder():
    vae, batch = _vae(latents="2", classes="3")
    _, exact = categorical_exact_gradient(vae, batch)
    moments = categorical_exact_moments(vae, get_categorical_estimator("reinforce"), batch)
    for name in ("encoder.0.weight", "encoder.2.bias", "decoder.2.weight"):
        assert torch.allclose(moments.mean[name], exact[name], rtol=0, atol=1e-10), name


def test_mnist_images_when_cached():
    from estimator_lab.data import mnist_info

    if not mnist_info()["valid"]:
        pytest.skip("MNIST not cached (estimator-lab data fetch)")
    vae, (x,) = parse_categorical_vae_spec({"batch": "3"})
    assert x.shape == (3, 784) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert vae.num_configurations == 4096


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"latents": "abc"}, "latents must be int"),
        ({"classes": "1"}, "classes >= 2"),
        ({"hidden": "0"}, "hidden must be >= 1"),
        ({"data": "cifar"}, "data must be mnist or synthetic"),
        ({"latents": "7", "classes": "8"}, "8\\^7 = 2,097,152 configurations"),
        ({"latents": "1000000000"}, "more than the limit"),
    ],
)
def test_bad_specs_say_why_in_one_line(options, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_categorical_vae_spec(options | {"data": options.get("data", "synthetic")},
                                   max_configurations=2**22)
    assert "\n" not in str(info.value)


def test_guard_is_capped_at_two_to_the_twenty():
    assert MAX_VAE_CONFIGURATIONS == 2**20
    vae, _ = parse_categorical_vae_spec({"latents": "5", "classes": "16", "data": "synthetic",
                                         "batch": "1"})
    assert vae.num_configurations == 2**20
