"""The Bernoulli VAE of the ARM/DisARM/ARMS benchmark: binary latents, loss = negative ELBO.

An encoder maps an observation `x` (`D` binary pixels) to the logits `a` of `G` independent
Bernoulli latents, `q(b | x) = prod_i Bernoulli(b_i; sigmoid(a_i))`; a decoder maps `b` to the
logits of `D` Bernoulli pixels, `p(x | b)`; the prior is a factorised Bernoulli with learned
logits `c`, `p(b) = prod_i Bernoulli(b_i; sigmoid(c_i))`. The gates are the latents and the
per-example loss is the negative single-sample ELBO,

    L(b) = -log p(x | b) - log p(b) + log q(b | x),   E_q[L] = -ELBO(x).

`log q` enters `L` with the encoder logits *detached*: the expected loss is unchanged, and so
is its gradient, because the term this drops, `E_q[grad log q(b | x)]`, is zero; estimators
then see the encoder only through the gate distribution, as in the DisARM experiments, where
the encoder gradient is the estimator's gradient with respect to the logits. Exact enumeration
(`exact.exact_gradient`) differentiates `sum_b P(b) L(b)` and so gives the true ELBO gradient.

Linear model (`hidden=()`): encoder one affine map `D -> G`, decoder one affine map `G -> D`.
Nonlinear model (`hidden=(H,)` or more): affine maps with LeakyReLU (slope 0.3) between them,
`D -> H -> ... -> G` and `G -> ... -> H -> D`. The encoder reads `x - m` and the decoder's output
bias starts at `logit(m)` (clipped to `[0.001, 0.999]`), `m` the mean training image, as the
DisARM code's `demean_input` and `initialize_with_bias` options do.

The benchmark's protocol (dynamic binarisation, bounds of a test set, Adam with any
estimator) is `estimator_lab.train.binary_vae`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from estimator_lab.graphs.base import PreparedBatch, StochasticGraph, init_fan_in_uniform
from estimator_lab.graphs.gates import bernoulli_log_prob

MEAN_CLIP = 0.001
"""The data mean is clipped to `[MEAN_CLIP, 1 - MEAN_CLIP]` before its logit sets the bias."""


@dataclass(frozen=True)
class BinaryVAEConfig:
    """Sizes of the Bernoulli VAE; the defaults are the benchmark's linear model on MNIST.

    Attributes:
        num_inputs: observed binary features `D` (784 for MNIST).
        num_latents: Bernoulli latents `G` (200).
        hidden: hidden layer widths of the encoder (the decoder mirrors them); `()` is the
            linear model, `(200,)` the one-hidden-layer nonlinear one.
        negative_slope: the LeakyReLU slope of the hidden layers.
    """

    num_inputs: int = 784
    num_latents: int = 200
    hidden: tuple[int, ...] = ()
    negative_slope: float = 0.3

    def __post_init__(self) -> None:
        sizes = (self.num_inputs, self.num_latents, *self.hidden)
        if min(sizes) < 1:
            raise ValueError(f"BinaryVAEConfig sizes must be >= 1, got {self}")
        if not math.isfinite(self.negative_slope):
            raise ValueError(f"negative_slope must be finite, got {self.negative_slope}")

    @property
    def name(self) -> str:
        """`"linear"`, or `"nonlinear-200"` (hidden widths joined by `-`)."""
        return "linear" if not self.hidden else "nonlinear-" + "-".join(map(str, self.hidden))


def _mlp(widths: list[int], negative_slope: float) -> nn.Sequential:
    """Affine maps between consecutive `widths`, LeakyReLU between them (not after the last)."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:], strict=False)):
        if index:
            layers.append(nn.LeakyReLU(negative_slope))
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


class BinaryVAE(StochasticGraph):
    """A VAE with `G` Bernoulli latents as gates; the loss is the negative ELBO per example.

    `prepare((x,))` runs the encoder once per minibatch; `loss` runs the decoder on any number
    of leading sample dims of gate values (hard `{0, 1}` or relaxed in `[0, 1]`).

    Args:
        config: the sizes.
        data_mean: a `D` tensor, the mean training image `m` (default 1/2 everywhere).
        generator: seeds the weights (PyTorch's `nn.Linear` law, uniform in
            `+-1/sqrt(fan_in)`); the prior logits start at 0.

    Example:
        >>> vae = BinaryVAE(BinaryVAEConfig(num_inputs=6, num_latents=3, hidden=(4,)),
        ...                 generator=torch.Generator().manual_seed(0))
        >>> prepared = vae.prepare((torch.ones(2, 6),))
        >>> prepared.logits.shape, vae.loss(prepared, torch.zeros(5, 2, 3)).shape
        (torch.Size([2, 3]), torch.Size([5, 2]))
    """

    def __init__(
        self,
        config: BinaryVAEConfig | None = None,
        data_mean: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = c = config or BinaryVAEConfig()
        self.num_gates = c.num_latents
        self.encoder = _mlp([c.num_inputs, *c.hidden, c.num_latents], c.negative_slope)
        self.decoder = _mlp([c.num_latents, *reversed(c.hidden), c.num_inputs],
                            c.negative_slope)
        self.prior_logits = nn.Parameter(torch.zeros(c.num_latents))
        mean = torch.full((c.num_inputs,), 0.5) if data_mean is None else data_mean.float()
        if mean.shape != (c.num_inputs,):
            raise ValueError(f"data_mean must have shape ({c.num_inputs},), got "
                             f"{tuple(mean.shape)}")
        self.register_buffer("data_mean", mean.clone())
        init_fan_in_uniform((*self.encoder, *self.decoder),
                            generator or torch.Generator().manual_seed(0))
        with torch.no_grad():
            self.decoder[-1].bias.copy_(torch.logit(mean.clamp(MEAN_CLIP, 1 - MEAN_CLIP)))

    def encoder_parameters(self) -> dict[str, nn.Parameter]:
        """The encoder's parameters by name (`encoder.0.weight`, ...): the ones whose gradient
        only the estimators provide."""
        return {n: p for n, p in self.named_parameters() if n.startswith("encoder.")}

    def prepare(self, batch: tuple[torch.Tensor, ...]) -> PreparedBatch:
        """Encoder logits `a` (`B x G`) of observations `x`, a `B x D` tensor of zeros and ones;
        `x` is kept as the feature `"x"`."""
        (x,) = batch
        return PreparedBatch(logits=self.encoder(x - self.data_mean), features={"x": x})

    def reconstruction_log_likelihood(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """`log p(x | b)` summed over pixels: a `... x B` tensor for `... x B x G` gates and
        `B x D` observations."""
        scores = self.decoder(gates)
        return -F.binary_cross_entropy_with_logits(
            scores, x.expand(scores.shape), reduction="none").sum(-1)

    def log_weights(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """`log p(x, b) - log q(b | x)`, the ELBO's integrand, a `... x B` tensor (`-L(b)`)."""
        x = prepared.features["x"]
        log_prior = bernoulli_log_prob(self.prior_logits.expand(gates.shape), gates).sum(-1)
        posterior = prepared.logits.detach().expand(gates.shape)
        log_posterior = bernoulli_log_prob(posterior, gates).sum(-1)
        return self.reconstruction_log_likelihood(x, gates) + log_prior - log_posterior

    def loss(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """The negative single-sample ELBO `L(b)`, a `... x B` tensor (module docstring)."""
        return -self.log_weights(prepared, gates)

    @torch.no_grad()
    def bounds(
        self, x: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example ELBO and `K`-sample importance-weighted bound from `K` gate samples.

        `ELBO ~ mean_k w_k` and `log (1/K) sum_k exp(w_k)` with `w_k = log p(x, b_k) -
        log q(b_k | x)`, `b_k = 1[u_k < sigmoid(a)]` (the bound of Burda et al. 2016 that the
        DisARM paper reports with `K = 100` on the test set).

        Args:
            x: a `B x D` tensor of binary observations.
            noise: a `K x B x G` tensor of uniforms.

        Returns:
            two `B` tensors: the `K`-sample mean of the single-sample ELBO, and the `K`-sample
            bound.
        """
        prepared = self.prepare((x,))
        gates = (noise < torch.sigmoid(prepared.logits)).to(prepared.logits.dtype)
        weights = self.log_weights(prepared, gates)  # K x B
        return weights.mean(0), torch.logsumexp(weights, 0) - math.log(noise.shape[0])
