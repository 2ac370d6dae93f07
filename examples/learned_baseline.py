"""A new estimator in a user's file: REINFORCE with an input-dependent learned baseline.

Validate it end to end with

    estimator-lab validate examples/learned_baseline.py --out reports/validate/example

The baseline of example `j` is a linear function of its gate probabilities,
`c_j = w^T sigmoid(a_j) + w_0`, where `a_j` are the gate logits of layer 0, which depend on the
input `x_j` and the parameters but not on the sampled gates. `w` is learned on the squared error
`(L_j - c_j)^2` in `update` by normalised least mean squares (SGD with the step divided by
`||f_j||^2`, stable whatever the number of gates), with the state frozen while a draw is made, so
`E[(b - p) c_j] = 0` and the estimator stays unbiased whatever `w` is.
"""

from __future__ import annotations

from typing import Any

import torch

from estimator_lab.estimators import GradientEstimator
from estimator_lab.estimators.base import hard_bernoulli, trace_log_prob


class ReinforceLearnedBaseline(GradientEstimator):
    """REINFORCE centred by `c_j = w^T sigmoid(a_j) + w_0`, fitted to `L_j` by normalised LMS.

    Args:
        learning_rate: the normalised step size, in `(0, 2)` for a stable fit.
    """

    name = "reinforce-learned-baseline"
    is_unbiased = True  # c_j depends on the input through a_j, never on the sampled gates
    multilayer = True
    discrete_noise = True

    def __init__(self, learning_rate: float = 0.1) -> None:
        self.learning_rate = float(learning_rate)

    def init(self, graph) -> torch.Tensor:
        """The weights `(w, w_0)`: a `G_0 + 1` tensor of zeros (plain REINFORCE at first)."""
        param = next(graph.parameters())
        return torch.zeros(graph.layer_sizes[0] + 1, dtype=param.dtype, device=param.device)

    @staticmethod
    def _baseline(logits: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """`c`, a `B` tensor, from the `B x G_0` layer-0 logits (detached)."""
        return torch.sigmoid(logits.detach()) @ state[:-1] + state[-1]

    def surrogate(self, graph, prepared, noise: torch.Tensor, state: torch.Tensor):
        trace = graph.sample(prepared, noise, hard_bernoulli)
        losses = trace.losses
        centred = (losses - self._baseline(prepared.logits, state)).detach()
        return (losses + centred * trace_log_prob(trace)).mean()

    @torch.no_grad()
    def update(self, state: torch.Tensor, graph, prepared, noise: torch.Tensor) -> Any:
        losses = graph.sample(prepared, noise, hard_bernoulli).losses
        features = torch.cat([torch.sigmoid(prepared.logits),
                              torch.ones_like(prepared.logits[:, :1])], -1)  # B x (G_0 + 1)
        error = losses - features @ state
        scale = features.square().sum(-1).mean()  # normalised LMS: stable for any G_0
        return state + self.learning_rate * (features * error.unsqueeze(-1)).mean(0) / scale

    def __repr__(self) -> str:
        return f"ReinforceLearnedBaseline(learning_rate={self.learning_rate})"
