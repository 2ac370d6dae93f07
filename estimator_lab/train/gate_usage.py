"""Do the test-time gates select the units training used? A diagnostic of a trained gater.

A gater trained with stochastic gates is evaluated with deterministic ones (a unit is on iff its
logit exceeds the tuned threshold). That works when the gater has become *decisive*: each unit
is on with probability near 1 for some inputs and near 0 for the others, so thresholding keeps
the units training relied on. An *indecisive* gater (every unit on with probability near the
10 % target whatever the input, Appendix A.2) trains the rest of the network like a heavy
dropout network, and the thresholded selection is close to arbitrary. Two figures tell them
apart: `agreement`, the fraction of test-time-on (example, unit) pairs also on under one draw of
the training gates (1 for a decisive gater, about the target for an indecisive one), and the
error with the sampled training gates next to the thresholded error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from estimator_lab.graphs import ConditionalNetwork
from estimator_lab.montecarlo.noise import uniform_noise
from estimator_lab.train.gaters import (
    NOISE_STREAMS,
    GaterConfig,
    deterministic_gates,
    training_gates,
)


@dataclass(frozen=True)
class GateUsage:
    """How the training gates of a network relate to its test-time gates.

    Attributes:
        thresholded_error: error (%) with the deterministic test-time gates.
        sampled_error: error (%) with one draw of the training gates.
        agreement: among (example, unit) pairs on at test time, the fraction also on (non-zero)
            in the draw of training gates (`nan` for configurations without a threshold).
        sampled_activity: fraction of non-zero training gates in the draw.
    """

    thresholded_error: float
    sampled_error: float
    agreement: float
    sampled_activity: float


@torch.no_grad()
def gate_usage(
    net: ConditionalNetwork,
    gater: GaterConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    threshold: float,
    *,
    seed: int = 0,
    chunk: int = 2000,
) -> GateUsage:
    """Measures `GateUsage` on `images` (`N x num_inputs`) with labels `labels` (`N`).

    Args:
        threshold: the test-time logit threshold (ignored without thresholding).
        seed: seeds the draw of training gates (chunk `k` uses noise draw `k`).
        chunk: examples per forward pass.
    """
    wrong_thresholded = wrong_sampled = 0
    both_on = test_on = sampled_on = 0.0
    for index, start in enumerate(range(0, images.shape[0], chunk)):
        prepared = net.prepare((images[start:start + chunk], labels[start:start + chunk]))
        logits, truth = prepared.logits, prepared.features["labels"]
        noise = uniform_noise(seed, range(index, index + 1), (NOISE_STREAMS, *logits.shape),
                              dtype=logits.dtype, device=logits.device)[0]
        sampled = training_gates(gater, logits, noise)
        tested = deterministic_gates(gater, logits, threshold)
        wrong_thresholded += _mistakes(net, prepared, tested, truth)
        wrong_sampled += _mistakes(net, prepared, sampled, truth)
        both_on += ((tested != 0) & (sampled != 0)).sum().item()
        test_on += (tested != 0).sum().item()
        sampled_on += (sampled != 0).sum().item()
    total = images.shape[0]
    return GateUsage(
        thresholded_error=100.0 * wrong_thresholded / total,
        sampled_error=100.0 * wrong_sampled / total,
        agreement=both_on / test_on if gater.thresholded and test_on else math.nan,
        sampled_activity=sampled_on / (total * net.num_gates),
    )


def _mistakes(net, prepared, gates: torch.Tensor, truth: torch.Tensor) -> int:
    return (net.output_logits(prepared, gates).argmax(-1) != truth).sum().item()
