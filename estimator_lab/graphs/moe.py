"""A mixture-of-experts router on MNIST: a gater chooses `k` of `E` expert blocks per example.

The paper's conditional layer (section 5: gate ⊙ expert) with its 2000 gates grouped into `E`
blocks, one top-k gate per example choosing which `k` blocks are on:

    gater:   s = W2 tanh(W1 x + c1) + c2                    (`E` logits, `1 x E` per example)
    experts: H = reshape(V x + d)                           (`E x U`, no non-linearity)
    output:  scores = W3 vec(m ⊙ H) + c3,  L = -log softmax(scores)_y

with `m` the k-hot Gumbel-top-k mask over the blocks (`graphs.topk`). One example's gates take
`C(E, k)` configurations, so the tiny router (`E = 4, k = 2`: 6) is enumerated exactly, for
every parameter; `MoEConfig.full_size()` (`E = 16` blocks of 125 units: the paper's 2000,
a 400-unit gater hidden layer) is for Monte Carlo (`C(16, 2) = 120` configurations per example
are still enumerable one example at a time, but its estimator moments are not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn

from estimator_lab.graphs.base import PreparedBatch, init_fan_in_uniform
from estimator_lab.graphs.spec_options import pop_number
from estimator_lab.graphs.topk import TopKGraph, check_topk_sizes, too_many_topk


@dataclass(frozen=True)
class MoEConfig:
    """Sizes of the router; the defaults are the tiny, enumerable one.

    Attributes:
        num_inputs: input features (784 for MNIST).
        num_gater_hidden: tanh units of the gater.
        num_experts: expert blocks `E` (the classes of the top-k gate).
        num_chosen: blocks on per example, `k`.
        expert_units: units `U` per block.
        num_outputs: classes of the softmax output (10).
    """

    num_inputs: int = 784
    num_gater_hidden: int = 8
    num_experts: int = 4
    num_chosen: int = 2
    expert_units: int = 4
    num_outputs: int = 10

    @classmethod
    def full_size(cls, **changes) -> MoEConfig:
        """The paper-sized router: 16 blocks of 125 units (2000), 400 gater units, `k = 2`."""
        return replace(cls(num_gater_hidden=400, num_experts=16, expert_units=125), **changes)


class MoERouter(TopKGraph):
    """The router of the module docstring, a `TopKGraph` with one gate per example.

    The batch is `(x, y)`: `B x D` inputs and `B` integer labels. `prepare` runs the gater and
    the experts once per minibatch (they do not depend on the gates); `loss` reads masks of
    shape `... x B x 1 x E` (k-hot or relaxed).

    Args:
        config: the sizes.
        generator: seeds the weights (uniform in `+-1/sqrt(fan_in)`, PyTorch's `nn.Linear` law).

    Example:
        >>> router = MoERouter(MoEConfig(num_inputs=6), torch.Generator().manual_seed(0))
        >>> prepared = router.prepare((torch.rand(3, 6), torch.tensor([0, 4, 9])))
        >>> masks = torch.zeros(5, 3, 1, 4).index_fill(-1, torch.tensor([0, 2]), 1.0)
        >>> prepared.logits.shape, router.loss(prepared, masks).shape
        (torch.Size([3, 1, 4]), torch.Size([5, 3]))
    """

    def __init__(self, config: MoEConfig | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = c = config or MoEConfig()
        check_topk_sizes(c.num_experts, c.num_chosen)
        sizes = (c.num_inputs, c.num_gater_hidden, c.expert_units, c.num_outputs)
        if min(sizes) < 1:
            raise ValueError(f"moe sizes must be >= 1, got inputs, hidden, block, outputs = "
                             f"{sizes}")
        self.num_gates, self.num_classes, self.num_chosen = 1, c.num_experts, c.num_chosen
        self.gater_hidden = nn.Linear(c.num_inputs, c.num_gater_hidden)
        self.gater_out = nn.Linear(c.num_gater_hidden, c.num_experts)
        self.experts = nn.Linear(c.num_inputs, c.num_experts * c.expert_units)
        self.output = nn.Linear(c.num_experts * c.expert_units, c.num_outputs)
        init_fan_in_uniform((self.gater_hidden, self.gater_out, self.experts, self.output),
                            generator or torch.Generator().manual_seed(0))

    def prepare(self, batch: tuple[torch.Tensor, ...]) -> PreparedBatch:
        """Gate logits (`B x 1 x E`), expert outputs `"experts"` (`B x E x U`), labels `"y"`."""
        x, y = batch
        logits = self.gater_out(torch.tanh(self.gater_hidden(x))).unsqueeze(-2)
        experts = self.experts(x).unflatten(-1, (self.config.num_experts, -1))
        return PreparedBatch(logits=logits, features={"experts": experts, "y": y})

    def loss(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the masked experts' read-out: `... x B x 1 x E` -> `... x B`."""
        active = gates.squeeze(-2).unsqueeze(-1) * prepared.features["experts"]
        scores = self.output(active.flatten(-2))  # ... x B x outputs
        log_probs = torch.log_softmax(scores, -1)
        labels = prepared.features["y"].expand(scores.shape[:-1]).unsqueeze(-1)
        return -log_probs.gather(-1, labels).squeeze(-1)


def example_images(
    source: str, batch_size: int, generator: torch.Generator, data_path: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` seeded examples: MNIST validation images (`source="mnist"`) or seeded
    uniform `[0, 1)` images with seeded labels (`source="synthetic"`, no data needed).

    Returns:
        a `B x 784` float32 tensor and `B` int64 labels.

    Raises:
        ValueError: for another `source`.
    """
    if source == "synthetic":
        images = torch.rand(batch_size, 784, generator=generator)
        return images, torch.randint(0, 10, (batch_size,), generator=generator)
    if source != "mnist":
        raise ValueError(f"data must be mnist or synthetic, got {source!r}")
    from estimator_lab.data import mnist

    images, labels = mnist("valid", path=data_path).tensors()
    index = torch.randperm(images.shape[0], generator=generator)[:batch_size]
    return images[index], labels[index]


def parse_moe_spec(
    options: Mapping[str, str],
    *,
    max_configurations: int,
    seed: int = 0,
    data_path: str | None = None,
) -> tuple[MoERouter, tuple[torch.Tensor, torch.Tensor]]:
    """Builds `moe:experts=E,k=K,hidden=H,block=U,batch=B,size=tiny|full,data=mnist|synthetic`.

    `size=full` starts from `MoEConfig.full_size()` instead of the tiny defaults; the other
    keys override either. Weights and the examples are seeded by `seed`.

    Args:
        options: the spec's options; the keys read are removed from a mutable mapping, so the
            caller can report the ones left as unknown.
        max_configurations: the enumeration guard on `C(E, k)` per example (checked before
            building).
        seed: seeds the weights and the choice of examples.
        data_path: an explicit MNIST source (see `estimator_lab.data.mnist`).

    Returns:
        the router and its batch `(x, y)`.

    Raises:
        ValueError: in one line, for a non-integer or a size below 1, `k` outside `1 <= k < E`
            or above `MAX_CHOSEN`, an unknown `size` or `data`, or
            `C(E, k) > max_configurations`.

    Example:
        >>> router, (x, y) = parse_moe_spec({"experts": "5", "k": "2", "data": "synthetic"},
        ...                               max_configurations=2**22)
        >>> router.num_configurations, tuple(x.shape)
        (10, (4, 784))
    """
    options = options if isinstance(options, dict) else dict(options)
    size = options.pop("size", "tiny")
    if size not in ("tiny", "full"):
        raise ValueError(f"moe size must be tiny or full, got {size!r}")
    base = MoEConfig.full_size() if size == "full" else MoEConfig()
    count = partial(pop_number, options, graph="moe", minimum=1)
    config = replace(
        base,
        num_experts=count("experts", base.num_experts),
        num_chosen=count("k", base.num_chosen),
        num_gater_hidden=count("hidden", base.num_gater_hidden),
        expert_units=count("block", base.expert_units),
    )
    batch_size = count("batch", 4)
    source = options.pop("data", "mnist")
    check_topk_sizes(config.num_experts, config.num_chosen)
    refusal = too_many_topk(1, config.num_experts, config.num_chosen, max_configurations)
    if refusal is not None:
        raise ValueError(refusal)
    generator = torch.Generator().manual_seed(seed)
    router = MoERouter(config, generator)
    return router, example_images(source, batch_size, generator, data_path)
