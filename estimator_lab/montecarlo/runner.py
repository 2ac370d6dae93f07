"""`run_draws`: the draws of a plan on the fast path (`montecarlo.fastpath`) where it applies,
else on the generic path (`montecarlo.engine`), folded into accumulators, with pairing,
checkpoints and the NaN policy; the one entry point above both paths.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import estimator_lab.montecarlo.fastpath as fastpath
from estimator_lab.estimators.prepare import initial_state
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.montecarlo.accumulators import MomentAccumulator
from estimator_lab.montecarlo.checkpoint import load_checkpoint, save_checkpoint, tensor_digest
from estimator_lab.montecarlo.engine import (
    SKIP_HINT,
    draw_bar,
    finite_draw_rows,
    graph_device,
    iter_draw_chunks,
)
from estimator_lab.montecarlo.plan import DrawPlan

if TYPE_CHECKING:  # estimators import the engine: only a type here
    from estimator_lab.estimators.base import GradientEstimator


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
        states: frozen estimator states by name (default: `initial_state`, `estimator.init` on the
            prepared batch with `seed`).
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
    given = dict(states or {})
    states = {name: given[name] if name in given
              else initial_state(est, graph, batch, seed=plan.seed)
              for name, est in estimators.items()} | given
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
        fingerprint = run_fingerprint(graph, estimators, batch, plan, "fast" if fast else "generic")
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


def run_fingerprint(graph, estimators, batch, plan: DrawPlan, path: str) -> dict:
    """What a checkpoint must match to resume a run: the plan, the path, the estimators'
    identities and digests of the graph's parameters and of the batch."""
    return {
        "seed": plan.seed, "first_draw": plan.first_draw, "num_draws": plan.num_draws,
        "estimators": {name: repr(est) for name, est in estimators.items()},
        "parameters": None if plan.parameters is None else list(plan.parameters),
        "include_logits": plan.include_logits, "higher_moments": plan.higher_moments,
        "group_size": plan.group_size, "paired_with": plan.paired_with, "path": path,
        "graph": tensor_digest(p for _, p in sorted(graph.state_dict().items())),
        "batch": tensor_digest(batch),
    }


def fast_moments(
    graph: StochasticGraph,
    estimators: Mapping[str, GradientEstimator],
    batch: tuple[torch.Tensor, ...],
    plan: DrawPlan | None = None,
    *,
    states: Mapping[str, Any] | None = None,
    **settings: Any,
) -> dict[str, fastpath.FastAccumulator]:
    """`run_plan` on the fast path, or an error saying why it does not apply.

    The statistics are those of the generic path on the same plan up to rounding; memory is
    one chunk of `K x B x out` output gradients plus `out x B x B` Gram sums per shared-input
    layer, never `K x out x in`.

    Args:
        graph: a graph that declares `shared_input_layers` (e.g. `ConditionalNetwork`).
        estimators: estimators by name; each surrogate must run under `torch.func.vmap`.
        batch: the fixed minibatch, on the graph's device.
        plan: the draws (default: a `DrawPlan` of `settings`, e.g. `num_draws`, `seed`,
            `chunk_size`, `first_draw`).
        states: frozen estimator states by name (default: `initial_state`, `estimator.init` on the
            prepared batch with `seed`).

    Returns:
        one `FastAccumulator` per estimator, keyed like `estimators`.

    Raises:
        ValueError: where the fast path does not apply (a graph without shared-input layers,
            an estimator without vmap or whose surrogate reads a shared-input layer's weights
            other than through its output), or for non-positive counts.
        NonFiniteDrawError: for a draw with a NaN or infinite gradient.

    Example:
        >>> from estimator_lab.estimators import get_estimator
        >>> from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork
        >>> config = ConditionalConfig(num_inputs=6, num_gater_hidden=3, num_gates=4)
        >>> net = ConditionalNetwork(config, torch.Generator().manual_seed(0))
        >>> batch = (torch.rand(2, 6), torch.tensor([0, 1]))
        >>> acc = fast_moments(net, {"st": get_estimator("st")}, batch, num_draws=8, seed=0)
        >>> acc["st"]["expert.weight"].mean.shape, acc["st"]["expert.weight"].count
        (torch.Size([24]), 8)
    """
    plan = replace(plan or DrawPlan(**settings), path="fast")
    return run_plan(graph, estimators, batch, plan, states=states)
