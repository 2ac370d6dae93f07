"""The `StochasticGraph` interface: a model whose only randomness is a layer of gates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class PreparedBatch:
    """The gate-independent part of a forward pass, computed once per minibatch.

    Attributes:
        logits: a `B x G` tensor of gate logits `a`; `p = sigmoid(a)` for Bernoulli gates.
        features: named tensors the graph's `loss` needs besides the gates (for the paper
            network, the expert output `H`, a `B x G` tensor, and the labels).
    """

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.logits.shape[0]


GateFunction = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
"""`(layer, logits, noise) -> gate values` for one layer: how an estimator draws its gates."""


@dataclass
class GateTrace:
    """One forward pass through every gate layer.

    Attributes:
        logits: per layer, a `... x B x G_l` tensor of the logits the layer's gates were drawn
            from (with their autograd history).
        gates: per layer, the `... x B x G_l` gate values the gate function returned (the values
            the downstream layers and the loss saw).
        losses: a `... x B` tensor of per-example losses.
    """

    logits: list[torch.Tensor]
    gates: list[torch.Tensor]
    losses: torch.Tensor

    @property
    def all_logits(self) -> torch.Tensor:
        """The logits of every layer concatenated, `... x B x G`."""
        return torch.cat(self.logits, -1)

    @property
    def all_gates(self) -> torch.Tensor:
        """The gates of every layer concatenated, `... x B x G`."""
        return torch.cat(self.gates, -1)


class StochasticGraph(nn.Module):
    """A model with `num_gates` stochastic gates that maps a batch and gate values to losses.

    Subclasses implement `prepare(batch)`, which runs everything that does not depend on the
    gates once per minibatch, and `loss(prepared, gates)`, which maps gate values to per-example
    losses. Randomness never enters a graph: estimators draw gates from explicit noise tensors,
    so a draw is a pure function of its noise.

    Graphs with several gate layers (sigmoid belief nets) declare `layer_sizes` and compute the
    logits of layer `l > 0` from the gates above it in `layer_logits`; `sample` runs the layers
    in order with an estimator's gate function. The gates of all layers are concatenated, in
    layer order, into the last dimension `G = sum(layer_sizes)` wherever a tensor holds them.

    Attributes:
        num_gates: number of gates per example, `G`, summed over layers.
    """

    num_gates: int

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Gates per layer, in sampling order (one layer by default)."""
        return (self.num_gates,)

    def layer_logits(
        self, prepared: PreparedBatch, layer: int, upstream: list[torch.Tensor]
    ) -> torch.Tensor:
        """Logits of gate layer `layer` given the gates of the layers before it.

        Args:
            prepared: the output of `prepare`; `prepared.logits` are layer 0's logits.
            layer: the layer index.
            upstream: the `... x B x G_k` gates of layers `0 .. layer - 1`.

        Returns:
            a `... x B x G_layer` tensor.
        """
        if layer != 0:
            raise NotImplementedError(f"{type(self).__name__} has one gate layer")
        return prepared.logits

    def sample(
        self, prepared: PreparedBatch, noise: torch.Tensor, gate_fn: GateFunction
    ) -> GateTrace:
        """Draws every gate layer in order with `gate_fn`, then evaluates the loss.

        Args:
            prepared: the output of `prepare` for a batch of `B` examples.
            noise: a `... x B x G` tensor, split over the layers in order.
            gate_fn: `(layer, logits, layer_noise) -> gates` for one layer.

        Returns:
            the `GateTrace` of the pass.
        """
        logits, gates = [], []
        for layer, layer_noise in enumerate(noise.split(self.layer_sizes, dim=-1)):
            layer_logits = self.layer_logits(prepared, layer, gates)
            if layer_logits.dim() < layer_noise.dim():
                layer_logits = layer_logits.expand(layer_noise.shape)
            logits.append(layer_logits)
            gates.append(gate_fn(layer, layer_logits, layer_noise))
        return GateTrace(logits, gates, self.loss(prepared, torch.cat(gates, -1)))

    def prepare(self, batch: tuple[torch.Tensor, ...]) -> PreparedBatch:
        """Computes the gate logits and the gate-independent features of a minibatch."""
        raise NotImplementedError

    def shared_input_layers(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """The `nn.Linear` layers whose input is the same in every draw, with that input.

        For such a layer `y = H W^T + b`, the gradient of any draw with respect to `W` is
        `Delta^T H`, with `Delta` (`B x out`) the draw's gradient with respect to `y`; the
        Monte Carlo fast path (`estimator_lab.montecarlo.fastpath`) accumulates moments of
        `Delta` instead of the `out x in` weight gradients. A graph that declares layers here
        must accept `prepare(batch, probes=...)`, with `probes` a dict from some of the declared
        names to `B x out` tensors added to those layers' outputs, and its parameters must reach
        the losses only through those outputs.

        Args:
            batch: the minibatch.

        Returns:
            the submodule name of each such layer (an `nn.Linear`) mapped to its `B x in`
            input; empty by default (no layer declared).
        """
        return {}

    def loss(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """Per-example losses for gate values.

        Args:
            prepared: the output of `prepare` for a batch of `B` examples.
            gates: a `... x B x G` tensor of gate values (any leading sample dims).

        Returns:
            a `... x B` tensor of per-example losses.
        """
        raise NotImplementedError

    def logits(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The `B x G` gate logits of a batch."""
        return self.prepare(batch).logits

    def gate_flip_losses(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """Losses with each gate set to 1 and to 0, the others held at `gates`.

        This generic version evaluates `2G` gate configurations at once (memory `2G x ... x B x
        G`); graphs whose loss is cheap to update for one flipped gate override it.

        Args:
            prepared: the output of `prepare` for a batch of `B` examples.
            gates: a `... x B x G` tensor of gate values.

        Returns:
            a `2 x ... x B x G` tensor: `[0]` the losses with gate `i` on, `[1]` with gate `i` off.
        """
        eye = torch.eye(self.num_gates, dtype=gates.dtype, device=gates.device)
        eye = eye.view(self.num_gates, *([1] * (gates.dim() - 1)), self.num_gates)
        flipped = torch.stack([gates + (1 - gates) * eye, gates * (1 - eye)])  # 2 x G x ... x G
        return self.loss(prepared, flipped).movedim(1, -1)

    def gate_flip_gains(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """`L(b; b_i=1) - L(b; b_i=0)` for every gate `i` of binary `gates`, the others held
        (a `... x B x G` tensor): the difference of `gate_flip_losses`' two sides here; graphs
        that can compute it without both sides override it."""
        on, off = self.gate_flip_losses(prepared, gates)
        return on - off


@torch.no_grad()
def init_fan_in_uniform(modules, generator: torch.Generator) -> None:
    """Seeded `nn.Linear` initialisation: the weights and biases of every `nn.Linear` among
    `modules`, in order, uniform in `±1/sqrt(fan_in)` (PyTorch's law, drawn from `generator`).

    Example:
        >>> layer = nn.Linear(4, 2)
        >>> init_fan_in_uniform([layer, nn.Tanh()], torch.Generator().manual_seed(0))
        >>> bool(layer.weight.abs().max() <= 0.5)
        True
    """
    for layer in modules:
        if isinstance(layer, nn.Linear):
            bound = layer.in_features**-0.5
            for param in (layer.weight, layer.bias):
                noise = torch.rand(param.shape, generator=generator, dtype=param.dtype)
                param.copy_((2 * noise - 1) * bound)
