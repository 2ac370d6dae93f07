"""REBAR (Tucker et al., 2017) and RELAX (Grathwohl et al., 2018) for Bernoulli gates.

Both draw the gates through the logistic reparameterisation and use a relaxed copy of the loss
as a control variate, corrected so the estimator stays unbiased. Conventions, per gate with
`theta = sigmoid(a)` and noise `(u, v)`, two uniforms per gate:

- `z = a + log u - log(1 - u)` is `Logistic(a, 1)` and `b = H(z) = 1[z > 0] = 1[u > 1 - theta]`
  is `Bernoulli(theta)`.
- The conditional sample `z~ ~ p(z | b)` puts `u~` uniform on the part of `(0, 1)` that gives
  `b`, `u~ = 1 - theta + v theta` if `b = 1` and `u~ = (1 - v)(1 - theta)` if `b = 0`, and
  `z~ = a + logit(u~)`. In closed form, with `s = 2b - 1`,
  `z~ = s [softplus(s a + log v) - log(1 - v)]` (Tucker et al., Appendix), stable for any `a`.
  Conditional on `b`, `z~` has density `p(z) 1[H(z) = b] / P(b)`, so mixed over `b` it is
  `Logistic(a, 1)` again.

With a control variate `c(z)`, one draw of the gate-logit gradient is

    g_a = [L(b) - c(z~)] d/da log p(b) + d/da c(z) - d/da c(z~),

with `d/da log p(b) = b - theta` and `d/da c(z~)` taken through the conditional
reparameterisation, `b` and `v` held fixed. `E[c(z~) d log p(b)] + E[d c(z~)] = d E[c(z)]`,
so the last three terms have mean zero for any `c`: the estimator is unbiased.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from estimator_lab.estimators.base import GradientEstimator, require_single_layer
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


def logistic_sample(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """`z = a + log u - log(1 - u)`, a `Logistic(a, 1)` sample (`u` clamped away from 0).

    Example:
        >>> logistic_sample(torch.tensor([1.0]), torch.tensor([0.5]))
        tensor([1.])
    """
    u = u.clamp_min(torch.finfo(u.dtype).tiny)
    return logits + u.log() - torch.log1p(-u)


def logistic_gates(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The gates `b = H(z) = 1[z > 0]` of `z = logistic_sample(a, u)`, no gradient path.

    Example:
        >>> logistic_gates(torch.zeros(2), torch.tensor([0.3, 0.7]))
        tensor([0., 1.])
    """
    return (logistic_sample(logits.detach(), u) > 0).to(logits.dtype)


def conditional_logistic(
    logits: torch.Tensor, gates: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """`z~ ~ p(z | b)` for `z ~ Logistic(a, 1)` and `b = 1[z > 0]`, reparameterised by `v`.

    `z~ = s [softplus(s a + log v) - log(1 - v)]` with `s = 2b - 1`: for `b = 1` this is
    `a + logit(1 - theta + v theta)`, for `b = 0` it is `a + logit((1 - v) (1 - theta))`, i.e.
    the inverse of the conditional CDF `(sigmoid(z - a) - P(z < 0 | a)) / theta` on `z > 0`
    (and its mirror image on `z < 0`) at `v` and `1 - v`. Differentiable in `a`.

    Args:
        logits: gate logits `a` (any shape).
        gates: the gates `b`, zeros and ones, broadcastable to `logits`.
        v: uniforms on `[0, 1)`, broadcastable to `logits`.

    Returns:
        `z~`, positive where `b = 1` and negative where `b = 0`.

    Example:
        >>> a = torch.tensor([0.0, 0.0])
        >>> conditional_logistic(a, torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]))
        tensor([ 1.0986, -1.0986])
    """
    sign = 2 * gates - 1
    v = v.clamp_min(torch.finfo(v.dtype).tiny)
    return sign * (F.softplus(sign * logits + v.log()) - torch.log1p(-v))


@register_estimator("rebar")
@dataclass(eq=False, repr=False)
class Rebar(GradientEstimator):
    """REBAR: the relaxed loss `c(z) = eta L(sigmoid(z / lambda))` as control variate.

    `g_a = [L(b) - eta L(s(z~))] (b - theta) + eta d/da L(s(z)) - eta d/da L(s(z~))` with
    `s(z) = sigmoid(z / lambda)` (the conventions are in the module docstring). The relaxed
    losses are evaluated on the graph as if the soft gates were gates. The surrogate is
    `mean_j [L_j(b) + sum_i stopgrad(g_{ji}) (a_{ji} - stopgrad(a_{ji}))]`: its value is the
    loss at the sampled gates, the gate logits get `g / B` (and the parameters behind them the
    chain rule of it), and the parameters the loss touches directly get exactly the pathwise
    gradient at `b`; the relaxed terms reach nothing but the gate logits. The relaxed-term
    gradients `d/da` are computed with `torch.func.grad` inside the surrogate, which composes
    with the engine's `vmap`.

    Noise: `2 x B x G`, `noise[0] = u` (the gates), `noise[1] = v` (the conditional sample).
    Three loss evaluations per draw: `L(b)`, `L(s(z))`, `L(s(z~))`.

    Args:
        temperature: `lambda > 0` (default 0.5).
        eta: the control variate scale (default 1: the relaxed loss as it is). The draw is
            `g_score + eta C`, with `g_score = L(b) (b - theta)` and `C` the zero-mean
            correction, so the variance-minimising scale of a coordinate is
            `-Cov(g_score, C) / Var(C)`; Tucker et al. tune `eta` and `lambda` online, as
            `relax` does.

    Example:
        >>> from estimator_lab.graphs.toy import ToyGraph
        >>> toy = ToyGraph([0.0, 1.0], target=0.45)
        >>> prepared = toy.prepare(toy.example_batch(3))
        >>> est = Rebar(temperature=0.5, eta=1.0)
        >>> noise = torch.rand(est.noise_shape(toy, prepared), dtype=torch.float64)
        >>> torch.autograd.grad(est.surrogate(toy, prepared, noise, None), toy.theta)[0].shape
        torch.Size([2])

    References:
        Tucker, Mnih, Maddison, Lawson, Sohl-Dickstein (2017), "REBAR: Low-variance, unbiased
        gradient estimates for discrete latent variable models", NeurIPS.
    """

    is_unbiased = True

    temperature: float = 0.5
    eta: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        self.temperature = float(self.temperature)
        self.eta = float(self.eta)

    def evaluations(self, graph: StochasticGraph | None = None) -> int:
        """Three: `L(b)`, `L(s(z))` and `L(s(z~))`."""
        return 3

    def noise_shape(self, graph: StochasticGraph, prepared: PreparedBatch) -> tuple[int, ...]:
        return (2, prepared.batch_size, graph.num_gates)

    def control(
        self, graph: StochasticGraph, prepared: PreparedBatch, z: torch.Tensor, state: Any
    ) -> torch.Tensor:
        """The control variate `c(z) = eta L(sigmoid(z / lambda))` of `... x B x G` logistic
        samples: a `... x B` tensor."""
        return self.eta * graph.loss(prepared, torch.sigmoid(z / self.temperature))

    def conditional_noise(
        self, logits: torch.Tensor, gates: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """`z~ ~ p(z | b)` with its gradient path to the logits (`conditional_logistic`)."""
        return conditional_logistic(logits, gates, v)

    def gate_gradient(
        self,
        graph: StochasticGraph,
        prepared: PreparedBatch,
        noise: torch.Tensor,
        state: Any,
        hard_losses: torch.Tensor,
    ) -> torch.Tensor:
        """The per-example gate-logit gradient `g_a`, a `B x G` tensor (module docstring).

        It is differentiable in the control variate's parameters in `state` (RELAX trains them
        on it) and treats the logits as constants.

        Args:
            graph: the model.
            prepared: `graph.prepare(batch)` for `B` examples.
            noise: the `2 x B x G` uniforms `(u, v)`.
            state: the estimator state (read by `control`).
            hard_losses: the `B` losses `L(b)` at the gates `b` of `noise` (detached).
        """
        logits = prepared.logits.detach()
        u, v = noise.unbind(0)
        gates = logistic_gates(logits, u)

        def relaxed_difference(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z = torch.stack([logistic_sample(a, u), self.conditional_noise(a, gates, v)])
            controls = self.control(graph, prepared, z, state)  # 2 x B: c(z), c(z~)
            return (controls[0] - controls[1]).sum(), controls[1]

        path, control_tilde = torch.func.grad(relaxed_difference, has_aux=True)(logits)
        score = gates - torch.sigmoid(logits)
        return (hard_losses - control_tilde).unsqueeze(-1) * score + path

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        require_single_layer(graph, self)
        logits = prepared.logits
        gates = logistic_gates(logits, noise[0])
        losses = graph.loss(prepared, gates)
        gate_grad = self.gate_gradient(graph, prepared, noise, state, losses.detach()).detach()
        return (losses + (gate_grad * (logits - logits.detach())).sum(-1)).mean()


@dataclass(frozen=True)
class RelaxState:
    """RELAX's control variate parameters and their Adam moments.

    Attributes:
        params: `log_temperature` and `eta` (0-dim), and the MLP `w1` (`G x H`), `b1` (`H`),
            `w2` (`H`), `b2` (0-dim); no tensor requires grad.
        exp_avg: Adam's first moments, like `params`.
        exp_avg_sq: Adam's second moments, like `params`.
        step: Adam steps taken.
    """

    params: dict[str, torch.Tensor]
    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    step: int = 0


@register_estimator("relax")
@dataclass(eq=False, repr=False)
class Relax(Rebar):
    """RELAX: REBAR's control variate plus a learned network, trained to minimise variance.

    `c_phi(z) = eta L(s(z)) + r(s(z))` with `s(z) = sigmoid(z / lambda)` and
    `r(h) = w2 . tanh(h w1 + b1) + b2` an MLP with `H` hidden units on each example's relaxed
    gates; `phi = (log lambda, eta, w1, b1, w2, b2)` is the state. `g_a` is REBAR's formula with
    `c_phi` in place of `eta L(s(.))`, unbiased for every `phi`. `w2` and `b2` start at zero,
    so before any update RELAX draws exactly what REBAR with the same `lambda, eta` draws.

    `update` takes one Adam step on `phi` of the single-sample variance surrogate
    `||g_a||^2` (summed over the `B x G` gate logits): since `E[g_a]` does not depend on `phi`,
    `d/dphi E[||g_a||^2] = d/dphi sum Var[g_a]`, and `||g_a||^2` is an unbiased estimate of it.
    The gradient flows through `c_phi(z~)` in the score term and through the second-order
    terms `d/da c_phi`. `surrogate` only reads `phi`; no gradient reaches it there, and
    `update` differentiates with respect to `phi` alone (no graph parameter gets a gradient).

    Args:
        temperature: the initial `lambda` (default 0.5).
        eta: the initial `eta` (default 1).
        hidden: `H`, hidden units of `r` (default 16).
        learning_rate: Adam's step size for `phi` (default 1e-3).
        seed: seeds the initial `w1` (uniform in `+-1/sqrt(G)`, `b1 = 0`).

    References:
        Grathwohl, Choi, Wu, Roeder, Duvenaud (2018), "Backpropagation through the void:
        Optimizing control variates for black-box gradient estimation", ICLR.
    """

    betas = (0.9, 0.999)
    adam_eps = 1e-8

    hidden: int = 16
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 1 or self.learning_rate <= 0:
            raise ValueError(f"need hidden >= 1 and learning_rate > 0, got {self.hidden}, "
                             f"{self.learning_rate}")
        self.hidden = int(self.hidden)
        self.learning_rate = float(self.learning_rate)
        self.seed = int(self.seed)

    def init(self, graph: StochasticGraph) -> RelaxState:
        reference = next(graph.parameters())
        like = {"dtype": reference.dtype, "device": reference.device}
        generator = torch.Generator().manual_seed(self.seed)
        bound = graph.num_gates**-0.5
        w1 = (2 * torch.rand(graph.num_gates, self.hidden, generator=generator,
                             dtype=torch.float64) - 1) * bound
        params = {
            "log_temperature": torch.tensor(math.log(self.temperature), **like),
            "eta": torch.tensor(self.eta, **like),
            "w1": w1.to(**like),
            "b1": torch.zeros(self.hidden, **like),
            "w2": torch.zeros(self.hidden, **like),
            "b2": torch.zeros((), **like),
        }
        zeros = {k: torch.zeros_like(p) for k, p in params.items()}
        return RelaxState(params, zeros, dict(zeros))

    def control(
        self, graph: StochasticGraph, prepared: PreparedBatch, z: torch.Tensor, state: RelaxState
    ) -> torch.Tensor:
        """`c_phi(z) = eta L(s(z)) + r(s(z))`, a `... x B` tensor for `... x B x G` samples."""
        phi = state.params
        relaxed = torch.sigmoid(z / phi["log_temperature"].exp())
        network = torch.tanh(relaxed @ phi["w1"] + phi["b1"]) @ phi["w2"] + phi["b2"]
        return phi["eta"] * graph.loss(prepared, relaxed) + network

    def update(
        self,
        state: RelaxState,
        graph: StochasticGraph,
        prepared: PreparedBatch,
        noise: torch.Tensor,
    ) -> RelaxState:
        require_single_layer(graph, self)
        params = {k: p.detach().requires_grad_(True) for k, p in state.params.items()}
        with torch.no_grad():
            hard_losses = graph.loss(prepared, logistic_gates(prepared.logits, noise[0]))
        with torch.enable_grad():
            gate_grad = self.gate_gradient(
                graph, prepared, noise, replace(state, params=params), hard_losses
            )
            grads = torch.autograd.grad(gate_grad.square().sum(), list(params.values()))
        step = state.step + 1
        beta1, beta2 = self.betas
        new_params, exp_avg, exp_avg_sq = {}, {}, {}
        for (name, param), grad in zip(params.items(), grads, strict=True):
            exp_avg[name] = beta1 * state.exp_avg[name] + (1 - beta1) * grad
            exp_avg_sq[name] = beta2 * state.exp_avg_sq[name] + (1 - beta2) * grad.square()
            corrected = exp_avg[name] / (1 - beta1**step)
            scale = (exp_avg_sq[name] / (1 - beta2**step)).sqrt() + self.adam_eps
            new_params[name] = (param - self.learning_rate * corrected / scale).detach()
        return RelaxState(new_params, exp_avg, exp_avg_sq, step)
