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
from estimator_lab.montecarlo.plan import DrawPlan

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
    logits = prepared.logits
    chunks = plan.chunks(start)
    with draw_bar(plan, estimators, sum(map(len, chunks)), progress) as bar:
        for indices in chunks:
            chunk, elapsed, noises = {}, {}, {}
            for name, estimator in estimators.items():
                started = time.perf_counter()
                shape = estimator.noise_shape(graph, prepared)
                if shape not in noises:
                    noises[shape] = uniform_noise(plan.seed, indices, shape, dtype=logits.dtype,
                                                  device=logits.device)
                chunk[name] = gradient_draws(
                    graph, estimator, batch, noises[shape], state=states.get(name),
                    parameters=plan.parameters, include_logits=plan.include_logits,
                    method=plan.method if estimator.supports_vmap else "loop",
                )
                elapsed[name] = time.perf_counter() - started
                bar.update(len(indices))
            yield indices, chunk, elapsed


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
    path: str = "auto",
) -> dict[str, MomentAccumulator]:
    """Streaming moments of `num_draws` gradient draws per estimator.

    `run_plan` of the `DrawPlan` of these settings: the fast path (Gram sums of the
    shared-input layers' output gradients, `montecarlo.fastpath`) wherever it applies, else
    the generic one; each accumulator's `path` says which ran.

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
        method: how the generic path computes per-draw gradients, `"vmap"` or `"loop"`
            (`gradient_draws`; `"loop"` never takes the fast path).
        progress: show a progress bar counting every estimator's draws.
        higher_moments: also accumulate `M3` and `M4` (variance intervals).
        group_size: also keep batch-means summaries of groups of draws (`GroupSummaries`).
        references: name -> reference gradient for the groups' squared bias.
        first_draw: index of the first draw (a worker's share of a larger run).
        nan_policy: `"raise"` stops at the first draw with a NaN or infinite entry, naming the
            estimator, the draw and the tensor (`NonFiniteDrawError`, a `ValueError`);
            `"skip"` leaves such draws out and lists their indices in the accumulator's
            `skipped` (a `ValueError` if every draw of an estimator is skipped).
        checkpoint: a file for periodic checkpoints; if it holds a checkpoint of this same run
            (same seed, estimators, tracked tensors, draws, parameters, batch and path), the
            run resumes from it and ends with the statistics of an uninterrupted run.
        checkpoint_every_s: seconds between checkpoints (one is also written at the end).
        paired_with: the name of one of `estimators` (a reference such as
            `local-expectation`); every other estimator `e` then also gets an accumulator
            `"e - paired_with"` of the paired differences of draws made from the same noise,
            whose mean tests `E[g_e] = E[g_ref]` with the variance of the difference.
        path: `"auto"`, `"fast"` (an error where it does not apply) or `"generic"`.

    Returns:
        one accumulator per estimator (a `MomentAccumulator`, or a `FastAccumulator` that
        reads like one), keyed like `estimators` (and the paired differences), tracking
        `"gate_logits"` and each parameter by name, with `elapsed_s` the seconds spent making
        its draws and folding them in.
    """
    plan = DrawPlan(
        num_draws=num_draws, seed=seed, first_draw=first_draw, chunk_size=chunk_size,
        parameters=None if parameters is None else tuple(parameters),
        include_logits=include_logits, group_size=group_size, paired_with=paired_with,
        higher_moments=higher_moments, nan_policy=nan_policy, method=method, path=path,
    )
    return run_plan(graph, estimators, batch, plan, states=states, references=references,
                    checkpoint=checkpoint, checkpoint_every_s=checkpoint_every_s,
                    progress=progress)


def run_plan(
    graph: StochasticGraph,
    estimators: Mapping[str, GradientEstimator],
    batch: tuple[torch.Tensor, ...],
    plan: DrawPlan,
    *,
    states: Mapping[str, Any] | None = None,
    references: Mapping[str, torch.Tensor] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every_s: float = 60.0,
    progress: bool = False,
) -> dict[str, MomentAccumulator]:
    """The engine behind `run_draws`: the draws of `plan`, on the fast path where it applies.

    Args:
        graph, estimators, batch: the run.
        plan: what to draw and keep.
        states, references, checkpoint, checkpoint_every_s, progress: as for `run_draws`.

    Returns:
        the accumulators of `run_draws`.

    Raises:
        ValueError: under `plan.path == "fast"` where the fast path does not apply, and under
            `nan_policy="skip"` when every draw of an estimator was non-finite.
        KeyError: for a `paired_with` that is not one of `estimators`.
    """
    from estimator_lab.montecarlo import fastpath  # builds on this module

    states = {name: est.init(graph) for name, est in estimators.items()} | dict(states or {})
    if plan.paired_with is not None and plan.paired_with not in estimators:
        raise KeyError(f"paired_with={plan.paired_with!r} is not one of {list(estimators)}")
    pairs = {f"{name} - {plan.paired_with}": name for name in estimators
             if plan.paired_with is not None and name != plan.paired_with}
    reason = ("path='generic' was asked for" if plan.path == "generic"
              else fastpath.fast_path_problem(graph, estimators, batch, plan, states))
    if reason is not None and plan.path == "fast":
        raise ValueError(f"the fast path does not apply: {reason}; use run_draws")
    fast = reason is None
    layout = fastpath.FastLayout.of(graph, batch, plan) if fast else None

    def accumulator(name: str):
        options = dict(higher_moments=plan.higher_moments, group_size=plan.group_size,
                       references=None if name in pairs else references,
                       zero_reference=name in pairs)
        if fast:
            return fastpath.FastAccumulator(list(layout.names), layout.inputs, **options)
        return MomentAccumulator(**options)

    accumulators = {name: accumulator(name) for name in [*estimators, *pairs]}
    next_draw, stop = plan.first_draw, plan.first_draw + plan.num_draws
    if checkpoint is not None:
        fingerprint = _fingerprint(graph, estimators, batch, plan, "fast" if fast else "generic")
        resumed = load_checkpoint(checkpoint, fingerprint, device=graph_device(graph),
                                  restore=fastpath.restore_accumulator)
        if resumed is not None:
            next_draw, accumulators = resumed
        last_save = time.monotonic()
    if next_draw < stop:
        draw = fastpath.iter_fast_chunks if fast else iter_draw_chunks
        chunks = draw(graph, estimators, batch, plan, states=states, start=next_draw)
        with draw_bar(plan, estimators, stop - next_draw, progress) as bar:
            for indices, chunk, elapsed in chunks:
                for pair, name in pairs.items():  # before the chunks are used as scratch
                    chunk[pair] = _difference(chunk[name], chunk[plan.paired_with])
                    elapsed[pair] = 0.0
                for name, draws in chunk.items():
                    started = time.perf_counter()
                    _fold(accumulators[name], name, draws, indices, plan.nan_policy)
                    accumulators[name].elapsed_s += elapsed[name] + time.perf_counter() - started
                bar.update(len(indices) * len(estimators))
                if checkpoint is not None and time.monotonic() - last_save >= checkpoint_every_s:
                    save_checkpoint(checkpoint, fingerprint, indices.stop, accumulators)
                    last_save = time.monotonic()
    if checkpoint is not None:
        save_checkpoint(checkpoint, fingerprint, stop, accumulators)
    for name, acc in accumulators.items():
        if len(acc.skipped) == plan.num_draws:
            raise ValueError(f"all {plan.num_draws} draws of {name!r} were non-finite (skipped "
                             f"under {SKIP_HINT}); nothing to measure")
    return accumulators


def _difference(draws, reference):
    """Paired differences of two estimators' chunk draws (either path's form)."""
    if isinstance(draws, tuple):  # the fast path's (dense, deltas): both linear in the draw
        return tuple({k: v - theirs[k] for k, v in ours.items()}
                     for ours, theirs in zip(draws, reference, strict=True))
    return {k: v - reference[k] for k, v in draws.items()}


def _fold(accumulator, name: str, draws, indices: range, nan_policy: str) -> None:
    """Adds a chunk of draws to an accumulator, leaving out non-finite draws under `"skip"`.

    Groups are fixed by draw index: the kept draws are added in runs of consecutive indices,
    so a group with a skipped draw never completes and is left out of the batch means.
    """
    dense, deltas = draws if isinstance(draws, tuple) else (draws, None)
    checked = dense if deltas is None else dense | {
        f"output of {layer}": delta for layer, delta in deltas.items()}
    finite = finite_draw_rows(name, checked, indices, nan_policy)
    runs = [(0, len(indices))]
    if finite is not None:
        kept = finite.tolist()
        accumulator.skipped += [i for i, ok in zip(indices, kept, strict=True) if not ok]
        runs = _consecutive_runs(kept)
    for begin, end in runs:
        rows = slice(begin, end)
        part = {k: v[rows] for k, v in dense.items()}
        if deltas is None:
            accumulator.update(part, overwrite=True, first_index=indices[begin])
        else:
            accumulator.update(part, {k: v[rows] for k, v in deltas.items()},
                               first_index=indices[begin])


def _consecutive_runs(kept: list[bool]) -> list[tuple[int, int]]:
    """`(begin, end)` of each run of True in `kept`."""
    runs, begin = [], None
    for i, ok in enumerate([*kept, False]):
        if ok and begin is None:
            begin = i
        elif not ok and begin is not None:
            runs.append((begin, i))
            begin = None
    return runs


def graph_device(graph: StochasticGraph) -> torch.device:
    """The device of the graph's first parameter (CPU for a graph without parameters)."""
    return next(graph.parameters(), torch.empty(0)).device


def _fingerprint(graph, estimators, batch, plan: DrawPlan, path: str) -> dict:
    return {
        "seed": plan.seed, "first_draw": plan.first_draw, "num_draws": plan.num_draws,
        "estimators": {name: repr(est) for name, est in estimators.items()},
        "parameters": None if plan.parameters is None else list(plan.parameters),
        "include_logits": plan.include_logits, "higher_moments": plan.higher_moments,
        "group_size": plan.group_size, "paired_with": plan.paired_with, "path": path,
        "graph": tensor_digest(p for _, p in sorted(graph.state_dict().items())),
        "batch": tensor_digest(batch),
    }
