"""Small graphs by name: `toy:n=6,t=0.45`, `sbn:4-4-4`, `tiny-conditional:gates=12`,
`cat-toy:n=3,k=4,t=0.45`, `binary-vae:latents=3,inputs=8`, `topk-toy:n=2,classes=4,k=2`,
`moe:experts=4,k=2`, `cat-vae:latents=2,classes=4`.

A spec is `KIND[:ARGS]`, ARGS a comma-separated list of `key=value` (and, for `sbn`, the layer
sizes joined by `-`). `build_problem(spec, seed=...)` returns the graph with its batch, ready
for enumeration (float64 by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from estimator_lab.configurations import DEFAULT_MAX_CONFIGURATIONS
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.conditional import ConditionalConfig, ConditionalNetwork
from estimator_lab.graphs.sbn import SigmoidBeliefNet
from estimator_lab.graphs.toy import ToyGraph

KINDS = ("toy", "sbn", "tiny-conditional", "cat-toy", "binary-vae", "topk-toy", "moe", "cat-vae")
MAX_TINY_CONDITIONAL_GATES = 16


class GraphSpecError(ValueError):
    """A graph spec that cannot be built; the message says why in one line."""


@dataclass(frozen=True)
class GraphProblem:
    """A named small graph with its fixed batch.

    Attributes:
        spec: the spec it was built from.
        graph: the model.
        batch: its fixed minibatch.
    """

    spec: str
    graph: StochasticGraph
    batch: tuple[torch.Tensor, ...]


def _parse(spec: str) -> tuple[str, list[str], dict[str, str]]:
    kind, _, rest = spec.strip().partition(":")
    positional, options = [], {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        if "=" in item:
            key, _, value = item.partition("=")
            if not key or not value or key in options:
                raise GraphSpecError(f"malformed graph spec {spec!r}: bad item {item!r}")
            options[key] = value
        else:
            positional.append(item)
    return kind, positional, options


def _number(spec: str, options: dict[str, str], key: str, default, kind=int, minimum=None):
    """Pops `options[key]` as a finite `kind` (`int` or `float`) of at least `minimum`."""
    if key not in options:
        return default
    text = options.pop(key)
    try:
        value = kind(text)
    except ValueError:
        message = f"malformed graph spec {spec!r}: {key} must be {kind.__name__}"
        raise GraphSpecError(message) from None
    if not math.isfinite(value):
        raise GraphSpecError(f"bad graph spec {spec!r}: {key} must be finite, got {text}")
    if minimum is not None and value < minimum:
        raise GraphSpecError(f"bad graph spec {spec!r}: {key} must be >= {minimum}, got {value}")
    return value


def _check_gates(spec: str, num_gates: int, max_configurations: int) -> None:
    """Refuses more than `max_configurations` gate configurations before anything is built
    (`2^num_gates` is only written out while it is short)."""
    if num_gates > max_configurations.bit_length() - 1:  # 2^num_gates > max_configurations
        count = f" = {2**num_gates:,}" if num_gates <= 64 else ""
        raise GraphSpecError(
            f"{spec!r} has {num_gates:,} gates: 2^{num_gates}{count} configurations exceed the "
            f"enumeration limit of {max_configurations:,}"
        )


def build_problem(
    spec: str,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    data_path: str | None = None,
) -> GraphProblem:
    """Builds a small graph and its batch from a spec.

    Specs:
        `toy:n=4,t=0.45` (seeded logits) or `toy:logits=0.5/-1/2,t=0.45` (given logits);
        `sbn:4-4-4,inputs=8,batch=2,scale=2` (a sigmoid belief net on seeded binary
        observations); `tiny-conditional:gates=12,hidden=8,batch=4` (the paper network with at
        most 16 gates, on seeded MNIST validation images);
        `binary-vae:latents=3,inputs=8,hidden=4,batch=2` (a Bernoulli VAE, loss -ELBO, on
        seeded binary observations; `hidden=0`, the default, is the linear model).
        Categorical gates: `cat-toy:n=3,k=4,t=0.45,batch=1` (`parse_cat_toy`);
        `cat-vae:latents=4,classes=8,hidden=32,batch=4,data=mnist` (a categorical VAE on
        binarised MNIST validation images, `data=synthetic` for seeded ones; at most 2^20
        configurations; `parse_categorical_vae_spec`). Top-k gates:
        `topk-toy:n=2,classes=4,k=2,t=0.45,batch=1` (`parse_topk_toy`);
        `moe:experts=4,k=2,hidden=8,block=4,batch=4,size=tiny,data=mnist` (the mixture-of-
        experts router on MNIST validation images; `size=full` starts from the paper-sized
        router; `parse_moe_spec`).

    Raises:
        GraphSpecError: for an unknown kind, a malformed spec, unknown keys, a count below 1
            (gates, layer sizes, inputs, hidden units, batch), a number that is not finite, or
            more gate configurations than `max_configurations` (checked before building); for
            the categorical and top-k kinds, whatever their parser refuses (`k` outside
            `1 <= k < classes`, `classes < 2`, a non-integer, ...), in one line.
    """
    try:
        graph, batch = _build(spec, seed, data_path, max_configurations)
    except GraphSpecError:
        raise
    except ValueError as error:  # sizes the graph constructors refuse
        raise GraphSpecError(f"bad graph spec {spec!r}: {error}") from None
    graph = graph.to(dtype)
    batch = tuple(t.to(dtype) if t.is_floating_point() else t for t in batch)
    return GraphProblem(spec, graph, batch)


def _build(spec: str, seed: int, data_path: str | None, max_configurations: int):
    kind, positional, options = _parse(spec)
    generator = torch.Generator().manual_seed(seed)
    if kind == "toy":
        target = _number(spec, options, "t", 0.45, float)
        if "logits" in options:
            try:
                logits = [float(v) for v in options.pop("logits").split("/")]
            except ValueError:
                raise GraphSpecError(f"malformed graph spec {spec!r}: logits") from None
            _check_gates(spec, len(logits), max_configurations)
            graph = ToyGraph(logits, target)
        else:
            gates = _number(spec, options, "n", 4, minimum=1)
            _check_gates(spec, gates, max_configurations)
            graph = ToyGraph.seeded(gates, target, seed)
        batch = graph.example_batch(_number(spec, options, "batch", 1, minimum=1))
    elif kind == "sbn":
        if len(positional) != 1:
            raise GraphSpecError(f"malformed graph spec {spec!r}: give layer sizes like sbn:4-4")
        try:
            sizes = tuple(int(s) for s in positional[0].split("-"))
        except ValueError:
            raise GraphSpecError(f"malformed graph spec {spec!r}: layer sizes") from None
        if min(sizes) < 1:
            raise GraphSpecError(f"bad graph spec {spec!r}: layer sizes must be >= 1")
        _check_gates(spec, sum(sizes), max_configurations)
        inputs = _number(spec, options, "inputs", 8, minimum=1)
        scale = _number(spec, options, "scale", 2.0, float)
        graph = SigmoidBeliefNet(inputs, sizes, generator, scale=scale)
        size = (_number(spec, options, "batch", 2, minimum=1), inputs)
        batch = ((torch.rand(size, generator=generator) < 0.5).to(torch.float32),)
    elif kind == "tiny-conditional":
        from estimator_lab.data import mnist

        gates = _number(spec, options, "gates", 8)
        if not 1 <= gates <= MAX_TINY_CONDITIONAL_GATES:
            raise GraphSpecError(
                f"tiny-conditional takes 1 to {MAX_TINY_CONDITIONAL_GATES} gates, got {gates}"
            )
        _check_gates(spec, gates, max_configurations)
        config = ConditionalConfig(num_gater_hidden=_number(spec, options, "hidden", 8, minimum=1),
                                   num_gates=gates)
        batch_size = _number(spec, options, "batch", 4, minimum=1)
        graph = ConditionalNetwork(config, generator)
        images, labels = mnist("valid", path=data_path).tensors()
        index = torch.randperm(images.shape[0], generator=generator)[:batch_size]
        batch = (images[index], labels[index])
    elif kind == "binary-vae":
        from estimator_lab.graphs.binary_vae import BinaryVAE, BinaryVAEConfig

        latents = _number(spec, options, "latents", 3, minimum=1)
        _check_gates(spec, latents, max_configurations)
        inputs = _number(spec, options, "inputs", 8, minimum=1)
        hidden = _number(spec, options, "hidden", 0, minimum=0)
        config = BinaryVAEConfig(num_inputs=inputs, num_latents=latents,
                                 hidden=(hidden,) if hidden else ())
        mean = torch.rand(inputs, generator=generator) * 0.8 + 0.1
        graph = BinaryVAE(config, mean, generator)
        size = (_number(spec, options, "batch", 2, minimum=1), inputs)
        batch = ((torch.rand(size, generator=generator) < mean).to(torch.float32),)
    elif kind == "cat-toy":
        from estimator_lab.graphs.categorical import parse_cat_toy

        graph, batch = parse_cat_toy(options, seed=seed, max_configurations=max_configurations)
    elif kind == "cat-vae":
        from estimator_lab.graphs.categorical_vae import parse_categorical_vae_spec

        graph, batch = parse_categorical_vae_spec(
            options, seed=seed, max_configurations=max_configurations, data_path=data_path)
    elif kind == "topk-toy":
        from estimator_lab.graphs.topk import parse_topk_toy

        graph, batch = parse_topk_toy(options, seed=seed, max_configurations=max_configurations)
    elif kind == "moe":
        from estimator_lab.graphs.moe import parse_moe_spec

        graph, batch = parse_moe_spec(options, seed=seed, max_configurations=max_configurations,
                                      data_path=data_path)
    else:
        raise GraphSpecError(f"unknown graph {kind!r} in spec {spec!r}; known: {', '.join(KINDS)}")
    if options or (positional and kind != "sbn"):
        extra = ", ".join([*options, *positional])
        raise GraphSpecError(f"malformed graph spec {spec!r}: unknown {extra}")
    return graph, batch
