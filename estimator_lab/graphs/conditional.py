"""The conditional-computation network of Bengio, Léonard and Courville (2013), section 5.

The gater maps the input through an affine layer and `tanh` to a bottleneck, then through an
affine layer to one gate logit per expert unit. The expert is a linear map of the input. The
conditional layer's output is `gate * expert`, followed by an affine output layer and softmax.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from estimator_lab.graphs.base import PreparedBatch, StochasticGraph, init_fan_in_uniform

SHARED_INPUT_LAYERS = ("gater_hidden", "gater_out", "expert")
"""The layers of `ConditionalNetwork` whose input is the same in every draw."""


@dataclass(frozen=True)
class ConditionalConfig:
    """Sizes of the conditional network; the defaults are the paper's (2,706,010 parameters).

    Attributes:
        num_inputs: input features (784 for MNIST).
        num_gater_hidden: `tanh` units in the gater bottleneck (400).
        num_gates: gates, equal to the number of expert units (2000).
        num_classes: output classes (10).
    """

    num_inputs: int = 784
    num_gater_hidden: int = 400
    num_gates: int = 2000
    num_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("num_inputs", "num_gater_hidden", "num_gates", "num_classes"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"ConditionalConfig.{name} must be >= 1, got {value}")


class ConditionalNetwork(StochasticGraph):
    """The paper's network: 784 -> 400 tanh -> 2000 gate logits; expert 784 -> 2000; output 10.

    The loss is the per-example cross-entropy of the output softmax. `prepare` computes the
    gater and the expert once per minibatch; `loss` only applies the gates and the output layer,
    so it broadcasts over any number of leading sample dimensions.

    Args:
        config: the layer sizes.
        generator: an optional `torch.Generator` for a seeded initialisation (PyTorch's default
            `nn.Linear` initialisation, uniform in `±1/sqrt(fan_in)`).

    Example:
        >>> net = ConditionalNetwork()
        >>> sum(p.numel() for p in net.parameters())
        2706010
        >>> x, y = torch.rand(3, 784), torch.tensor([0, 1, 2])
        >>> prepared = net.prepare((x, y))
        >>> net.loss(prepared, torch.ones(5, 3, 2000)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self, config: ConditionalConfig | None = None, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.config = config or ConditionalConfig()
        c = self.config
        self.num_gates = c.num_gates
        self.gater_hidden = nn.Linear(c.num_inputs, c.num_gater_hidden)
        self.gater_out = nn.Linear(c.num_gater_hidden, c.num_gates)
        self.expert = nn.Linear(c.num_inputs, c.num_gates)
        self.output = nn.Linear(c.num_gates, c.num_classes)
        if generator is not None:
            self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Seeded `nn.Linear` initialisation: weights and biases uniform in `±1/sqrt(fan_in)`."""
        init_fan_in_uniform((self.gater_hidden, self.gater_out, self.expert, self.output),
                            generator)

    def prepare(
        self,
        batch: tuple[torch.Tensor, torch.Tensor],
        probes: Mapping[str, torch.Tensor] | None = None,
    ) -> PreparedBatch:
        """Gate logits and expert output of a batch `(x, y)`.

        Args:
            batch: `x`, a `B x num_inputs` tensor, and `y`, `B` int64 class labels.
            probes: optional tensors added to the outputs of the layers named by
                `shared_input_layers` (`"gater_hidden"`: `B x num_gater_hidden`, before the
                `tanh`; `"gater_out"`: `B x G`; `"expert"`: `B x G`). Zero probes leave every
                value unchanged; the gradient with respect to a probe is the gradient with
                respect to that layer's output.

        Returns:
            logits `a` (`B x G`) and features `expert` (`B x G`) and `labels` (`B`).

        Raises:
            KeyError: for a probe that names no shared-input layer.
        """
        x, y = batch
        probes = dict(probes or {})
        unknown = set(probes) - set(SHARED_INPUT_LAYERS)
        if unknown:
            raise KeyError(f"probes {sorted(unknown)} name no layer of {SHARED_INPUT_LAYERS}")

        def layer(name: str, inputs: torch.Tensor) -> torch.Tensor:
            out = getattr(self, name)(inputs)
            return out + probes[name] if name in probes else out

        hidden = torch.tanh(layer("gater_hidden", x))
        return PreparedBatch(
            logits=layer("gater_out", hidden),
            features={"expert": layer("expert", x), "labels": y},
        )

    def logits(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The `B x G` gate logits of a batch, without the expert path (`prepare` computes
        both; the labels, `batch[1]`, are not read)."""
        return self.gater_out(torch.tanh(self.gater_hidden(batch[0])))

    def shared_input_layers(
        self, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The gater's two layers and the expert, whose inputs do not depend on the gates.

        Returns:
            `{"gater_hidden": x, "gater_out": tanh(gater_hidden(x)), "expert": x}`, the `B x in`
            input of each layer.
        """
        x, _ = batch
        return {"gater_hidden": x, "gater_out": torch.tanh(self.gater_hidden(x)), "expert": x}

    def output_logits(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """Class logits for gate values: a `... x B x num_classes` tensor."""
        return self.output(gates * prepared.features["expert"])

    def loss(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """Per-example cross-entropy, a `... x B` tensor, for `... x B x G` gates."""
        scores = self.output_logits(prepared, gates)
        labels = prepared.features["labels"].expand(scores.shape[:-1])
        return F.cross_entropy(scores.flatten(0, -2), labels.flatten(), reduction="none").view(
            labels.shape
        )

    def gate_flip_losses(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """Losses with each gate set to 1 and to 0, the others held at `gates`.

        The output layer is linear in the gates, so all `2G` flips cost one `B x G x classes`
        product instead of `2G` forward passes.

        Args:
            gates: a `... x B x G` tensor of gate values.

        Returns:
            a `2 x ... x B x G` tensor: `[0]` losses with gate `i` on, `[1]` with gate `i` off.
        """
        scores = self.output_logits(prepared, gates).unsqueeze(-2)  # ... x B x 1 x C
        contribution = (prepared.features["expert"].unsqueeze(-1) * self.output.weight.T)
        on = scores + (1 - gates).unsqueeze(-1) * contribution  # ... x B x G x C
        off = scores - gates.unsqueeze(-1) * contribution
        labels = prepared.features["labels"].view(-1, 1).expand(on.shape[-3:-1])
        log_norm = torch.stack([on, off]).logsumexp(-1)
        picked = torch.stack([on, off]).gather(-1, labels.expand(log_norm.shape).unsqueeze(-1))
        return log_norm - picked.squeeze(-1)

    def gate_flip_gains(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """`L(b; b_i=1) - L(b; b_i=0)` for every gate `i` of binary `gates`, the others held.

        Flipping gate `i` moves the class scores `s` (at `gates`) by `sign_i c_i`, with
        `c_i = expert_i W_out[:, i]` (fixed for the minibatch) and `sign_i = 1 - 2 b_i`, so the
        gain is `sign_i log sum_c p_c exp(sign_i c_ic) - c_i[y]` with `p = softmax(s)`: the
        label's score cancels. Both signs' sums are one `C` by `C x 2G` product per example
        (against `exp(+-c_i - max(+-c_i))`, fixed for the minibatch), in float64; no
        `... x B x G x C` tensor, unlike `gate_flip_losses`. Finite wherever, for each
        example and gate, the class scores or the gate's contribution spread less than ~700
        across the classes (float64's `exp`); past that the gain is infinite and the engine's
        non-finite check reports the draw.

        Args:
            prepared: the output of `prepare` for a batch of `B` examples.
            gates: a `... x B x G` tensor of 0s and 1s.

        Returns:
            a `... x B x G` tensor in the dtype of `gates`.
        """
        probs = self.output_logits(prepared, gates).double().softmax(-1)  # ... x B x C
        contribution = (prepared.features["expert"].unsqueeze(-1)
                        * self.output.weight.T).double()  # B x G x C
        moved = torch.cat([contribution, -contribution], 1)  # B x 2G x C: both signs
        peak = moved.max(-1).values  # B x 2G
        spread = (moved - peak.unsqueeze(-1)).exp().transpose(1, 2).contiguous()  # B x C x 2G
        # One `... x C` by `C x 2G` product per example: under `vmap` a product batched over
        # the examples would copy `spread` once per draw.
        sums = torch.stack([probs[..., b, :] @ spread[b] for b in range(len(spread))], -2)
        num_gates = gates.shape[-1]
        labels = prepared.features["labels"].view(-1, 1, 1).expand(-1, num_gates, 1)
        label_contribution = contribution.gather(-1, labels).squeeze(-1)  # B x G
        offsets = (peak[:, :num_gates] - label_contribution,  # gate off: sign +1
                   -peak[:, num_gates:] - label_contribution)  # gate on: sign -1
        # Selections by `lerp` with 0/1 weights (exact; `torch.where` is slower on the CPU).
        on = gates.double()
        sums = torch.lerp(sums[..., :num_gates], sums[..., num_gates:], on)
        return (torch.lerp(*offsets, on) + (1 - 2 * on) * sums.log()).to(gates.dtype)
