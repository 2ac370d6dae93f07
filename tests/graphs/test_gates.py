"""`bernoulli_log_prob`: its closed-form gradients against autograd's cross-entropy, in float64."""

import pytest
import torch
import torch.nn.functional as F

from estimator_lab.graphs.gates import bernoulli_gates, bernoulli_log_prob


def _inputs(*shape):
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(*shape, generator=generator, dtype=torch.float64)
    gates = bernoulli_gates(logits, torch.rand(*shape, generator=generator, dtype=torch.float64))
    return logits.requires_grad_(), gates


def _reference(logits, gates):
    return -F.binary_cross_entropy_with_logits(logits, gates, reduction="none")


def test_value_is_the_bernoulli_log_likelihood_even_for_large_logits():
    # log P(1) = log sigmoid(a), log P(0) = log sigmoid(-a): another kernel than the
    # cross-entropy (which Bernoulli.log_prob shares with the function under test).
    logits = torch.tensor([-800.0, -3.0, 0.0, 3.0, 800.0], dtype=torch.float64)
    for value, expected in ((1.0, F.logsigmoid(logits)), (0.0, F.logsigmoid(-logits))):
        gates = torch.full_like(logits, value)
        assert torch.allclose(bernoulli_log_prob(logits, gates), expected, rtol=1e-15, atol=0)


def test_gradients_pass_gradcheck_and_gradgradcheck():
    logits, gates = _inputs(3, 4)
    gates = gates.clone().requires_grad_()  # the gates' gradient (a relaxed sample's path)
    assert torch.autograd.gradcheck(bernoulli_log_prob, (logits, gates))
    assert torch.autograd.gradgradcheck(bernoulli_log_prob, (logits, gates))


def test_gradients_equal_autograds_of_the_cross_entropy():
    logits, gates = _inputs(5, 7)
    weights = torch.randn(5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours, = torch.autograd.grad((weights * bernoulli_log_prob(logits, gates)).sum(), logits)
    theirs, = torch.autograd.grad((weights * _reference(logits, gates)).sum(), logits)
    assert torch.allclose(ours, theirs, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("batched_logits", [False, True])
def test_vmap_of_grad_matches_a_loop(batched_logits):
    logits, _ = _inputs(4, 6)
    logits = logits.detach()
    noise = torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def surrogate(a, u):
        gates = bernoulli_gates(a.detach(), u)
        return (a.sum(-1, keepdim=True).detach() * bernoulli_log_prob(a, gates)).sum()

    stacked = logits.expand(3, 4, 6) if batched_logits else logits
    in_dims = (0 if batched_logits else None, 0)
    vmapped = torch.func.vmap(torch.func.grad(surrogate), in_dims=in_dims)(stacked, noise)
    looped = torch.stack([torch.func.grad(surrogate)(logits, u) for u in noise])
    assert torch.allclose(vmapped, looped, rtol=1e-15, atol=0)
