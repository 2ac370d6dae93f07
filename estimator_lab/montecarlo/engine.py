"""The generic path of the Monte Carlo engine: many gradient draws per estimator, folded into
streaming moments (`montecarlo.runner.run_draws` is the entry point over both paths).

Per-draw gradients come from `torch.func.vmap` of `torch.func.grad` of the estimator's
surrogate over a chunk of noise: the gate-independent layers run once per chunk and the backward
pass is a batched matrix product (`gradient_draws`). Draws come in chunks of `chunk_size` and
are folded into a `MomentAccumulator`, so memory is bounded by one chunk whatever the number of
draws.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from estimator_lab.graphs.base import PreparedBatch, StochasticGraph
from estimator_lab.montecarlo.plan import DrawPlan
from estimator_lab.noise import uniform_noise

if TYPE_CHECKING:  # estimators import this module: only a type here
    from estimator_lab.estimators.base import GradientEstimator

GATE_LOGITS = "gate_logits"


def tracked_parameters(
    graph: StochasticGraph, names: Sequence[str] | None = None
) -> dict[str, torch.nn.Parameter]:
    """The named parameters to track (all of them when `names` is None).

    Raises:
        KeyError: for a name the graph does not have, listing the ones it has.
    """
    params = dict(graph.named_parameters())
    if names is None:
        return params
    unknown = [n for n in names if n not in params]
    if unknown:
        raise KeyError(f"unknown parameters {unknown}; the graph has {list(params)}")
    return {n: params[n] for n in names}


class _Surrogate(torch.nn.Module):
    """`(probe, noise) -> surrogate` with the graph as a submodule, for `functional_call`.

    `probe` is a zero `B x G` tensor added to the gate logits, so the gradient with respect to
    it is the gradient with respect to the logits.
    """

    def __init__(self, graph: StochasticGraph, estimator: GradientEstimator, batch, state) -> None:
        super().__init__()
        self.graph, self.estimator, self.batch, self.state = graph, estimator, batch, state

    def forward(self, probe: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        prepared = self.graph.prepare(self.batch)
        prepared.logits = prepared.logits + probe
        return self.estimator.surrogate(self.graph, prepared, noise, self.state)


def gradient_draws(
    graph: StochasticGraph,
    estimator: GradientEstimator,
    batch: tuple[torch.Tensor, ...],
    noise: torch.Tensor,
    *,
    state: Any = None,
    parameters: Sequence[str] | None = None,
    include_logits: bool = True,
    method: str = "vmap",
) -> dict[str, torch.Tensor]:
    """Per-draw gradients for a chunk of noise.

    `method="vmap"` maps `torch.func.grad` of the surrogate over the draws: the forward pass
    through the gate-independent layers is not batched, so it runs once per chunk, and the
    backward pass becomes batched matrix products. `method="loop"` runs one
    `torch.autograd.grad` per draw through a retained forward pass; it serves estimators whose
    surrogate cannot be vmapped and is the naive reference.

    Args:
        graph: the model.
        estimator: the estimator (its `state` is read, never updated).
        batch: the minibatch, on the graph's device.
        noise: a `K x *noise_shape` tensor, one row per draw.
        state: the estimator state, frozen for the whole chunk.
        parameters: names of the parameters to differentiate (default: all).
        include_logits: whether to also return the gradient with respect to the gate logits.
        method: `"vmap"` or `"loop"`.

    Returns:
        a dict from `"gate_logits"` (if asked) and each parameter name to a `K x *shape` tensor.
    """
    params = tracked_parameters(graph, parameters)
    module = _Surrogate(graph, estimator, batch, state)
    with torch.no_grad():
        probe = torch.zeros_like(graph.logits(batch))
    if method == "vmap":
        frozen = {f"graph.{n}": p.detach() for n, p in graph.named_parameters()}

        def surrogate(tracked, probe, noise):
            values = frozen | {f"graph.{n}": t for n, t in tracked.items()}
            return torch.func.functional_call(module, values, (probe, noise))

        tracked = {n: p.detach() for n, p in params.items()}
        per_draw = torch.func.vmap(
            torch.func.grad(surrogate, argnums=(0, 1)), in_dims=(None, None, 0)
        )
        param_grads, logit_grads = per_draw(tracked, probe, noise)
    elif method == "loop":
        probe.requires_grad_(True)
        inputs = [probe, *params.values()]
        rows = [
            torch.autograd.grad(module(probe, draw_noise), inputs, allow_unused=True)
            for draw_noise in noise
        ]
        rows = [
            [torch.zeros_like(x) if g is None else g for g, x in zip(r, inputs, strict=True)]
            for r in rows
        ]
        logit_grads = torch.stack([r[0] for r in rows])
        param_grads = {n: torch.stack([r[i + 1] for r in rows]) for i, n in enumerate(params)}
    else:
        raise ValueError(f"method must be 'vmap' or 'loop', got {method!r}")
    return ({GATE_LOGITS: logit_grads} if include_logits else {}) | param_grads


def iter_draw_chunks(
    graph: StochasticGraph,
    estimators: Mapping[str, GradientEstimator],
    batch: tuple[torch.Tensor, ...],
    plan: DrawPlan | None = None,
    *,
    states: Mapping[str, Any] | None = None,
    progress: bool = False,
    start: int | None = None,
    **settings: Any,
) -> Iterator[tuple[range, dict[str, dict[str, torch.Tensor]], dict[str, float]]]:
    """Yields `(draw_range, {estimator: {tensor: K x ...}}, {estimator: seconds})` by chunk.

    The generic path: `gradient_draws` of every tracked tensor. The seconds are the wall time
    of making that estimator's draws for the chunk (noise and gradients; on a GPU, without a
    synchronisation, so only meaningful summed over a run).

    Every estimator sees the same noise for the same draw index (common random numbers; made
    once per chunk for estimators of one noise shape), and the noise of draw `k` does not
    depend on the chunk size.

    Args:
        graph, estimators, batch: the run.
        plan: its draws (default: a `DrawPlan` of `settings`: `num_draws`, `seed`, ...).
        states: frozen estimator states by name.
        progress: show a progress bar counting every estimator's draws.
        start: the first draw to make (default: the plan's first).
    """
    plan = plan or DrawPlan(**settings)
    states = dict(states or {})
    with torch.no_grad():
        prepared = graph.prepare(batch)
    chunks = plan.chunks(start)
    with draw_bar(plan, estimators, sum(map(len, chunks)), progress) as bar:
        for indices in chunks:
            chunk, elapsed, noises = {}, {}, {}
            for name, estimator in estimators.items():
                started = time.perf_counter()
                noise = shared_noise(noises, estimator, graph, prepared, plan.seed, indices)
                chunk[name] = gradient_draws(
                    graph, estimator, batch, noise, state=states.get(name),
                    parameters=plan.parameters, include_logits=plan.include_logits,
                    method=plan.method if estimator.supports_vmap else "loop",
                )
                elapsed[name] = time.perf_counter() - started
                bar.update(len(indices))
            yield indices, chunk, elapsed


def shared_noise(
    cache: dict[tuple[int, ...], torch.Tensor],
    estimator: Any,
    graph: StochasticGraph,
    prepared: PreparedBatch,
    seed: int,
    indices: range,
) -> torch.Tensor:
    """The uniforms of draws `indices` in `estimator`'s noise shape, `len(indices) x shape`,
    drawn once per shape into `cache`, so estimators of one shape share them (common random
    numbers) within a chunk."""
    shape = estimator.noise_shape(graph, prepared)
    if shape not in cache:
        cache[shape] = uniform_noise(seed, indices, shape, dtype=prepared.logits.dtype,
                                     device=prepared.logits.device)
    return cache[shape]


def draw_bar(plan: DrawPlan, estimators: Mapping[str, Any], draws: int, progress: bool) -> tqdm:
    """A progress bar over every estimator's draws (the reference's included), saying so."""
    names = [n for n in estimators if n != plan.paired_with]
    what = f"draws of {len(names)} estimator{'s' if len(names) != 1 else ''}"
    if plan.paired_with in estimators:
        what += f" + reference {plan.paired_with}"
    return tqdm(total=draws * len(estimators), unit="draw", disable=not progress, desc=what)


class NonFiniteDrawError(FloatingPointError, ValueError):
    """A draw with a NaN or infinite entry; the message names estimator, draw and tensor."""


SKIP_HINT = "nan_policy='skip' (command line: --nan-policy skip)"


def finite_draw_rows(
    name: str, draws: Mapping[str, torch.Tensor], indices: range, nan_policy: str
) -> torch.Tensor | None:
    """A `K` boolean mask of finite draws (None if all are); raises under `"raise"`.

    Raises:
        NonFiniteDrawError: under `"raise"`, naming the estimator, the draw and the tensor.
    """
    finite = None
    for tensor_name, values in draws.items():
        if bool(torch.isfinite(values.sum())):  # one reduction; the rows only if it fails
            continue
        rows = torch.isfinite(values.reshape(values.shape[0], -1)).all(1)
        if bool(rows.all()):
            continue
        if nan_policy == "raise":
            row = int((~rows).nonzero()[0])
            flat = values[row].reshape(-1)
            position = int((~torch.isfinite(flat)).nonzero()[0])
            raise NonFiniteDrawError(
                f"estimator {name!r}, draw {indices[row]}: gradient of {tensor_name!r} is "
                f"{flat[position].item()} at flat index {position}; rerun with {SKIP_HINT} "
                "to count and skip such draws"
            )
        finite = rows if finite is None else finite & rows
    return finite


def graph_device(graph: StochasticGraph) -> torch.device:
    """The device of the graph's first parameter (CPU for a graph without parameters)."""
    return next(graph.parameters(), torch.empty(0)).device
