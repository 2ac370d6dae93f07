"""The mixture-of-experts router: exact gradient, estimators' exact means, spec errors."""

import pytest
import torch

from estimator_lab.estimators.topk import get_topk_estimator
from estimator_lab.exact.topk import topk_exact_gradient, topk_exact_moments
from estimator_lab.graphs.moe import MoEConfig, MoERouter, parse_moe_spec
from estimator_lab.graphs.topk import topk_log_prob, topk_subsets


def _router():
    router, batch = parse_moe_spec({"batch": "3", "data": "synthetic"}, seed=2,
                                   max_configurations=2**22)
    return router.double(), (batch[0].double(), batch[1])


def _expected_loss(router, batch):
    value, _ = topk_exact_gradient(router, batch, include_logits=False, parameters=[])
    return value.detach()


def test_expected_loss_is_the_probability_weighted_sum_over_subsets():
    router, batch = _router()
    prepared = router.prepare(batch)
    subsets = topk_subsets(4, 2)  # 6 x 4
    masks = subsets.view(6, 1, 1, 4).expand(6, 3, 1, 4)
    losses = router.loss(prepared, masks)  # 6 x 3
    probs = topk_log_prob(prepared.logits.squeeze(1), subsets.view(6, 1, 4), 2).exp()
    assert torch.allclose(probs.sum(0), torch.ones(3, dtype=torch.float64), atol=1e-14)
    expected = (probs * losses).sum(0).mean().detach()
    assert abs(float(_expected_loss(router, batch) - expected)) < 1e-14


def test_exact_gradient_matches_directional_central_differences():
    router, batch = _router()
    _, grads = topk_exact_gradient(router, batch)
    generator = torch.Generator().manual_seed(9)
    params = dict(router.named_parameters())
    for _ in range(3):
        direction = {n: torch.randn(p.shape, generator=generator, dtype=p.dtype)
                     for n, p in params.items()}
        h = 1e-5
        with torch.no_grad():
            for n, p in params.items():
                p += h * direction[n]
        up = float(_expected_loss(router, batch))
        with torch.no_grad():
            for n, p in params.items():
                p -= 2 * h * direction[n]
        down = float(_expected_loss(router, batch))
        with torch.no_grad():
            for n, p in params.items():
                p += h * direction[n]
        numeric = (up - down) / (2 * h)
        analytic = sum(float((grads[n] * direction[n]).sum()) for n in params)
        # float64 central differences: truncation O(h^2) and rounding ~ 1e-16 / h ~ 1e-11
        assert abs(numeric - analytic) < 1e-7 * max(1.0, abs(analytic))


@pytest.mark.parametrize("name", ["reinforce", "rloo", "st"])
def test_estimators_on_the_router_by_exact_enumeration(name):
    # the expert and output weights get pathwise draws at the sampled masks: exact in mean for
    # every estimator; the gater's only through the estimator, biased for st
    router, batch = _router()
    _, exact = topk_exact_gradient(router, batch)
    moments = topk_exact_moments(router, get_topk_estimator(name), batch)
    for key in ("output.weight", "experts.bias"):
        assert torch.allclose(moments.mean[key], exact[key], rtol=0, atol=1e-13), key
    for key in ("gater_out.weight", "gater_hidden.weight"):
        error = float((moments.mean[key] - exact[key]).norm() / exact[key].norm())
        assert (error > 1e-3) if name == "st" else (error < 1e-12), (key, error)


def test_full_size_router_runs_a_monte_carlo_draw():
    config = MoEConfig.full_size()
    assert config.num_experts * config.expert_units == 2000
    router = MoERouter(config)
    x, y = torch.rand(2, 784, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 7])
    estimator = get_topk_estimator("reinforce")
    prepared = router.prepare((x, y))
    noise = torch.rand(estimator.noise_shape(router, prepared))
    surrogate = estimator.surrogate(router, prepared, noise, None)
    grad = torch.autograd.grad(surrogate, router.gater_out.weight)[0]
    assert grad.shape == (16, 400) and bool(torch.isfinite(grad).all())


def test_mnist_batch_when_cached():
    from estimator_lab.data import mnist_info

    if not mnist_info()["valid"]:
        pytest.skip("MNIST not cached (estimator-lab data fetch)")
    router, (x, y) = parse_moe_spec({"experts": "4", "k": "1", "batch": "2"},
                                    max_configurations=4)
    assert x.shape == (2, 784) and y.dtype == torch.int64 and router.num_configurations == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"experts": "abc"}, "experts must be int"),
        ({"experts": "4", "k": "4"}, "1 <= k < 4"),
        ({"experts": "4", "k": "0"}, "k must be >= 1"),
        ({"hidden": "0"}, "hidden must be >= 1"),
        ({"size": "huge"}, "size must be tiny or full"),
        ({"data": "cifar"}, "data must be mnist or synthetic"),
        ({"experts": "64", "k": "6", "data": "synthetic"}, "configurations, more than"),
    ],
)
def test_bad_specs_say_why_in_one_line(options, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_moe_spec(options, max_configurations=2**20)
    assert "\n" not in str(info.value)
