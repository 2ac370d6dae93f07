"""Sparse test-time evaluation agrees with the dense network and counts its work."""

import torch

from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork
from estimator_lab.train.gaters import PAPER_GATERS, activity_threshold
from estimator_lab.train.sparse import (
    dense_scores,
    multiply_adds,
    sparse_scores,
    time_sparse_inference,
)


def _net():
    config = ConditionalConfig(num_inputs=20, num_gater_hidden=6, num_gates=50)
    return ConditionalNetwork(config, torch.Generator().manual_seed(0)).double()


def test_sparse_scores_equal_dense_scores_for_every_thresholded_gater():
    net = _net()
    x = torch.rand(7, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    threshold = activity_threshold(net.prepare((x, x.new_zeros(0))).logits, 0.1)
    for name, gater in PAPER_GATERS.items():
        if gater.thresholded:
            assert torch.allclose(sparse_scores(net, gater, x, threshold),
                                  dense_scores(net, gater, x, threshold), atol=1e-12), name


def test_multiply_adds_of_the_paper_network():
    dense, sparse = multiply_adds(ConditionalNetwork(), 0.1)
    assert dense == 784 * 400 + 400 * 2000 + 784 * 2000 + 2000 * 10
    assert sparse == 784 * 400 + 400 * 2000 + 0.1 * (784 * 2000 + 2000 * 10)


def test_timing_reports_agreement_and_the_active_fraction():
    net = _net()
    x = torch.rand(5, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    threshold = activity_threshold(net.prepare((x, x.new_zeros(0))).logits, 0.2)
    timing = time_sparse_inference(net, PAPER_GATERS["straight-through"], x, threshold, repeats=1)
    assert timing.max_abs_difference < 1e-12
    assert abs(timing.active_fraction - 0.2) < 0.01
    assert timing.madds_ratio > 1 and timing.dense_ms > 0 and timing.sparse_ms > 0
