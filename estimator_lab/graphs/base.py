"""The `StochasticGraph` interface: a model whose only randomness is a layer of gates."""

from __future__ import annotations

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


class StochasticGraph(nn.Module):
    """A model with `num_gates` stochastic gates that maps a batch and gate values to losses.

    Subclasses implement `prepare(batch)`, which runs everything that does not depend on the
    gates once per minibatch, and `loss(prepared, gates)`, which maps gate values to per-example
    losses. Randomness never enters a graph: estimators draw gates from explicit noise tensors,
    so a draw is a pure function of its noise.

    Attributes:
        num_gates: number of gates per example, `G`.
    """

    num_gates: int

    def prepare(self, batch: tuple[torch.Tensor, ...]) -> PreparedBatch:
        """Computes the gate logits and the gate-independent features of a minibatch."""
        raise NotImplementedError

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
