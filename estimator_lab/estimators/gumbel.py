"""The binary Concrete (Gumbel-softmax) relaxation and its straight-through form.

Conventions, per gate with `p = sigmoid(a)` and one uniform `u`:

- The logistic noise is `l = log(1 - u) - log u`, a `Logistic(0, 1)` sample (the mirror image
  of `log u - log(1 - u)`, which has the same law). The mirror makes `a + l > 0` exactly the
  event `u < p`, so the hard sample `1[a + l > 0]` is the Bernoulli gate `b = 1[u < p]` that
  `st`, `st-sigmoid` and `reinforce` draw from the same noise (common random numbers).
- The relaxed gate is `s = sigmoid((a + l) / tau)`; as `tau -> 0` it tends to `b` for every
  `u` with `a + l != 0`, and `|s - b| <= exp(-|a + l| / tau)`.

Example: one gate at `a = 0` with `u = 0.25` and `tau = 0.5`, so `b = 1` and
`s = sigmoid(2 log 3) = 0.9`; on `L = (h - t)^2` `gumbel` differentiates at `s`, `st-gumbel`
at `b`, both through `ds/da = s (1 - s) / tau`:

    >>> from estimator_lab.graphs.toy import ToyGraph
    >>> toy = ToyGraph([0.0], target=0.45)
    >>> prepared = toy.prepare(toy.example_batch())
    >>> def draw(estimator):
    ...     s = estimator.surrogate(toy, prepared, torch.tensor([[0.25]]), None)
    ...     return torch.autograd.grad(s, toy.theta)[0]
    >>> draw(Gumbel(0.5))  # 2 (0.9 - t) 0.9 (1 - 0.9) / 0.5
    tensor([0.1620], dtype=torch.float64)
    >>> draw(StraightThroughGumbel(0.5))  # 2 (1 - t) 0.9 (1 - 0.9) / 0.5
    tensor([0.1980], dtype=torch.float64)
"""

from __future__ import annotations

import torch

from estimator_lab.estimators.base import (
    GateEstimator,
    TemperatureEstimator,
    bernoulli_gates,
    straight_through,
)
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import StochasticGraph


def logistic_noise(noise: torch.Tensor) -> torch.Tensor:
    """`l = log(1 - u) - log u`, a `Logistic(0, 1)` sample with `a + l > 0` iff `u < sigmoid(a)`.

    `u` is clamped into `[tiny, 1 - eps / 2]` first, so `u = 0` gives a large finite value.

    Example:
        >>> logistic_noise(torch.tensor([0.5, 0.25]))  # 0 and log 3
        tensor([0.0000, 1.0986])
    """
    info = torch.finfo(noise.dtype)
    u = noise.clamp(info.tiny, 1 - info.eps / 2)
    return torch.log1p(-u) - torch.log(u)


def concrete_gates(logits: torch.Tensor, noise: torch.Tensor, temperature: float) -> torch.Tensor:
    """The relaxed gates `sigmoid((a + l) / tau)` with `l = logistic_noise(u)`, differentiable
    in `a`.

    Example:
        >>> concrete_gates(torch.tensor([0.0]), torch.tensor([0.25]), 0.5)  # sigmoid(2 log 3)
        tensor([0.9000])
    """
    return torch.sigmoid((logits + logistic_noise(noise)) / temperature)


class _Relaxed(TemperatureEstimator, GateEstimator):
    """Shared flags of the two Concrete estimators."""

    is_unbiased = False
    multilayer = True

    def quadrature_breakpoints(self, logits: torch.Tensor) -> torch.Tensor:
        """Where the draw jumps or changes on the scale `tau`, as uniforms: a `15 x G` tensor.

        In `x = a + l` the draw is `s (1 - s) / tau` times a smooth factor (and, for
        `st-gumbel`, a jump at `x = 0`), with `s = sigmoid(x / tau)`: a kernel of width `tau`
        around `x = 0`, which is `u = p`. The cells are cut at `x = 0` and at
        `x = +-tau 2^k`, `k = -1 .. 5`, graded geometrically away from the kernel (beyond
        `32 tau` it is below `e^-32` of its peak), mapped to `u = sigmoid(a - x)`. Fixed cuts
        at `p` and `1 - p` alone leave a kernel of width `tau p (1 - p)` in `u` to a few nodes
        once `tau` is small.

        Args:
            logits: the `G` gate logits of one example.

        Example:
            >>> cuts = Gumbel(0.01).quadrature_breakpoints(torch.tensor([0.0]))
            >>> cuts[6:9, 0]  # a + l = -tau / 2, 0, tau / 2: u = sigmoid(0.005), p, ...
            tensor([0.5012, 0.5000, 0.4988])
        """
        offsets = self.temperature * 2.0 ** torch.arange(
            -1, 6, dtype=logits.dtype, device=logits.device)
        zero = torch.zeros(1, dtype=logits.dtype, device=logits.device)
        x = torch.cat([-offsets.flip(0), zero, offsets])
        return torch.sigmoid(logits.unsqueeze(0) - x.unsqueeze(1))


@register_estimator("gumbel")
class Gumbel(_Relaxed):
    """The binary Concrete relaxation: the loss at `s = sigmoid((a + l) / tau)`, pathwise.

    The surrogate is `mean_j L_j(s)`, so the gate logits get
    `dL/ds s (1 - s) / tau` and every parameter the pathwise gradient at the relaxed gates. As
    an estimate of the gradient of the Bernoulli objective `E[L(b)]` it is biased: the loss is
    evaluated at relaxed gates in `(0, 1)`, where the graph was never meant to be evaluated
    (`distribution = "bernoulli"`, `is_unbiased = False`). It is the unbiased pathwise gradient
    of a different objective, `E[L(s)]` under the Concrete distribution, which this flag does
    not claim. The bias vanishes as `tau -> 0`, where the variance grows like `1 / tau`. The
    module docstring has an example, beside `st-gumbel` on the same draw.

    Args:
        temperature: `tau > 0` (default 1).

    References:
        Maddison, Mnih, Teh (2017), "The Concrete distribution"; Jang, Gu, Poole (2017),
        "Categorical reparameterization with Gumbel-softmax", ICLR.
    """

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        return concrete_gates(logits, noise, self.temperature)


@register_estimator("st-gumbel")
class StraightThroughGumbel(_Relaxed):
    """Straight-through Gumbel: the hard gate `b = 1[u < p]` forward, the relaxed gradient back.

    The gate enters the loss as `b + (s - stopgrad(s))` with `s = sigmoid((a + l) / tau)`: its
    value is exactly `b` (the same gates as `st` under the same noise) and the gate logits get
    `dL/db (b) s (1 - s) / tau`. Biased for the Bernoulli objective, like `st`; its draw
    depends on `u` beyond the gate it implies, so `discrete_noise` is False. The module
    docstring has an example, beside `gumbel` on the same draw.

    Args:
        temperature: `tau > 0` (default 1).

    References:
        Jang, Gu, Poole (2017), "Categorical reparameterization with Gumbel-softmax", ICLR
        (the straight-through variant); Bengio, Léonard, Courville (2013), section 4.
    """

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        relaxed = concrete_gates(logits, noise, self.temperature)
        return straight_through(bernoulli_gates(logits.detach(), noise), relaxed)
