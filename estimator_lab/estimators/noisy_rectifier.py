"""The noisy rectifier `h = max(0, a + z)`, paper section 2.1 and Proposition 1."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from estimator_lab.estimators.base import GateEstimator
from estimator_lab.estimators.gumbel import logistic_noise
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import StochasticGraph

NOISES = ("gaussian", "logistic")


def rectifier_noise(noise: torch.Tensor, kind: str, sigma: float) -> torch.Tensor:
    """Zero-mean noise `z` from uniforms by the inverse CDF, mirrored: `z = F^{-1}(1 - u)`.

    Gaussian: `z = -sigma ndtri(u)`, `N(0, sigma^2)`; logistic: `z = sigma (log(1 - u) - log u)`,
    `Logistic(0, sigma)`. Both laws are symmetric, so the mirror does not change them; it makes
    `a + z > 0` the event `u < P(h > 0)`, with `P(h > 0) = Phi(a / sigma)` or
    `sigmoid(a / sigma)`. For logistic noise with `sigma = 1` that event is `u < sigmoid(a)`:
    the rectifier is on exactly where the Bernoulli gate `1[u < sigmoid(a)]` drawn from the same
    noise is on. `u` is clamped into `[tiny, 1 - eps / 2]` so `z` stays finite.

    Args:
        noise: uniforms on `[0, 1)`.
        kind: `"gaussian"` or `"logistic"`.
        sigma: the noise scale (standard deviation, or logistic scale).

    Example:
        >>> rectifier_noise(torch.tensor([0.5, 0.25]), "logistic", 1.0)
        tensor([0.0000, 1.0986])
        >>> rectifier_noise(torch.tensor([0.975, 0.025]), "gaussian", 2.0)
        tensor([-3.9199,  3.9199])
    """
    if kind == "logistic":
        return sigma * logistic_noise(noise)
    info = torch.finfo(noise.dtype)
    return -sigma * torch.special.ndtri(noise.clamp(info.tiny, 1 - info.eps / 2))


@register_estimator("noisy-rectifier")
@dataclass(eq=False, repr=False)
class NoisyRectifier(GateEstimator):
    """The noisy rectifier gate `h = max(0, a + z)` with the pathwise gradient.

    The gate distribution is its own (`distribution = "noisy-rectifier"`): `h` is zero with
    probability `P(a + z <= 0)` and `a + z` otherwise. The surrogate is the mean loss at the
    sampled `h`; its gradient is `dL/dh 1[a + z > 0]` on the gate logits, and the chain rule
    from there. That is the pathwise (reparameterisation) gradient of `E_z[L(max(0, a + z))]`,
    unbiased for it (`is_unbiased = True` for this distribution, not for Bernoulli gates):
    `h` is continuous and piecewise linear in `a`, so differentiation and expectation commute.

    With logistic noise of scale 1, `P(h > 0) = sigmoid(a)` and `E[h] = softplus(a)` (paper
    Proposition 1); with Gaussian noise, `P(h > 0) = Phi(a / sigma)` and
    `E[h] = sigma phi(a / sigma) + a Phi(a / sigma)`. The paper trains with Gaussian noise of
    standard deviation 1 (its Appendix); Proposition 1 is about logistic noise.

    Args:
        noise: `"gaussian"` (default) or `"logistic"`.
        sigma: the noise scale, `> 0` (default 1): the standard deviation of Gaussian noise, or
            the scale of logistic noise.

    Example:
        >>> from estimator_lab.graphs.toy import ToyGraph
        >>> toy = ToyGraph([0.0], target=0.45)
        >>> prepared = toy.prepare(toy.example_batch())
        >>> est = NoisyRectifier(noise="logistic")
        >>> s = est.surrogate(toy, prepared, torch.tensor([[0.25]]), None)  # h = log 3
        >>> torch.autograd.grad(s, toy.theta)[0]  # 2 (log 3 - t)
        tensor([1.2972], dtype=torch.float64)

    References:
        Bengio, Léonard, Courville (2013), section 2.1 and Proposition 1; Nair, Hinton (2010),
        "Rectified linear units improve restricted Boltzmann machines", ICML.
    """

    is_unbiased = True
    distribution = "noisy-rectifier"
    multilayer = True

    noise: str = "gaussian"
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {self.noise!r}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        self.sigma = float(self.sigma)

    def quadrature_breakpoints(self, logits: torch.Tensor) -> torch.Tensor:
        """The rectifier's kink, where `a + z(u) = 0` (`u = F(a / sigma)` for the noise's CDF),
        and cells graded geometrically towards `u = 0` and `u = 1`, where the noise `z(u)` is
        unbounded (`10^-1 .. 10^-10` from each end)."""
        scaled = logits / self.sigma
        kink = torch.special.ndtr(scaled) if self.noise == "gaussian" else torch.sigmoid(scaled)
        tails = 10.0 ** -torch.arange(1, 11, dtype=logits.dtype, device=logits.device)
        grading = torch.cat([tails, 1 - tails]).unsqueeze(1).expand(-1, logits.numel())
        return torch.cat([kink.unsqueeze(0), grading])

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        return torch.relu(logits + rectifier_noise(noise, self.noise, self.sigma))
