"""Gumbel-Rao for Bernoulli gates: the two-class case of the categorical Gumbel-Rao estimator.

A Bernoulli gate with logit `a` is a categorical gate over the classes (on, off) with logits
`(a, 0)`: `sigmoid(a) = softmax(a, 0)_on`, and with Gumbels `g_on, g_off` the difference
`g_on - g_off` is a `Logistic(0, 1)` sample, so `softmax((a + g_on, g_off) / tau)_on` is the
binary Concrete gate `sigmoid((a + l) / tau)` of `st-gumbel`. The conditional Gumbels given the
gate, and their average, are the categorical ones (`conditional_gumbel`,
`fixed_conditional_scores`, `gumbel_rao_relaxation`) applied to those two logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from estimator_lab.estimators.base import (
    TemperatureEstimator,
    bernoulli_gates,
    check_num_samples,
    require_single_layer,
    straight_through,
)
from estimator_lab.estimators.categorical.gumbel import (
    fixed_conditional_scores,
    gumbel_rao_relaxation,
)
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


def binary_gumbel_rao_relaxation(
    logits: torch.Tensor, gates: torch.Tensor, noise: torch.Tensor, temperature: float
) -> torch.Tensor:
    """`sbar = (1/M) sum_m sigmoid(x_m / tau)`, `x_m` the perturbed logit `a + l` drawn given
    the gate `b` and held fixed (`dx_m/da = 1`).

    Args:
        logits: `... x G` gate logits `a`.
        gates: the `... x G` hard gates `b` in {0, 1}.
        noise: `M x 2 x ... x G` uniforms: a pair per conditional sample and gate.

    Returns:
        the `... x G` relaxed gates, differentiable in `logits` with the derivative
        `(1/M) sum_m s_m (1 - s_m) / tau`.

    Example:
        >>> a, b = torch.tensor([0.3]), torch.tensor([1.0])
        >>> s = binary_gumbel_rao_relaxation(a, b, torch.rand(50, 2, 1), 1.0)
        >>> bool(s > 0.5)  # every conditional sample has a + l > 0
        True
    """
    two_class = torch.stack([logits, torch.zeros_like(logits)], -1)  # ... x G x (on, off)
    one_hot = torch.stack([gates, 1 - gates], -1)
    pairs = noise.movedim(1, -1)  # M x ... x G x 2
    return gumbel_rao_relaxation(fixed_conditional_scores(two_class, one_hot, pairs),
                                 temperature)[..., 0]


@register_estimator("gumbel-rao")
@dataclass(eq=False, repr=False)
class BinaryGumbelRao(TemperatureEstimator):
    """Gumbel-Rao for Bernoulli gates: forward `b = 1[u < p]`, backward through `sbar`.

    `sbar = (1/M) sum_m sigmoid(x_m / tau)` with `x_m ~ (a + l) | b` (the logistic perturbation
    conditioned on the sampled gate, `binary_gumbel_rao_relaxation`), held fixed, so the gate
    logits get `dL/db (b) (1/M) sum_m s_m (1 - s_m) / tau`. For every `M`,
    `E[draw | b] = E[st-gumbel draw | b]`: the same mean as `st-gumbel` (biased for the
    Bernoulli objective), and a variance that falls with `M` from `st-gumbel`'s (`M = 1` has
    its law) to that of `E[st-gumbel draw | b]` (Rao-Blackwell). As in the categorical
    `gumbel-rao`, the conditional
    Gumbels are not differentiated through; tests/estimators/test_gumbel_rao.py checks the mean
    against `st-gumbel`'s exact one and shows that differentiating through them changes it.

    One draw reads `(1 + 2M) x B x G` uniforms: the gates' `u` first (the same gates as `st`,
    `st-gumbel` and `reinforce` under common random numbers), then a pair per conditional
    sample. One loss evaluation per draw; one gate layer.

    Args:
        temperature: `tau > 0` (default 1).
        num_samples: `M >= 1` conditional samples (default 10).

    References:
        Paulus, Maddison, Krause (2021), "Rao-Blackwellizing the straight-through Gumbel-softmax
        gradient estimator", ICLR, arXiv 2010.04838.
    """

    is_unbiased = False

    num_samples: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        self.num_samples = check_num_samples(self, self.num_samples, 1)

    def noise_shape(self, graph: StochasticGraph, prepared: PreparedBatch) -> tuple[int, ...]:
        """`(1 + 2M) x B x G`: the gates' uniforms, then `M` pairs."""
        return (1 + 2 * self.num_samples, *super().noise_shape(graph, prepared))

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        require_single_layer(graph, self)
        pairs = noise[1:].unflatten(0, (self.num_samples, 2))  # M x 2 x B x G

        def gate(layer: int, logits: torch.Tensor, layer_noise: torch.Tensor) -> torch.Tensor:
            hard = bernoulli_gates(logits.detach(), layer_noise)
            soft = binary_gumbel_rao_relaxation(logits, hard, pairs, self.temperature)
            return straight_through(hard, soft)

        return graph.sample(prepared, noise[0], gate).losses.mean()
