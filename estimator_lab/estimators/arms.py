"""ARMS (Dimitriev and Zhou, 2021): antithetic REINFORCE with `n >= 2` correlated samples.

Each gate draws `n` uniforms `u_1 .. u_n` jointly from a copula whose samples are negatively
dependent, and sample `k` is `b_k = 1[u_k < p]` (`p = sigmoid(a)`); gates are independent of
each other. The estimator is the leave-one-out REINFORCE of the `n` samples, divided by one
minus the correlation `rho(p)` between two samples of the same gate:

    g_{a_i} = 1 / (1 - rho_i) * 1 / (n - 1) * sum_k (L(b_k) - mean_k' L(b_k')) (b_{k,i} - p_i),
    1 - rho_i = (p_i - C(p_i, p_i)) / (p_i (1 - p_i)),

with `C(p, q) = P(u_j < p, u_k < q)` the copula's bivariate CDF. Unbiased: `b_k` depends on
`b_j` only through gate `i`'s pair, `E[b_{k,i} - p_i | b_{j,i}] = rho_i (b_{j,i} - p_i)`, so the
leave-one-out estimator's mean is `(1 - rho_i)` times the gradient, coordinate by coordinate.

Copulas:

- `"dirichlet"` (default): `d ~ Dirichlet(1, ..., 1)` on the simplex and `u_k = (1 - d_k)^{n-1}`
  (`d_k ~ Beta(1, n - 1)`, so each `u_k` is uniform), with
  `C(p, q) = max(p^{1/(n-1)} + q^{1/(n-1)} - 1, 0)^{n-1}`. At most one `d_k` is large, so few
  samples are on when `p` is small; for `p > 1/2` the samples are `b_k = 1[1 - u_k < p]`
  (each still `Bernoulli(p)`), whose correlation uses `C(1 - p, 1 - p)`. The Dirichlet point is
  the spacings of `n - 1` sorted uniforms, so the noise is `(n - 1) x B x G`.
- `"gaussian"`: `z ~ N(0, Sigma)` with unit variances and correlation `-1 / (n - 1)` (the most
  negative an exchangeable `n`-vector allows), `u_k = Phi(z_k)`, built from `n` uniforms per
  gate by centring their normal scores; `C(p, p) = Phi_2(h, h; rho) = p - 2 T(h, a)` with
  `h = Phi^{-1}(p)`, `a = sqrt((1 - rho) / (1 + rho))` and Owen's `T`, computed by a 48-node
  Gauss-Legendre rule (`n = 2` is the antithetic pair, `C = max(2p - 1, 0)`).

For `n = 2` both copulas give the antithetic pair `(u, 1 - u)`, `1 - rho = 1 / max(p, 1 - p)`,
and ARMS is DisARM: `(L(b_1) - L(b_2)) (b_1 - b_2) sigmoid(|a|) / 2`. With the Dirichlet copula
and `n = 2` the noise `w` gives `u_1 = 1 - w`, `u_2 = w`: ARMS under noise `w[None]` is DisARM
draw by draw under noise `1 - w` on the gates with `p <= 1/2` and `w` on the others (the
mirrored samples above 1/2 pair the gates across coordinates differently; same law).

Exact moments: for the Dirichlet copula with `n = 2` the draw is piecewise constant in `w`
between `p` and `1 - p`, so `exact_moments`' quadrature (`quadrature_points=1`,
`max_quadrature_dims=G`) is exact. For `n >= 3` and for the Gaussian copula the draw jumps on
surfaces that are not aligned with the noise axes: no exact moments from `exact_moments`
(`discrete_noise` is False).

References:
    Dimitriev, Zhou (2021), "ARMS: Antithetic-REINFORCE-Multi-Sample gradient for binary
    variables", ICML, arXiv 2105.14141.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from estimator_lab.estimators.base import GradientEstimator, require_single_layer
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph

COPULAS = ("dirichlet", "gaussian")
_OWEN_NODES, _OWEN_WEIGHTS = np.polynomial.legendre.leggauss(48)


def dirichlet_uniforms(noise: torch.Tensor) -> torch.Tensor:
    """The Dirichlet copula's `n` uniforms from `n - 1` uniforms per gate.

    Args:
        noise: a `(n - 1) x ...` tensor of uniforms.

    Returns:
        a `n x ...` tensor: `u_k = (1 - d_k)^{n-1}` with `d` the spacings of the sorted noise.

    Example:
        >>> dirichlet_uniforms(torch.tensor([[0.25]])).tolist()  # n = 2: (1 - w, w)
        [[0.75], [0.25]]
    """
    n = noise.shape[0] + 1
    cuts = torch.sort(noise, dim=0).values
    edges = torch.cat([torch.zeros_like(cuts[:1]), cuts, torch.ones_like(cuts[:1])])
    return (1 - edges.diff(dim=0)) ** (n - 1)


def gaussian_uniforms(noise: torch.Tensor) -> torch.Tensor:
    """The Gaussian copula's `n` uniforms from `n` uniforms per gate.

    The normal scores `x = Phi^{-1}(noise)` are centred over the `n` samples and scaled by
    `sqrt(n / (n - 1))`: unit variances, correlation `-1 / (n - 1)`.

    Args:
        noise: a `n x ...` tensor of uniforms (clamped away from 0 and 1).
    """
    n = noise.shape[0]
    info = torch.finfo(noise.dtype)
    normal = torch.distributions.Normal(torch.zeros((), dtype=noise.dtype, device=noise.device), 1)
    scores = normal.icdf(noise.clamp(info.tiny, 1 - info.eps))
    centred = (scores - scores.mean(0, keepdim=True)) * math.sqrt(n / (n - 1))
    return normal.cdf(centred)


def owens_t(h: torch.Tensor, a: float) -> torch.Tensor:
    """Owen's `T(h, a) = (1 / 2 pi) int_0^a exp(-h^2 (1 + x^2) / 2) / (1 + x^2) dx` for finite
    `a >= 0`, by 48-node Gauss-Legendre (the integrand is smooth; float64-accurate for `a <= 2`)."""
    x = torch.as_tensor(a * (_OWEN_NODES + 1) / 2, dtype=h.dtype, device=h.device)
    w = torch.as_tensor(a * _OWEN_WEIGHTS / 2, dtype=h.dtype, device=h.device)
    one_plus = 1 + x.square()
    integrand = torch.exp(-h.unsqueeze(-1).square() * one_plus / 2) / one_plus
    return (integrand * w).sum(-1) / (2 * math.pi)


def discordance(q: torch.Tensor, num_samples: int, copula: str) -> torch.Tensor:
    """`P(b_j = 1, b_k = 0)` for two of the `n` samples of a gate, from `q = min(p, 1 - p)`.

    It is symmetric in `p <-> 1 - p` (the samples are exchangeable, and the Dirichlet samples
    switch to `1[1 - u < p]` above 1/2), and `1 - rho = discordance / (p (1 - p))`. Dirichlet:
    `q - C(q, q) = q - max(2 q^{1/(n-1)} - 1, 0)^{n-1}`; Gaussian: `q - Phi_2(h, h; rho) =
    2 T(h, a)`, `h = Phi^{-1}(q)`, `a = sqrt((1 - rho) / (1 + rho))`, `rho = -1 / (n - 1)`. For
    `n = 2` both are `q`: the pair differs whenever the rarer value occurs.

    Example:
        >>> discordance(torch.tensor([0.2, 0.3]), 2, "dirichlet")  # antithetic pair
        tensor([0.2000, 0.3000])
    """
    n = num_samples
    if copula == "dirichlet" or n == 2:
        return q - (2 * q ** (1 / (n - 1)) - 1).clamp_min(0) ** (n - 1)
    rho = -1 / (n - 1)
    normal = torch.distributions.Normal(torch.zeros((), dtype=q.dtype, device=q.device), 1)
    return 2 * owens_t(normal.icdf(q), math.sqrt((1 - rho) / (1 + rho)))


@register_estimator("arms")
@dataclass(eq=False, repr=False)
class ARMS(GradientEstimator):
    """ARMS: `n`-sample leave-one-out REINFORCE on copula-coupled samples, debiased by `1 - rho`.

    The draw on example `j`'s gate logits is (module docstring)
    `(1 / B) p (1 - p) / P(b_j=1, b_k=0) / (n - 1) sum_k (L_k - Lbar)(b_k - p)`;
    parameters the loss touches directly get the mean pathwise gradient of the `n` losses (each
    `b_k` is `Bernoulli(p)`). `n` loss evaluations per draw.

    Args:
        num_samples: `n >= 2` (default 2, where ARMS is DisARM).
        copula: `"dirichlet"` (default) or `"gaussian"`.

    Example:
        >>> from estimator_lab.graphs.toy import ToyGraph
        >>> toy = ToyGraph([0.0], target=0.45)  # n = 2 at a = 0: DisARM's constant 0.025
        >>> prepared = toy.prepare(toy.example_batch())
        >>> s = ARMS().surrogate(toy, prepared, torch.tensor([[[0.2]]]), None)
        >>> torch.autograd.grad(s, toy.theta)[0]
        tensor([0.0250], dtype=torch.float64)

    References:
        Dimitriev, Zhou (2021), arXiv 2105.14141.
    """

    is_unbiased = True

    num_samples: int = 2
    copula: str = "dirichlet"

    def __post_init__(self) -> None:
        if int(self.num_samples) != self.num_samples or self.num_samples < 2:
            raise ValueError(f"arms needs num_samples >= 2, got {self.num_samples}")
        if self.copula not in COPULAS:
            raise ValueError(f"arms copula must be one of {COPULAS}, got {self.copula!r}")
        self.num_samples = int(self.num_samples)

    def noise_shape(self, graph: StochasticGraph, prepared: PreparedBatch) -> tuple[int, ...]:
        copies = self.num_samples - (self.copula == "dirichlet")
        return (copies, prepared.batch_size, graph.num_gates)

    def evaluations(self, graph: StochasticGraph | None = None) -> int:
        """`n`, one per sample."""
        return self.num_samples

    def gates(self, logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The `n x B x G` coupled samples for `B x G` logits (detached) and the noise."""
        p = torch.sigmoid(logits)
        if self.copula == "gaussian":
            return (gaussian_uniforms(noise) < p).to(p.dtype)
        u = dirichlet_uniforms(noise)
        return torch.where(p <= 0.5, u < p, 1 - u < p).to(p.dtype)

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        require_single_layer(graph, self)
        logits = prepared.logits
        p = torch.sigmoid(logits.detach())
        gates = self.gates(logits.detach(), noise)
        losses = graph.loss(prepared, gates)  # n x B
        held = losses.detach()
        centred = (held - held.mean(0, keepdim=True)).unsqueeze(-1)
        loo = (centred * (gates - p)).sum(0) / (self.num_samples - 1)
        q = torch.sigmoid(-logits.detach().abs())
        disagree = discordance(q, self.num_samples, self.copula)
        # 1 / (1 - rho); its limit at the boundary (q -> 0, where `disagree` underflows) is 1
        tiny = torch.finfo(q.dtype).tiny
        debias = torch.where(disagree > 0, q * (1 - q) / disagree.clamp_min(tiny), 1)
        gate_grad = loo * debias
        return (losses.mean(0) + (gate_grad * (logits - logits.detach())).sum(-1)).mean()
