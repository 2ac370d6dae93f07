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

Decisive is not enough: the expert path is linear, so the gates are the network's only
non-linearity, and a gater that switches on the same units for every input leaves a linear
classifier. `selection_overlap` measures how input-dependent the test-time selection is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from estimator_lab.graphs import ConditionalNetwork
from estimator_lab.noise import uniform_noise
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
        selection_overlap: `sum_j r_j^2 / sum_j r_j` with `r_j` the fraction of examples whose
            test-time gate `j` is on: the expected share of one example's on units that are
            also on for another example drawn at random; 1 when every input selects the same
            units, the target (0.1) when each unit is on for the same share of inputs
            independently of the others' selection (`nan` without a threshold).
    """

    thresholded_error: float
    sampled_error: float
    agreement: float
    sampled_activity: float
    selection_overlap: float


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
    unit_on = torch.zeros(net.num_gates, dtype=torch.float64, device=images.device)
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
        unit_on += (tested != 0).sum(0)
    total = images.shape[0]
    rates = unit_on / total
    return GateUsage(
        thresholded_error=100.0 * wrong_thresholded / total,
        sampled_error=100.0 * wrong_sampled / total,
        agreement=both_on / test_on if gater.thresholded and test_on else math.nan,
        sampled_activity=sampled_on / (total * net.num_gates),
        selection_overlap=(rates.square().sum() / rates.sum()).item()
        if gater.thresholded and test_on else math.nan,
    )


def _mistakes(net, prepared, gates: torch.Tensor, truth: torch.Tensor) -> int:
    return (net.output_logits(prepared, gates).argmax(-1) != truth).sum().item()
