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

The benchmark's protocol helpers live here too: `dynamic_minibatch` (seeded dynamic
binarisation), `evaluate_bounds` (ELBO and the 100-sample bound of a test set) and `train_adam`
(Adam on every parameter with any estimator's gradient), shared by `analyses/binary_vae` and
the validation battery's `binary_vae_check`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from estimator_lab.graphs.base import PreparedBatch, StochasticGraph, init_fan_in_uniform
from estimator_lab.graphs.gates import bernoulli_log_prob
from estimator_lab.montecarlo.noise import uniform_noise

if TYPE_CHECKING:  # estimators import the graphs package: only a type here
    from estimator_lab.estimators.base import GradientEstimator

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


def dynamic_minibatch(images: torch.Tensor, batch_size: int, seed: int, step: int
                      ) -> torch.Tensor:
    """Step `step`'s dynamically binarised minibatch, a pure function of `(seed, step)`.

    Epochs are seeded permutations of the images (`len(images) // batch_size` steps each);
    the minibatch is binarised afresh, `x = 1[u < pixel]`, with `u` the step's draw of the
    `seed` noise stream.

    Args:
        images: a `N x D` tensor of pixel intensities in `[0, 1]`.
        batch_size: `B <= N`.
        seed: the data stream's seed.
        step: the step index.

    Returns:
        a `B x D` float tensor of zeros and ones.
    """
    n = images.shape[0]
    per_epoch = n // batch_size
    epoch, within = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919 * epoch))
    chosen = images[order[within * batch_size:(within + 1) * batch_size]]
    noise = uniform_noise(seed, range(step, step + 1), tuple(chosen.shape))[0]
    return (noise < chosen).to(chosen.dtype)


def evaluate_bounds(vae: BinaryVAE, images: torch.Tensor, samples: int, seed: int,
                    chunk: int = 100) -> tuple[float, float]:
    """Mean `samples`-sample ELBO and importance-weighted bound over binary `images`.

    Args:
        vae: the model.
        images: a `N x D` tensor of zeros and ones.
        samples: `K`, gate samples per image.
        seed: the gate noise of chunk `i` is draw `i` of this stream (so two models are
            evaluated on the same uniforms).
        chunk: images per forward pass (memory `K x chunk x D`).

    Returns:
        the mean over images of `BinaryVAE.bounds`' two values.
    """
    elbos, bounds = [], []
    for index, start in enumerate(range(0, images.shape[0], chunk)):
        x = images[start:start + chunk]
        noise = uniform_noise(seed, range(index, index + 1), (samples, x.shape[0], vae.num_gates),
                              dtype=x.dtype)[0]
        elbo, bound = vae.bounds(x, noise)
        elbos.append(elbo)
        bounds.append(bound)
    return float(torch.cat(elbos).mean()), float(torch.cat(bounds).mean())


def train_adam(
    vae: BinaryVAE,
    estimator: GradientEstimator,
    images: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 50,
    learning_rate: float = 1e-3,
    data_seed: int = 0,
    noise_seed: int = 1,
    callback: Callable[[int, Any], None] | None = None,
) -> tuple[Any, float]:
    """Trains `vae` in place with `estimator`'s gradient and Adam on every parameter.

    Step `t` draws `dynamic_minibatch(images, batch_size, data_seed, t)` and the estimator's
    noise from draw `t` of the `noise_seed` stream; adaptive estimators update their state
    with the same noise after the gradient is taken.

    Args:
        vae: the model, updated in place.
        estimator: any registered estimator that supports the graph.
        images: a `N x D` tensor of pixel intensities.
        steps: optimisation steps.
        batch_size: minibatch size (50 in the DisARM protocol).
        learning_rate: Adam's step size (1e-3).
        data_seed: seeds the minibatches.
        noise_seed: seeds the estimator's noise.
        callback: called as `callback(t, state)` before step `t` for `t = 0 .. steps` (the
            last call sees the trained model); its time is not counted.

    Returns:
        the estimator's final state and the seconds spent in the steps.
    """
    optimiser = torch.optim.Adam(vae.parameters(), lr=learning_rate)
    state = estimator.init(vae)
    seconds = 0.0
    for step in range(steps + 1):
        if callback is not None:
            callback(step, state)
        if step == steps:
            break
        started = time.perf_counter()
        prepared = vae.prepare((dynamic_minibatch(images, batch_size, data_seed, step),))
        noise = uniform_noise(noise_seed, range(step, step + 1),
                              estimator.noise_shape(vae, prepared), dtype=images.dtype)[0]
        optimiser.zero_grad(set_to_none=True)
        estimator.surrogate(vae, prepared, noise, state).backward()
        state = estimator.update(state, vae, prepared, noise)
        optimiser.step()
        seconds += time.perf_counter() - started
    return state, seconds
