"""Scale-out with torch.distributed: each rank draws a contiguous share, ranks merge exactly.

Under `torchrun --nproc_per_node=N` (or any initialised process group, gloo or NCCL, one or
several machines), `run_draws_distributed` gives rank `r` the draws
`[r * n / N, (r + 1) * n / N)` (rounded to whole groups when batch-means groups are kept),
runs `run_draws` on them, gathers every rank's accumulator state and merges them in rank
order. Noise is a pure function of (seed, draw index), so the merged statistics are those of
a single-process run up to floating-point rounding of the merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.montecarlo.accumulators import MomentAccumulator
from estimator_lab.montecarlo.engine import graph_device
from estimator_lab.montecarlo.fastpath import restore_accumulator
from estimator_lab.montecarlo.runner import run_draws

if TYPE_CHECKING:  # estimators import the engine: only a type here
    from estimator_lab.estimators.base import GradientEstimator


def rank_share(num_draws: int, world_size: int, rank: int, *, align: int = 1) -> range:
    """The draws of `rank` among `world_size`: contiguous, balanced, boundaries on multiples
    of `align` (except the last).

    Example:
        >>> [rank_share(10, 3, r) for r in range(3)]
        [range(0, 3), range(3, 7), range(7, 10)]
        >>> [rank_share(1000, 2, r, align=300) for r in range(2)]
        [range(0, 600), range(600, 1000)]
    """
    if world_size < 1 or not 0 <= rank < world_size or align < 1:
        raise ValueError(f"bad share: world_size={world_size}, rank={rank}, align={align}")
    def boundary(r: int) -> int:
        if r == world_size:
            return num_draws
        return min(num_draws, round(num_draws * r / world_size / align) * align)
    return range(boundary(rank), boundary(rank + 1))


def run_draws_distributed(
    graph: StochasticGraph,
    estimators: Mapping[str, GradientEstimator],
    batch,
    *,
    num_draws: int,
    seed: int,
    **options: Any,
) -> dict[str, MomentAccumulator]:
    """`run_draws` split across the ranks of the default process group, merged on every rank.

    Args:
        graph, estimators, batch, num_draws, seed: as for `run_draws` (the whole run).
        **options: other `run_draws` options (chunk size, groups, checkpoint: give each rank
            its own checkpoint file, e.g. with the rank in the name).

    Returns:
        the merged accumulators (identical on every rank).
    """
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: run under torchrun, or call "
                           "torch.distributed.init_process_group first")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    share = rank_share(num_draws, world_size, rank, align=options.get("group_size") or 1)
    local = (
        run_draws(graph, estimators, batch, num_draws=len(share), seed=seed,
                  first_draw=share.start, **options)
        if len(share) else {}
    )
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, {n: acc.state_dict() for n, acc in local.items()})
    device = graph_device(graph)
    merged: dict[str, Any] = {}
    for states in gathered:  # rank order: the same merge on every rank
        for name, state in states.items():
            part = restore_accumulator(state, device)
            if name in merged:
                merged[name].merge(part)
            else:
                merged[name] = part
    return merged
