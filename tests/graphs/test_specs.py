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


def test_topk_toy_spec_builds_the_seeded_toy_in_float64():
    problem = build_problem("topk-toy:n=2,classes=5,k=3,t=0.3,batch=2", seed=4)
    graph, (x,) = problem.graph, problem.batch
    assert (graph.num_gates, graph.num_classes, graph.num_chosen) == (2, 5, 3)
    assert graph.distribution == "topk" and graph.target == 0.3 and x.shape == (2, 0)
    assert graph.theta.dtype == torch.float64 and graph.num_configurations == 100
    again = build_problem("topk-toy:n=2,classes=5,k=3,t=0.3,batch=2", seed=4).graph
    assert torch.equal(graph.theta, again.theta)


def test_moe_and_cat_vae_specs_build_float64_graphs_with_their_batches():
    moe = build_problem("moe:experts=5,k=2,hidden=3,block=2,batch=3,data=synthetic", seed=1)
    x, y = moe.batch
    assert moe.graph.distribution == "topk" and moe.graph.num_configurations == 10
    assert x.shape == (3, 784) and x.dtype == torch.float64 and y.dtype == torch.int64
    assert moe.graph.gater_out.weight.dtype == torch.float64
    vae = build_problem("cat-vae:latents=2,classes=3,hidden=4,batch=2,data=synthetic", seed=1)
    (images,) = vae.batch
    assert vae.graph.distribution == "categorical" and vae.graph.num_configurations == 9
    assert images.shape == (2, 784) and set(images.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("topk-toy:k=0", "a top-k gate chooses 1 <= k < 4 classes, got k=0"),
        ("topk-toy:classes=4,k=5", "a top-k gate chooses 1 <= k < 4 classes, got k=5"),
        ("topk-toy:classes=1", "a top-k gate needs at least 2 classes, got 1"),
        ("topk-toy:k=abc", "topk-toy k must be int, got 'abc'"),
        ("topk-toy:n=0", "topk-toy needs n >= 1 gates, got n=0"),
        ("topk-toy:batch=0", "topk-toy batch must be >= 1, got batch=0"),
        ("topk-toy:t=nan", "topk-toy target t must be finite"),
        ("topk-toy:n=5,classes=8,k=3", "5 top-3 gates of 8 classes make C(8,3)^5 = "
                                       "550,731,776 configurations, more than the limit of "
                                       "4,194,304"),
        ("topk-toy:n=1000000000,classes=20,k=3", "C(20,3)^1000000000 configurations, more than"),
        ("topk-toy:n=2,q=1", "unknown q"),
        ("moe:experts=abc", "moe experts must be int, got 'abc'"),
        ("moe:experts=4,k=0", "moe k must be >= 1, got k=0"),
        ("moe:experts=4,k=4", "a top-k gate chooses 1 <= k < 4 classes, got k=4"),
        ("moe:experts=64,k=6", "1 top-6 gates of 64 classes make C(64,6)^1 = 74,974,368 "
                               "configurations, more than the limit of 4,194,304"),
        ("moe:size=huge", "moe size must be tiny or full, got 'huge'"),
        ("moe:data=synthetic,q=1", "unknown q"),
        ("cat-vae:classes=1", "cat-vae needs classes >= 2, got classes=1"),
        ("cat-vae:latents=x", "cat-vae latents must be int, got 'x'"),
        ("cat-vae:latents=7,classes=8", "8^7 = 2,097,152 configurations, more than the limit "
                                        "of 1,048,576"),
        ("cat-vae:data=cifar", "data must be mnist or synthetic, got 'cifar'"),
    ],
)
def test_bad_topk_and_categorical_specs_raise_one_clear_line(spec, message):
    with pytest.raises(GraphSpecError) as error:
        build_problem(spec)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith(("bad graph spec", "malformed graph spec"))
