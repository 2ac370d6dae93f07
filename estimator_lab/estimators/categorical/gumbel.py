"""The Gumbel-softmax (Concrete) family for categorical gates: relaxed, straight-through, and
Rao-Blackwellised (Gumbel-Rao).

Conventions, per gate with logits `theta` and `K` uniforms `u`: `g = -log(-log u)` are standard
Gumbels, `D = e_argmax(theta + g)` is the categorical sample every hard estimator draws from the
same noise, and `y = softmax((theta + g) / tau)` is the relaxed sample (`y -> D` as
`tau -> 0`). All three are biased estimators of the gradient of `E[L(D)]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from estimator_lab.estimators.base import (
    GateEstimator,
    TemperatureEstimator,
    check_num_samples,
    straight_through,
)
from estimator_lab.estimators.categorical.base import CategoricalEstimator
from estimator_lab.estimators.categorical.registry import register_categorical_estimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph
from estimator_lab.graphs.categorical import (
    categorical_gates,
    conditional_gumbel,
    gumbel_noise,
)


def relaxed_gates(logits: torch.Tensor, noise: torch.Tensor, temperature: float) -> torch.Tensor:
    """`y = softmax((theta + g) / tau)`, `g = -log(-log u)`, differentiable in `theta`."""
    return torch.softmax((logits + gumbel_noise(noise)) / temperature, -1)


def fixed_conditional_scores(
    logits: torch.Tensor, gates: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Perturbed logits drawn given the sample and held fixed: `x = theta + stopgrad(x~ - theta)`.

    `x~ = conditional_gumbel(theta, D, v)` has the law of `theta + g` given `argmax = z`; the
    result has its value and the Jacobian `dx/dtheta = I`, the Jacobian of `theta + g` at a
    fixed `g`: the straight-through Gumbel backward evaluated at a draw of `g` given `D`.

    Args:
        logits: `... x K` logits `theta`.
        gates: the one-hot `D`, broadcastable to `logits`.
        noise: `M x ... x K` uniforms `v` (`M` conditional samples in front).

    Returns:
        `M x ... x K` perturbed logits.
    """
    perturbed = conditional_gumbel(logits.detach(), gates, noise)
    return logits + (perturbed - logits.detach())


def gumbel_rao_relaxation(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """`ybar = (1/M) sum_m softmax(x_m / tau)` over the `M` leading conditional samples of
    `scores` (`M x ... x K` -> `... x K`): the Rao-Blackwellised relaxed sample of Gumbel-Rao.
    """
    return torch.softmax(scores / temperature, -1).mean(0)


class _Relaxed(TemperatureEstimator, CategoricalEstimator):
    """Shared flags of the Gumbel-softmax estimators."""

    is_unbiased = False
    discrete_noise = False


@register_categorical_estimator("gumbel")
class CategoricalGumbel(GateEstimator, _Relaxed):
    """The loss at the relaxed sample `y = softmax((theta + g) / tau)`, pathwise.

    The surrogate is `mean_b L_b(y)`. As an estimate of the gradient of `E[L(D)]` it is
    biased (the loss is evaluated off the vertices of the simplex); it is the unbiased
    pathwise gradient of `E[L(y)]`, which this flag does not claim.

    Args:
        temperature: `tau > 0` (default 1).

    References:
        Jang, Gu, Poole (2017), "Categorical reparameterization with Gumbel-softmax", ICLR;
        Maddison, Mnih, Teh (2017), "The Concrete distribution", ICLR.
    """

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        return relaxed_gates(logits, noise, self.temperature)


@register_categorical_estimator("st-gumbel")
class CategoricalStraightThroughGumbel(GateEstimator, _Relaxed):
    """Straight-through Gumbel-softmax: forward `D`, backward through `y`.

    The gate enters the loss as `D + y - stopgrad(y)`: the logits get
    `J(y) dL/dD (D) / tau`, `J(y) = diag(y) - y y^T`. Its draw depends on `g` beyond `D`.

    Args:
        temperature: `tau > 0` (default 1).

    References:
        Jang, Gu, Poole (2017), section 2.2 (straight-through Gumbel-softmax).
    """

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        relaxed = relaxed_gates(logits, noise, self.temperature)
        return straight_through(categorical_gates(logits, noise), relaxed)


@register_categorical_estimator("gumbel-rao")
@dataclass(eq=False, repr=False)
class GumbelRao(_Relaxed):
    """Gumbel-Rao: straight-through Gumbel averaged over `M` Gumbels drawn given the sample.

    Forward `D` from the first `B x N x K` slice of the noise; backward through
    `ybar = (1/M) sum_m softmax(x_m / tau)`, where `x_m` are perturbed logits drawn from their
    conditional law given `argmax = z` (`conditional_gumbel`, from the other `M` slices). The
    conditional Gumbels are held fixed: `x_m = theta + stopgrad(x~_m - theta)`, so the
    backward is the softmax Jacobian at `x_m` applied to the identity `dx/dtheta`, exactly the
    ST-Gumbel backward evaluated at a draw of `g` given `D`. Then `E[draw | D] = E[ST-Gumbel |
    D]`: same mean as `st-gumbel`, smaller variance (Rao-Blackwell). Differentiating through
    `x~(theta, D, v)` instead changes the mean (tests/estimators/test_categorical.py settles
    this by quadrature). This matches the authors' reference (Appendix A) and public
    implementations, which compute the conditional Gumbels without gradient.

    Args:
        temperature: `tau > 0` (default 1).
        num_samples: `M >= 1` conditional samples (default 10); `M = 1` has `st-gumbel`'s mean.

    References:
        Paulus, Maddison, Krause (2021), "Rao-Blackwellizing the straight-through Gumbel-softmax
        gradient estimator", ICLR, arXiv 2010.04838.
    """

    num_samples: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        self.num_samples = check_num_samples(self, self.num_samples, 1)

    def noise_shape(self, graph: StochasticGraph, prepared: PreparedBatch) -> tuple[int, ...]:
        """`(1 + M) x B x N x K`: the sample's uniforms, then `M` conditional ones."""
        return (1 + self.num_samples, *super().noise_shape(graph, prepared))

    def conditional_scores(
        self, logits: torch.Tensor, gates: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """`M x ... x K` perturbed logits given the sample (`fixed_conditional_scores`)."""
        return fixed_conditional_scores(logits, gates, noise)

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        self.check_graph(graph)
        logits = prepared.logits
        gates = categorical_gates(logits, noise[0])
        soft = gumbel_rao_relaxation(self.conditional_scores(logits, gates, noise[1:]),
                                     self.temperature)
        return graph.loss(prepared, straight_through(gates, soft)).mean()
