"""Batch means: scalar summaries of consecutive groups of draws, for honest error bars.

Per-coordinate moments cannot give the error of a quantity that couples coordinates, such as
the total variance `tr(Sigma)` or the squared bias `||E g - r||^2`. Groups of `group_size`
consecutive draw indices are independent and identically distributed, so scalar summaries
computed inside each group are too, and their spread across groups gives standard errors and
bootstrap intervals. Groups are fixed by draw index (group `g` holds draws
`g * group_size .. (g + 1) * group_size - 1`), so the result does not depend on the chunk size
or on how draws were split between workers; incomplete groups are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from estimator_lab.montecarlo.accumulators import Moments, merge_moments, moments_of


@dataclass
class GroupSummaries:
    """Per-group scalar summaries of several named tensors of draws.

    Attributes:
        group_size: draws per group, `m`.
        references: optional name -> `d` reference vector `r` (the exact or reference gradient)
            for the squared bias.
        zero_reference: use `r = 0` for every name (for draws of paired differences).
        total_variance: name -> {group: `sum_i M2_i / (m - 1)`}, unbiased for `tr(Sigma)`.
        squared_bias: name -> {group: `||mean_g - r||^2 - W_g / m`}, unbiased for `||E g - r||^2`.
    """

    group_size: int
    references: dict[str, torch.Tensor] = field(default_factory=dict)
    zero_reference: bool = False
    total_variance: dict[str, dict[int, float]] = field(default_factory=dict)
    squared_bias: dict[str, dict[int, float]] = field(default_factory=dict)
    _open: dict[tuple[str, int], Moments] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {self.group_size}")
        self.references = {n: r.reshape(-1).double() for n, r in self.references.items()}

    def update(self, draws: dict[str, torch.Tensor], first_index: int) -> None:
        """Adds a chunk of draws whose first row is draw `first_index`.

        Args:
            draws: name -> `K x ...` tensor of draws `first_index .. first_index + K - 1`.
            first_index: the global index of the chunk's first draw.
        """
        for name, chunk in draws.items():
            flat = chunk.reshape(chunk.shape[0], -1)
            start = 0
            while start < flat.shape[0]:
                group = (first_index + start) // self.group_size
                stop = min(flat.shape[0], (group + 1) * self.group_size - first_index)
                self._add(name, group, moments_of(flat[start:stop]))
                start = stop

    def _add(self, name: str, group: int, moments: Moments) -> None:
        key = (name, group)
        merged = merge_moments(self._open[key], moments) if key in self._open else moments
        if merged.count < self.group_size:
            self._open[key] = merged
            return
        self._open.pop(key, None)
        m = self.group_size
        within = float(merged.m2.sum()) / (m - 1)
        self.total_variance.setdefault(name, {})[group] = within
        if name in self.references or self.zero_reference:
            gap = merged.mean - (self.references[name].to(merged.mean.device)
                                 if name in self.references else 0.0)
            self.squared_bias.setdefault(name, {})[group] = float(gap.square().sum()) - within / m

    def merge(self, other: GroupSummaries) -> None:
        """Adds another summary's draws (disjoint draw indices, same group size)."""
        if other.group_size != self.group_size:
            raise ValueError(f"group sizes differ: {self.group_size} and {other.group_size}")
        for store, theirs in ((self.total_variance, other.total_variance),
                              (self.squared_bias, other.squared_bias)):
            for name, groups in theirs.items():
                store.setdefault(name, {}).update(groups)
        for (name, group), moments in other._open.items():
            self._add(name, group, moments)

    def state_dict(self) -> dict:
        """Plain dicts, lists and CPU tensors (loadable with `torch.load(weights_only=True)`)."""
        return {
            "group_size": self.group_size,
            "references": {n: r.cpu() for n, r in self.references.items()},
            "zero_reference": self.zero_reference,
            "total_variance": {n: dict(g) for n, g in self.total_variance.items()},
            "squared_bias": {n: dict(g) for n, g in self.squared_bias.items()},
            "open": [[name, group, m.to_dict()] for (name, group), m in self._open.items()],
        }

    @classmethod
    def from_state_dict(cls, state: dict, device=None) -> GroupSummaries:
        """Inverse of `state_dict`."""
        summaries = cls(state["group_size"], references=state["references"],
                        zero_reference=state["zero_reference"])
        summaries.total_variance = {n: dict(g) for n, g in state["total_variance"].items()}
        summaries.squared_bias = {n: dict(g) for n, g in state["squared_bias"].items()}
        summaries._open = {
            (name, group): Moments.from_dict(m, device) for name, group, m in state["open"]
        }
        return summaries

    def to_frame(self) -> pd.DataFrame:
        """Tidy rows: name, group, total_variance, squared_bias (NaN without a reference)."""
        rows = [
            {"name": name, "group": group, "total_variance": value,
             "squared_bias": self.squared_bias.get(name, {}).get(group, np.nan)}
            for name, groups in self.total_variance.items() for group, value in groups.items()
        ]
        columns = ["name", "group", "total_variance", "squared_bias"]
        return pd.DataFrame(rows, columns=columns).sort_values(["name", "group"], ignore_index=True)
