"""Graph specs: what they build, and one clear error for each bad spec."""

import pytest
import torch

from estimator_lab.graphs.specs import GraphSpecError, build_problem


def test_toy_spec_seeded_and_given_logits():
    seeded = build_problem("toy:n=6,t=0.45", seed=2)
    assert seeded.graph.num_gates == 6 and seeded.graph.target == 0.45
    assert torch.equal(seeded.graph.theta, build_problem("toy:n=6,t=0.45", seed=2).graph.theta)
    given = build_problem("toy:logits=0.5/-1/2,t=0.3")
    assert given.graph.theta.tolist() == [0.5, -1.0, 2.0]
    assert given.graph.theta.dtype == torch.float64


def test_sbn_spec_layers_inputs_and_batch():
    problem = build_problem("sbn:4-4-4,inputs=6,batch=3")
    assert problem.graph.layer_sizes == (4, 4, 4) and problem.graph.num_gates == 12
    (x,) = problem.batch
    assert x.shape == (3, 6) and set(x.unique().tolist()) <= {0.0, 1.0}


def test_binary_vae_spec_linear_and_nonlinear_on_binary_observations():
    linear = build_problem("binary-vae:latents=3,inputs=8,batch=2", seed=1)
    assert linear.graph.num_gates == 3 and linear.graph.config.hidden == ()
    (x,) = linear.batch
    assert x.shape == (2, 8) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert build_problem("binary-vae:latents=2,hidden=4").graph.config.hidden == (4,)


@pytest.mark.network
def test_tiny_conditional_uses_real_mnist(mnist_env):
    problem = build_problem("tiny-conditional:gates=12,batch=4")
    x, y = problem.batch
    assert problem.graph.num_gates == 12 and x.shape == (4, 784) and y.dtype == torch.int64


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("foo:n=3", "unknown graph 'foo'"),
        ("toy:n=40", "2^40 = 1,099,511,627,776 configurations exceed the enumeration limit"),
        ("toy:n=x", "n must be int"),
        ("toy:n=", "bad item 'n='"),
        ("toy:n=3,q=1", "unknown q"),
        ("toy:n=0", "n must be >= 1, got 0"),
        ("toy:n=-3", "n must be >= 1, got -3"),
        ("toy:n=100000", "'toy:n=100000' has 100,000 gates: 2^100000 configurations exceed the "
                         "enumeration limit of 4,194,304"),
        ("toy:n=3,batch=0", "batch must be >= 1, got 0"),
        ("toy:n=3,t=nan", "t must be finite, got nan"),
        ("toy:n=3,t=inf", "t must be finite, got inf"),
        ("toy:logits=inf/1", "logits and target must be finite"),
        ("toy:logits=1/nan,t=0.3", "logits and target must be finite"),
        ("sbn:4-0", "layer sizes must be >= 1"),
        ("sbn:2-2,batch=0", "batch must be >= 1, got 0"),
        ("sbn:2-2,inputs=0", "inputs must be >= 1, got 0"),
        ("sbn:2-2,scale=nan", "scale must be finite, got nan"),
        ("sbn:30-30", "2^60 = 1,152,921,504,606,846,976 configurations exceed"),
        ("tiny-conditional:gates=4,batch=0", "batch must be >= 1, got 0"),
        ("tiny-conditional:gates=4,hidden=0", "hidden must be >= 1, got 0"),
        ("sbn:4-a", "layer sizes"),
        ("sbn", "give layer sizes like sbn:4-4"),
        ("tiny-conditional:gates=17", "tiny-conditional takes 1 to 16 gates, got 17"),
        ("binary-vae:latents=0", "latents must be >= 1, got 0"),
        ("binary-vae:latents=30", "2^30 = 1,073,741,824 configurations exceed"),
        ("binary-vae:hidden=-1", "hidden must be >= 0, got -1"),
        ("binary-vae:inputs=x", "inputs must be int"),
    ],
)
def test_bad_specs_raise_one_clear_line(spec, message):
    with pytest.raises(GraphSpecError, match=None) as error:
        build_problem(spec)
    assert message in str(error.value) and "\n" not in str(error.value)
