"""Streaming, mergeable moments of gradient draws, accumulated in float64:
`MomentAccumulator` keeps one `Moments` (`montecarlo.moments`) per tracked tensor, and
optionally batch-means summaries of groups of draws (`montecarlo.groups`).
"""

from __future__ import annotations

import torch

from estimator_lab.montecarlo.groups import GroupSummaries
from estimator_lab.montecarlo.moments import Moments, merge_moments, moments_of

__all__ = ["MomentAccumulator", "Moments", "merge_moments", "moments_of"]


class MomentAccumulator:
    """Streaming moments for several named tensors of draws.

    Example:
        >>> acc = MomentAccumulator()
        >>> acc.update({"w": torch.tensor([[1.0], [3.0]])})
        >>> acc.update({"w": torch.tensor([[5.0]])})
        >>> acc["w"].mean.item(), acc["w"].variance.item()
        (3.0, 4.0)
    """

    path = "generic"
    """The engine path whose draws it holds (`run_draws`; `FastAccumulator` says "fast")."""

    def __init__(
        self,
        *,
        higher_moments: bool = False,
        group_size: int | None = None,
        references: dict[str, torch.Tensor] | None = None,
        zero_reference: bool = False,
    ) -> None:
        """Args:
            higher_moments: also track `M3` and `M4` (for variance confidence intervals).
            group_size: also keep batch-means summaries of groups of this many consecutive
                draws (`GroupSummaries`, for intervals of total variance and squared bias);
                `update` then needs each chunk's `first_index`.
            references: name -> reference vector for the groups' squared bias.
            zero_reference: the groups' squared bias is against zero (paired differences).
        """
        self.higher_moments = higher_moments
        self.groups = (
            None if group_size is None
            else GroupSummaries(group_size, references=dict(references or {}),
                                zero_reference=zero_reference)
        )
        self.elapsed_s = 0.0
        self.skipped: list[int] = []
        self._moments: dict[str, Moments] = {}

    def state_dict(self) -> dict:
        """Everything needed to resume or merge, as plain dicts and CPU tensors."""
        return {
            "higher_moments": self.higher_moments,
            "elapsed_s": self.elapsed_s,
            "skipped": list(self.skipped),
            "moments": {name: m.to_dict() for name, m in self._moments.items()},
            "groups": None if self.groups is None else self.groups.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: dict, device=None) -> MomentAccumulator:
        """An accumulator restored from `state_dict`, tensors moved to `device`."""
        accumulator = cls(higher_moments=state["higher_moments"])
        accumulator.elapsed_s = state["elapsed_s"]
        accumulator.skipped = list(state["skipped"])
        accumulator._moments = {
            name: Moments.from_dict(m, device) for name, m in state["moments"].items()
        }
        if state["groups"] is not None:
            accumulator.groups = GroupSummaries.from_state_dict(state["groups"], device)
        return accumulator

    def update(
        self,
        draws: dict[str, torch.Tensor],
        *,
        overwrite: bool = False,
        first_index: int | None = None,
    ) -> None:
        """Adds a chunk of draws: each value a `K x d` tensor (or `K x ...`, flattened).

        Args:
            draws: chunks of draws by name.
            overwrite: allow the chunks to be used as scratch space (saves a copy).
            first_index: the global index of the chunk's first draw (needed with groups).
        """
        if self.groups is not None:
            if first_index is None:
                raise ValueError("an accumulator with groups needs first_index in update")
            self.groups.update(draws, first_index)
        for name, chunk in draws.items():
            if chunk.dim() == 0 or chunk.shape[0] == 0:
                shape = list(chunk.shape)
                raise ValueError(f"{name}: need a non-empty K x ... chunk, got shape {shape}")
            flat = chunk.reshape(chunk.shape[0], -1)
            known = self._moments.get(name)
            if known is not None and flat.shape[1] != known.mean.numel():
                raise ValueError(
                    f"{name}: chunk has {flat.shape[1]} coordinates per draw, "
                    f"the accumulator tracks {known.mean.numel()}"
                )
            chunk_moments = moments_of(
                flat,
                shift=None if known is None else known.mean,
                overwrite=overwrite,
                higher=self.higher_moments,
            )
            self._moments[name] = (
                chunk_moments if known is None else merge_moments(known, chunk_moments)
            )

    def merge(self, other: MomentAccumulator) -> None:
        """Adds the draws another accumulator has seen (disjoint from this one's)."""
        if self.groups is not None and other.groups is not None:
            self.groups.merge(other.groups)
        self.elapsed_s += other.elapsed_s
        self.skipped = sorted(self.skipped + other.skipped)
        for name, moments in other._moments.items():
            known = self._moments.get(name)
            self._moments[name] = moments if known is None else merge_moments(known, moments)

    def __getitem__(self, name: str) -> Moments:
        return self._moments[name]

    def names(self) -> list[str]:
        """Names of the tracked tensors, in the order they were first seen."""
        return list(self._moments)

    def compute(self) -> dict[str, Moments]:
        """The moments of every tracked tensor."""
        return dict(self._moments)
