"""Decoupled straight-through Gumbel (Shah et al., 2024): separate forward and backward
temperatures for Bernoulli gates."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from estimator_lab.estimators.base import GateEstimator, bernoulli_gates, straight_through
from estimator_lab.estimators.gumbel import concrete_gates
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import StochasticGraph


@register_estimator("decoupled-st")
@dataclass(eq=False, repr=False)
class DecoupledST(GateEstimator):
    """Straight-through Gumbel with a forward temperature `tau_f` and a backward one `tau_b`.

    With logistic noise `l = log(1 - u) - log u` (the `gumbel` module's convention), the forward
    pass uses the hard gate of the logits scaled by the forward temperature,
    `b = 1[a / tau_f + l > 0] = 1[u < sigmoid(a / tau_f)]` (`tau_f > 1` explores, flattening the
    gate towards 1/2; `tau_f < 1` sharpens it), and the backward pass the relaxed gate of the same
    perturbed logit at the backward temperature, `s = sigmoid((a / tau_f + l) / tau_b)`:
    the gate enters the loss as `b + (s - stopgrad(s))`, so the gate logits get
    `dL/db (b) s (1 - s) / (tau_f tau_b)`. At `tau_f = 1` it is `st-gumbel` with temperature
    `tau_b`, draw by draw. Biased for the Bernoulli objective (like `st-gumbel`; for `tau_f != 1`
    the forward gates are `Bernoulli(sigmoid(a / tau_f))`, not `Bernoulli(p)`).

    Note: the paper tunes the two temperatures separately ("forward-pass stochasticity" and
    "backward-pass gradient dispersion"); placing `tau_f` on the logits of the sampled gate is
    this module's reading for two-class gates.

    Args:
        forward_temperature: `tau_f > 0` (default 1).
        backward_temperature: `tau_b > 0` (default 1).

    Example:
        >>> from estimator_lab.graphs.toy import ToyGraph
        >>> toy = ToyGraph([0.0], target=0.45)
        >>> prepared = toy.prepare(toy.example_batch())
        >>> est = DecoupledST(forward_temperature=1.0, backward_temperature=0.5)
        >>> s = est.surrogate(toy, prepared, torch.tensor([[0.25]]), None)
        >>> torch.autograd.grad(s, toy.theta)[0]  # st-gumbel(0.5): 2 (1 - t) 0.9 (1 - 0.9) / 0.5
        tensor([0.1980], dtype=torch.float64)

    References:
        Shah, Yan, Mozer, Liu (2024), "Improving discrete optimisation via decoupled
        straight-through Gumbel-softmax", arXiv 2410.13331.
    """

    is_unbiased = False
    multilayer = True

    forward_temperature: float = 1.0
    backward_temperature: float = 1.0

    def __post_init__(self) -> None:
        temperatures = {"forward": self.forward_temperature,
                        "backward": self.backward_temperature}
        for label, value in temperatures.items():
            if not value > 0:
                raise ValueError(f"{label}_temperature must be > 0, got {value}")
        self.forward_temperature = float(self.forward_temperature)
        self.backward_temperature = float(self.backward_temperature)

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        scaled = logits / self.forward_temperature
        relaxed = concrete_gates(scaled, noise, self.backward_temperature)
        return straight_through(bernoulli_gates(scaled.detach(), noise), relaxed)
