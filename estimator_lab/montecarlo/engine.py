"""The Monte Carlo engine: many gradient draws per estimator, folded into streaming moments.

Per-draw gradients come from `torch.func.vmap` of `torch.func.grad` of the estimator's
surrogate over a chunk of noise: the gate-independent layers run once per chunk and the backward
pass is a batched matrix product (`gradient_draws`). Draws come in chunks of `chunk_size` and
are folded into a `MomentAccumulator`, so memory is bounded by one chunk whatever the number of
draws.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.montecarlo.accumulators import MomentAccumulator
from estimator_lab.montecarlo.checkpoint import load_checkpoint, save_checkpoint, tensor_digest
from estimator_lab.montecarlo.noise import uniform_noise

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
    *,
    num_draws: int,
    seed: int,
    chunk_size: int = 32,
    states: Mapping[str, Any] | None = None,
    parameters: Sequence[str] | None = None,
    include_logits: bool = True,
    method: str = "vmap",
    progress: bool = False,
    first_draw: int = 0,
) -> Iterator[tuple[range, dict[str, dict[str, torch.Tensor]], dict[str, float]]]:
    """Yields `(draw_range, {estimator: {tensor: K x ...}}, {estimator: seconds})` by chunk.

    The seconds are the wall time of making that estimator's draws for the chunk (noise and
    gradients; on a GPU, without a synchronisation, so only meaningful summed over a run).

    Every estimator sees the same noise for the same draw index (common random numbers), and
    the noise of draw `k` does not depend on `chunk_size`. The draws are
    `first_draw .. first_draw + num_draws - 1`.
    """
    if num_draws < 1 or chunk_size < 1 or first_draw < 0:
        raise ValueError(f"num_draws and chunk_size must be >= 1 and first_draw >= 0, got "
                         f"{num_draws}, {chunk_size}, {first_draw}")
    states = dict(states or {})
    with torch.no_grad():
        prepared = graph.prepare(batch)
    logits = prepared.logits
    bar = tqdm(
        total=num_draws * len(estimators), unit="draw", disable=not progress, desc="draws"
    )
    with bar:
        stop = first_draw + num_draws
        for start in range(first_draw, stop, chunk_size):
            indices = range(start, min(start + chunk_size, stop))
            chunk, elapsed = {}, {}
            for name, estimator in estimators.items():
                started = time.perf_counter()
                noise = uniform_noise(
                    seed, indices, estimator.noise_shape(graph, prepared),
                    dtype=logits.dtype, device=logits.device,
                )
                chunk[name] = gradient_draws(
                    graph, estimator, batch, noise, state=states.get(name),
                    parameters=parameters, include_logits=include_logits,
                    method=method if estimator.supports_vmap else "loop",
                )
                elapsed[name] = time.perf_counter() - started
                bar.update(len(indices))
            yield indices, chunk, elapsed


class NonFiniteDrawError(FloatingPointError):
    """A draw with a NaN or infinite entry; the message names estimator, draw and tensor."""


def finite_draw_rows(
    name: str, draws: dict[str, torch.Tensor], indices: range, nan_policy: str
) -> torch.Tensor | None:
    """A `K` boolean mask of finite draws (None if all are); raises under `"raise"`."""
    finite = None
    for tensor_name, values in draws.items():
        rows = torch.isfinite(values.reshape(values.shape[0], -1)).all(1)
        if bool(rows.all()):
            continue
        if nan_policy == "raise":
            row = int((~rows).nonzero()[0])
            flat = values[row].reshape(-1)
            position = int((~torch.isfinite(flat)).nonzero()[0])
            raise NonFiniteDrawError(
                f"estimator {name!r}, draw {indices[row]}: gradient of {tensor_name!r} is "
                f"{flat[position].item()} at flat index {position}; pass nan_policy='skip' to "
                "count and skip such draws"
            )
        finite = rows if finite is None else finite & rows
    return finite


def run_draws(
    graph: StochasticGraph,
    estimators: Mapping[str, GradientEstimator],
    batch: tuple[torch.Tensor, ...],
    *,
    num_draws: int,
    seed: int,
    chunk_size: int = 32,
    states: Mapping[str, Any] | None = None,
    parameters: Sequence[str] | None = None,
    include_logits: bool = True,
    method: str = "vmap",
    progress: bool = False,
    higher_moments: bool = False,
    group_size: int | None = None,
    references: Mapping[str, torch.Tensor] | None = None,
    first_draw: int = 0,
    nan_policy: str = "raise",
    checkpoint: str | Path | None = None,
    checkpoint_every_s: float = 60.0,
    paired_with: str | None = None,
) -> dict[str, MomentAccumulator]:
    """Streaming moments of `num_draws` gradient draws per estimator.

    Args:
        graph: the model, on the device where the draws run.
        estimators: estimators by the name used in the results.
        batch: the fixed minibatch, on the graph's device.
        num_draws: draws per estimator.
        seed: the noise seed; draw `k` of every estimator uses `uniform_noise(seed, [k], ...)`.
        chunk_size: draws held in memory at once.
        states: frozen estimator states by name (default: `estimator.init(graph)`).
        parameters: names of the parameters to track (default: all).
        include_logits: also track the gradient with respect to the gate logits.
        method: how per-draw gradients are computed, `"vmap"` or `"loop"` (`gradient_draws`).
        progress: show a progress bar with draws per second.
        higher_moments: also accumulate `M3` and `M4` (variance intervals).
        group_size: also keep batch-means summaries of groups of draws (`GroupSummaries`).
        references: name -> reference gradient for the groups' squared bias.
        first_draw: index of the first draw (a worker's share of a larger run).
        nan_policy: `"raise"` stops at the first draw with a NaN or infinite entry, naming the
            estimator, the draw and the tensor (`NonFiniteDrawError`); `"skip"` leaves such
            draws out and lists their indices in the accumulator's `skipped`.
        checkpoint: a file for periodic checkpoints; if it holds a checkpoint of this same run
            (same seed, estimators, tracked tensors, draws, parameters and batch), the run
            resumes from it and ends with the statistics of an uninterrupted run.
        checkpoint_every_s: seconds between checkpoints (one is also written at the end).
        paired_with: the name of one of `estimators` (a reference such as
            `local-expectation`); every other estimator `e` then also gets an accumulator
            `"e - paired_with"` of the paired differences of draws made from the same noise,
            whose mean tests `E[g_e] = E[g_ref]` with the variance of the difference.

    Returns:
        one `MomentAccumulator` per estimator, keyed like `estimators` (and the paired
        differences), tracking `"gate_logits"` and each parameter by name, with `elapsed_s`
        the seconds spent making its draws.
    """
    if nan_policy not in ("raise", "skip"):
        raise ValueError(f"nan_policy must be 'raise' or 'skip', got {nan_policy!r}")
    if num_draws < 1 or chunk_size < 1:
        raise ValueError(f"num_draws and chunk_size must be >= 1, got {num_draws}, {chunk_size}")
    states = {name: est.init(graph) for name, est in estimators.items()} | dict(states or {})
    if paired_with is not None and paired_with not in estimators:
        raise KeyError(f"paired_with={paired_with!r} is not one of {list(estimators)}")
    pairs = {f"{name} - {paired_with}": name for name in estimators
             if paired_with is not None and name != paired_with}
    accumulators = {
        name: MomentAccumulator(higher_moments=higher_moments, group_size=group_size,
                                references=None if name in pairs else references,
                                zero_reference=name in pairs)
        for name in [*estimators, *pairs]
    }
    next_draw, stop = first_draw, first_draw + num_draws
    if checkpoint is not None:
        fingerprint = _fingerprint(graph, estimators, batch, seed, first_draw, num_draws,
                                   parameters, include_logits, higher_moments, group_size)
        fingerprint["paired_with"] = paired_with
        resumed = load_checkpoint(checkpoint, fingerprint, device=graph_device(graph))
        if resumed is not None:
            next_draw, accumulators = resumed
        last_save = time.monotonic()
    if next_draw < stop:
        for indices, chunk, elapsed in iter_draw_chunks(
            graph, estimators, batch, num_draws=stop - next_draw, seed=seed,
            chunk_size=chunk_size, states=states, parameters=parameters,
            include_logits=include_logits, method=method, progress=progress,
            first_draw=next_draw,
        ):
            for pair, name in pairs.items():  # before the estimators' chunks are overwritten
                chunk[pair] = {k: v - chunk[paired_with][k] for k, v in chunk[name].items()}
                elapsed[pair] = 0.0
            for name, draws in chunk.items():
                accumulator = accumulators[name]
                finite = finite_draw_rows(name, draws, indices, nan_policy)
                if finite is not None:
                    accumulator.skipped += [i for i, ok in zip(indices, finite.tolist(),
                                                               strict=True) if not ok]
                    draws = {k: v[finite] for k, v in draws.items()}
                    if not bool(finite.any()):
                        continue
                    # Groups need consecutive indices: a group with a skipped draw never
                    # completes and is left out of the batch means.
                accumulator.update(draws, overwrite=True, first_index=indices.start)
                accumulator.elapsed_s += elapsed[name]
            if checkpoint is not None and time.monotonic() - last_save >= checkpoint_every_s:
                save_checkpoint(checkpoint, fingerprint, indices.stop, accumulators)
                last_save = time.monotonic()
    if checkpoint is not None:
        save_checkpoint(checkpoint, fingerprint, stop, accumulators)
    return accumulators


def graph_device(graph: StochasticGraph) -> torch.device:
    """The device of the graph's first parameter (CPU for a graph without parameters)."""
    return next(graph.parameters(), torch.empty(0)).device


def _fingerprint(graph, estimators, batch, seed, first_draw, num_draws, parameters,
                 include_logits, higher_moments, group_size) -> dict:
    return {
        "seed": seed, "first_draw": first_draw, "num_draws": num_draws,
        "estimators": {name: repr(est) for name, est in estimators.items()},
        "parameters": None if parameters is None else list(parameters),
        "include_logits": include_logits, "higher_moments": higher_moments,
        "group_size": group_size,
        "graph": tensor_digest(p for _, p in sorted(graph.state_dict().items())),
        "batch": tensor_digest(batch),
    }
