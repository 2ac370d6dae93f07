"""A small categorical VAE on a few binarised MNIST images, enumerable exactly.

The ReinMax paper's MNIST-VAE (Liu et al. 2023, section 6: `L` latent categoricals of `K`
classes, e.g. 8 x 4 or 4 x 8, an MLP encoder and decoder, the negative ELBO) scaled down so
`K^L` configurations can be enumerated: an encoder maps `x` (`D` binary pixels) to `L x K`
logits, `q(z | x) = prod_i softmax(theta_i)_{z_i}`; a decoder maps the one-hot `D` (`L K`
values, flattened) to `D` Bernoulli logits; the prior is uniform, `p(z) = K^-L`. The loss per
example is the negative single-sample ELBO

    L(z) = -log p(x | z) - log p(z) + log q(z | x),   E_q[L] = -ELBO(x),

with `log q`'s logits detached, as in `graphs.binary_vae` (the dropped term
`E_q[grad log q]` is zero), so estimators see the encoder only through the gates and exact
enumeration (`exact.categorical`) gives the true ELBO gradient. Encoder `D -> H -> L K` and
decoder `L K -> H -> D` with a tanh hidden layer each.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from estimator_lab.graphs.base import PreparedBatch, init_fan_in_uniform
from estimator_lab.graphs.categorical import CategoricalGraph, categorical_log_prob
from estimator_lab.graphs.spec_options import pop_number, too_many_configurations

MAX_VAE_CONFIGURATIONS = 2**20
"""The largest `K^L` a categorical VAE spec accepts (the issue's enumeration budget)."""


@dataclass(frozen=True)
class CategoricalVAEConfig:
    """Sizes of the categorical VAE (defaults: 4 latents of 8 classes, 4096 configurations).

    Attributes:
        num_inputs: binary pixels `D` (784 for MNIST).
        num_latents: latent categoricals `L` (the gates).
        num_classes: classes `K` per latent.
        num_hidden: tanh units `H` of the encoder's and the decoder's hidden layer.
    """

    num_inputs: int = 784
    num_latents: int = 4
    num_classes: int = 8
    num_hidden: int = 32


class CategoricalVAE(CategoricalGraph):
    """The VAE of the module docstring; gates are its `L` latents, the batch is `(x,)`.

    `prepare((x,))` runs the encoder once per minibatch (`B x L x K` logits) and keeps `x`;
    `loss` runs the decoder on `... x B x L x K` gates (one-hot or relaxed).

    Args:
        config: the sizes.
        generator: seeds the weights (uniform in `+-1/sqrt(fan_in)`).

    Example:
        >>> vae = CategoricalVAE(CategoricalVAEConfig(num_inputs=6, num_latents=2, num_classes=3))
        >>> prepared = vae.prepare((torch.ones(2, 6),))
        >>> gates = torch.eye(3)[torch.zeros(5, 2, 2, dtype=torch.long)]
        >>> prepared.logits.shape, vae.loss(prepared, gates).shape
        (torch.Size([2, 2, 3]), torch.Size([5, 2]))
    """

    def __init__(self, config: CategoricalVAEConfig | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = c = config or CategoricalVAEConfig()
        if c.num_classes < 2:
            raise ValueError(f"cat-vae needs classes >= 2, got {c.num_classes}")
        if min(c.num_inputs, c.num_latents, c.num_hidden) < 1:
            raise ValueError(f"cat-vae sizes must be >= 1, got {c}")
        self.num_gates, self.num_classes = c.num_latents, c.num_classes
        codes = c.num_latents * c.num_classes
        self.encoder = nn.Sequential(nn.Linear(c.num_inputs, c.num_hidden), nn.Tanh(),
                                     nn.Linear(c.num_hidden, codes))
        self.decoder = nn.Sequential(nn.Linear(codes, c.num_hidden), nn.Tanh(),
                                     nn.Linear(c.num_hidden, c.num_inputs))
        init_fan_in_uniform((*self.encoder, *self.decoder),
                            generator or torch.Generator().manual_seed(0))

    def prepare(self, batch: tuple[torch.Tensor, ...]) -> PreparedBatch:
        """Encoder logits (`B x L x K`) of `B x D` binary observations, kept as `"x"`."""
        (x,) = batch
        logits = self.encoder(2 * x - 1).unflatten(-1, (self.num_gates, self.num_classes))
        return PreparedBatch(logits=logits, features={"x": x})

    def loss(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """The negative single-sample ELBO `L(z)` (module docstring), a `... x B` tensor."""
        x = prepared.features["x"]
        scores = self.decoder(gates.flatten(-2))  # ... x B x D
        reconstruction = F.binary_cross_entropy_with_logits(
            scores, x.expand(scores.shape), reduction="none").sum(-1)
        posterior = categorical_log_prob(prepared.logits.detach(), gates).sum(-1)
        return reconstruction + self.num_gates * math.log(self.num_classes) + posterior


def parse_categorical_vae_spec(
    options: Mapping[str, str],
    *,
    seed: int = 0,
    max_configurations: int = MAX_VAE_CONFIGURATIONS,
    data_path: str | None = None,
) -> tuple[CategoricalVAE, tuple[torch.Tensor]]:
    """Builds `cat-vae:latents=L,classes=K,hidden=H,batch=B,data=mnist|synthetic`.

    The images are `B` seeded MNIST validation images binarised at 1/2 (`data=synthetic`:
    seeded uniform images, binarised the same way, for runs without MNIST).

    Args:
        options: the spec's options; the keys read are removed from a mutable mapping, so the
            caller can report the ones left as unknown.
        seed: seeds the weights and the choice of images.
        max_configurations: the guard on `K^L`, at most `MAX_VAE_CONFIGURATIONS` whatever is
            passed.
        data_path: an explicit MNIST source (see `estimator_lab.data.mnist`).

    Returns:
        the VAE and its batch `(x,)`, `x` a `B x 784` float32 tensor of zeros and ones.

    Raises:
        ValueError: in one line, for a non-integer or a size below 1, `classes < 2`, an unknown
            `data`, or `K^L` above the guard (checked before building).

    Example:
        >>> vae, (x,) = parse_categorical_vae_spec({"data": "synthetic", "batch": "2"})
        >>> vae.num_configurations, tuple(x.shape)
        (4096, (2, 784))
    """
    from estimator_lab.graphs.moe import example_images

    options = options if isinstance(options, dict) else dict(options)
    latents = pop_number(options, "latents", 4, graph="cat-vae", minimum=1)
    classes = pop_number(options, "classes", 8, graph="cat-vae", minimum=1)
    hidden = pop_number(options, "hidden", 32, graph="cat-vae", minimum=1)
    batch_size = pop_number(options, "batch", 4, graph="cat-vae", minimum=1)
    source = options.pop("data", "mnist")
    if classes < 2:
        raise ValueError(f"cat-vae needs classes >= 2, got classes={classes}")
    refusal = too_many_configurations(f"cat-vae: {latents:,} latents of {classes:,} classes",
                                      classes, str(classes), latents,
                                      min(max_configurations, MAX_VAE_CONFIGURATIONS))
    if refusal is not None:
        raise ValueError(refusal)
    generator = torch.Generator().manual_seed(seed)
    vae = CategoricalVAE(CategoricalVAEConfig(784, latents, classes, hidden), generator)
    images, _ = example_images(source, batch_size, generator, data_path)
    return vae, ((images > 0.5).to(torch.float32),)
