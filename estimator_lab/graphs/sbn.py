"""Sigmoid belief nets: several layers of Bernoulli gates above a Bernoulli observation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


class SigmoidBeliefNet(StochasticGraph):
    """A stochastic autoencoder with layers of Bernoulli gates, scored by reconstruction.

    For an observation `x` (`D` binary features): layer 0's gates are drawn from logits
    `W_0 x + c_0`, layer `l`'s from `W_l b_{l-1} + c_l`, and the loss is the negative
    log-likelihood of `x` under `Bernoulli(sigmoid(V b_last + d))`, summed over features.

    Args:
        num_inputs: observation features `D`.
        layer_sizes: gates per layer, e.g. `(4, 4, 4)`.
        generator: a `torch.Generator` for seeded weights, normal with standard deviation
            `scale / sqrt(fan_in)`.
        scale: weight scale (large values make the loss depend sharply on the gates).

    Example:
        >>> net = SigmoidBeliefNet(6, (4, 3), torch.Generator().manual_seed(0))
        >>> prepared = net.prepare((torch.ones(2, 6),))
        >>> net.loss(prepared, torch.zeros(5, 2, 7)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        num_inputs: int,
        layer_sizes: Sequence[int],
        generator: torch.Generator | None = None,
        *,
        scale: float = 2.0,
    ) -> None:
        super().__init__()
        sizes = tuple(int(s) for s in layer_sizes)
        if num_inputs < 1 or not sizes or min(sizes) < 1:
            raise ValueError(
                f"need num_inputs >= 1 and layer sizes >= 1, got {num_inputs} and {sizes}"
            )
        if not math.isfinite(scale):
            raise ValueError(f"scale must be finite, got {scale}")
        self._layer_sizes = sizes
        self.num_gates = sum(sizes)
        fan_ins = (num_inputs, *sizes[:-1])
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(fan_ins, sizes, strict=True))
        self.decoder = nn.Linear(sizes[-1], num_inputs)
        generator = generator or torch.Generator().manual_seed(0)
        with torch.no_grad():
            for layer in (*self.layers, self.decoder):
                layer.weight.copy_(
                    torch.randn(layer.weight.shape, generator=generator)
                    * scale / layer.in_features**0.5
                )
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.5)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return self._layer_sizes

    def prepare(self, batch: tuple[torch.Tensor, ...]) -> PreparedBatch:
        """Layer 0's logits for observations `x`, a `B x D` tensor of zeros and ones."""
        (x,) = batch
        return PreparedBatch(logits=self.layers[0](x), features={"x": x})

    def layer_logits(
        self, prepared: PreparedBatch, layer: int, upstream: list[torch.Tensor]
    ) -> torch.Tensor:
        if layer == 0:
            return prepared.logits
        return self.layers[layer](upstream[layer - 1])

    def loss(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """Reconstruction NLL, a `... x B` tensor, from the last layer's gates.

        Args:
            gates: a `... x B x G` tensor holding every layer's gates (only the last layer's
                enter the loss; the others matter through the logits they produced).
        """
        last = gates[..., -self._layer_sizes[-1]:]
        scores = self.decoder(last)
        x = prepared.features["x"].expand(scores.shape)
        return F.binary_cross_entropy_with_logits(scores, x, reduction="none").sum(-1)
