"""Straight-through estimators for categorical gates: plain (`st`) and Gapped (`gst`).

Both forward the one-hot Gumbel-max sample `D` and backpropagate through a smooth stand-in
`y(theta)`: the gate enters the loss as `D + y - stopgrad(y)`, whose value is exactly `D` (the
same sample as `reinforce` under the same noise) and whose Jacobian is `dy/dtheta`. Both depend
on the noise only through `D` (`discrete_noise`), and both are biased.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from estimator_lab.estimators.base import GateEstimator, straight_through
from estimator_lab.estimators.categorical.base import CategoricalEstimator
from estimator_lab.estimators.categorical.registry import register_categorical_estimator
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.categorical import categorical_gates


@register_categorical_estimator("st")
class CategoricalStraightThrough(GateEstimator, CategoricalEstimator):
    """Forward `D`; backward through `p = softmax(theta)`: `g_theta = J(p) dL/dD` (biased).

    `J(p) = diag(p) - p p^T` is the softmax Jacobian. On a loss linear in `D` the draw is the
    exact gradient `J(p) E[dL/dD]`; otherwise it is biased.

    Example:
        >>> from estimator_lab.graphs.categorical import CategoricalToy
        >>> toy = CategoricalToy(torch.zeros(1, 2), target=0.0)  # L = D_1^2: dL/dD = (0, 2)
        >>> prepared = toy.prepare(toy.example_batch())
        >>> est = CategoricalStraightThrough()
        >>> s = est.surrogate(toy, prepared, torch.tensor([[[0.1, 0.9]]]), None)
        >>> torch.autograd.grad(s, toy.theta)[0]  # J(1/2, 1/2) (0, 2)
        tensor([[-0.5000,  0.5000]], dtype=torch.float64)

    References:
        Bengio, Léonard, Courville (2013), section 4; Jang, Gu, Poole (2017) (the categorical
        straight-through form).
    """

    is_unbiased = False
    discrete_noise = True

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        return straight_through(categorical_gates(logits, noise), torch.softmax(logits, -1))


def gapped_logits(logits: torch.Tensor, gates: torch.Tensor, gap: float) -> torch.Tensor:
    """GST's perturbed logits: `D`'s logit raised to the maximum, the others at least `gap`
    below it.

    With `l = log_softmax(theta)`, `m = max_j l_j`, the perturbation is
    `m1 - m2`, `m1 = (m - l) D`, `m2 = relu(l - m + gap) (1 - D)`, held constant (detached):
    the result is `l + stopgrad(m1 - m2)`, whose argmax is `z` with a margin of `gap`.

    Example:
        >>> gapped_logits(torch.log(torch.tensor([0.5, 0.3, 0.2])),
        ...               torch.tensor([0.0, 0.0, 1.0]), 1.0).exp()  # 0.5 / e, 0.5 / e, 0.5
        tensor([0.1839, 0.1839, 0.5000])
    """
    log_probs = torch.log_softmax(logits, -1)
    top = log_probs.detach().max(-1, keepdim=True).values
    raise_chosen = (top - log_probs.detach()) * gates
    lower_others = torch.relu(log_probs.detach() - top + gap) * (1 - gates)
    return log_probs + (raise_chosen - lower_others)


@register_categorical_estimator("gst")
@dataclass(eq=False, repr=False)
class GappedStraightThrough(GateEstimator, CategoricalEstimator):
    """Gapped straight-through: forward `D`, backward through `softmax(gapped_logits / tau)`.

    Like straight-through Gumbel, but the Gumbel perturbation is replaced by a deterministic
    one given `D` (`gapped_logits`: the sampled class's log-probability raised to the
    maximum, every other one pushed at least `gap` below it), so the draw depends on the noise
    through `D` only and has no resampling variance. With `l = log_softmax(theta)`,
    `m = max_j l_j`, `x = l + stopgrad((m - l) D - relu(l - m + kappa) (1 - D))` and
    `s = softmax(x / tau)`, the logits get `g_theta = J(s) dL/dD (D) / tau`
    (`J(pi) = diag(pi) - pi pi^T`; the shift of `log_softmax` does not change `s`). Biased.

    Args:
        temperature: `tau > 0` (default 1).
        gap: the margin `kappa > 0` (default 1, the authors' choice).

    References:
        Fan, Wang, Gong, Zhang, Poczos, Ye (2022), "Training discrete deep generative models via
        gapped straight-through estimator", ICML (Algorithm 1).
    """

    is_unbiased = False
    discrete_noise = True

    temperature: float = 1.0
    gap: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0 or not self.gap > 0:
            raise ValueError(f"gst needs temperature > 0 and gap > 0, got {self.temperature}, "
                             f"{self.gap}")
        self.temperature, self.gap = float(self.temperature), float(self.gap)

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        gates = categorical_gates(logits, noise)
        soft = torch.softmax(gapped_logits(logits, gates, self.gap) / self.temperature, -1)
        return straight_through(gates, soft)
