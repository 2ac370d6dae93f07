"""Batch means: scalar summaries of consecutive groups of draws, for honest error bars.

Per-coordinate moments cannot give the error of a quantity that couples coordinates, such as
the total variance `tr(Sigma)` or the squared bias `||E g - r||^2`. Groups of `group_size`
consecutive draw indices are independent and identically distributed, so scalar summaries
computed inside each group are too, and their spread across groups gives standard errors and
bootstrap intervals. Groups are fixed by draw index (group `g` holds draws
`g * group_size .. (g + 1) * group_size - 1`), so the result does not depend on the chunk size
or on how draws were split between workers; incomplete groups are left out.

The weights of a shared-input layer (`montecarlo.fastpath`) are never materialised per draw:
their group parts are kept as the mean output gradient `M` (`B x out`) and the total `M2`,
both exact for the weights `G_k = Delta_k^T H`, since `||(Delta - M)^T H||^2` is
`sum_o (Delta - M)[:, o]^T (H H^T) (Delta - M)[:, o]` (`add_weight_part`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from estimator_lab.montecarlo.moments import Moments, merge_moments, moments_of


@dataclass(frozen=True)
class WeightPart:
    """Draws of a shared-input layer's weight `G_k = Delta_k^T H` within one group.

    Attributes:
        count: number of draws `n`.
        mean: the `B x out` float64 mean output gradient `M` (the mean weight is `M^T H`).
        m2: `sum_k ||G_k - M^T H||^2`, the total of the per-coordinate `M2`.
    """

    count: int
    mean: torch.Tensor
    m2: float


def merge_weight_parts(a: WeightPart, b: WeightPart, input_gram: torch.Tensor) -> WeightPart:
    """The part of the union of two disjoint sets of draws (Chan et al.'s update).

    With `d = M_b - M_a`: `M2 = M2_a + M2_b + ||d^T H||^2 n_a n_b / n`, where
    `||d^T H||^2 = sum_o d[:, o]^T (H H^T) d[:, o]`.

    Args:
        a, b: the parts.
        input_gram: `H H^T` (`B x B`, float64) of the layer's input `H`.
    """
    n = a.count + b.count
    d = b.mean - a.mean
    spread = float((input_gram @ d).mul_(d).sum())
    return WeightPart(n, a.mean + d * (b.count / n), a.m2 + b.m2 + spread * a.count * b.count / n)


@dataclass
class GroupSummaries:
    """Per-group scalar summaries of several named tensors of draws.

    Attributes:
        group_size: draws per group, `m`.
        references: optional name -> `d` reference vector `r` (the exact or reference gradient)
            for the squared bias.
        zero_reference: use `r = 0` for every name (for draws of paired differences).
        weight_inputs: weight name -> the `B x in` float64 input `H` of its shared-input layer
            (names whose groups come in as `add_weight_part`).
        total_variance: name -> {group: `sum_i M2_i / (m - 1)`}, unbiased for `tr(Sigma)`.
        squared_bias: name -> {group: `||mean_g - r||^2 - W_g / m`}, unbiased for `||E g - r||^2`.
    """

    group_size: int
    references: dict[str, torch.Tensor] = field(default_factory=dict)
    zero_reference: bool = False
    total_variance: dict[str, dict[int, float]] = field(default_factory=dict)
    squared_bias: dict[str, dict[int, float]] = field(default_factory=dict)
    weight_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    _open: dict[tuple[str, int], Moments] = field(default_factory=dict)
    _open_parts: dict[tuple[str, int], WeightPart] = field(default_factory=dict)
    _cache: dict[str, tuple] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {self.group_size}")
        self.references = {n: r.reshape(-1).double() for n, r in self.references.items()}
        self.weight_inputs = {n: h.double() for n, h in self.weight_inputs.items()}

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

    def add_weight_part(self, name: str, group: int, part: WeightPart) -> None:
        """Adds draws of a shared-input layer's weight that all lie in `group`.

        Args:
            name: the weight's name (a key of `weight_inputs`).
            group: the group of every draw in `part`.
            part: their count, mean output gradient and total `M2` of the weights.
        """
        key = (name, group)
        known = self._open_parts.pop(key, None)
        merged = part if known is None else merge_weight_parts(known, part,
                                                               self._products(name)[0])
        if merged.count < self.group_size:
            self._open_parts[key] = merged
            return
        m = self.group_size
        within = merged.m2 / (m - 1)
        self.total_variance.setdefault(name, {})[group] = within
        if name in self.references or self.zero_reference:
            self.squared_bias.setdefault(name, {})[group] = (
                self._weight_gap(name, merged.mean) - within / m)

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

    def _products(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """`(H H^T, H r^T, ||r||^2)` of a weight (`r` its reference; None, 0 without one)."""
        if name not in self._cache:
            h = self.weight_inputs[name]
            r = self.references.get(name)
            self._cache[name] = (
                h @ h.T, None if r is None else h @ r.to(h.device).view(-1, h.shape[1]).T,
                0.0 if r is None else float(r.square().sum()))
        return self._cache[name]

    def _weight_gap(self, name: str, mean: torch.Tensor) -> float:
        """`||M^T H - r||^2` for a weight's group mean `M^T H` (`r = 0` without a reference),
        as `sum_o M_o^T (H H^T) M_o - 2 <M, H r^T> + ||r||^2` (`B x out` work, not `out x in`).
        """
        input_gram, cross, norm = self._products(name)
        quadratic = float((input_gram.to(mean.device) @ mean).mul_(mean).sum())
        if cross is None:
            return quadratic
        return quadratic - 2 * float((mean * cross.to(mean.device)).sum()) + norm

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
        self.weight_inputs = other.weight_inputs | self.weight_inputs
        for (name, group), part in other._open_parts.items():
            self.add_weight_part(name, group, part)

    def state_dict(self) -> dict:
        """Plain dicts, lists and CPU tensors (loadable with `torch.load(weights_only=True)`)."""
        return {
            "group_size": self.group_size,
            "references": {n: r.cpu() for n, r in self.references.items()},
            "zero_reference": self.zero_reference,
            "total_variance": {n: dict(g) for n, g in self.total_variance.items()},
            "squared_bias": {n: dict(g) for n, g in self.squared_bias.items()},
            "open": [[name, group, m.to_dict()] for (name, group), m in self._open.items()],
            "weight_inputs": {n: h.cpu() for n, h in self.weight_inputs.items()},
            "open_parts": [[name, group, p.count, p.mean.cpu(), p.m2]
                           for (name, group), p in self._open_parts.items()],
        }

    @classmethod
    def from_state_dict(cls, state: dict, device=None) -> GroupSummaries:
        """Inverse of `state_dict`."""
        summaries = cls(state["group_size"], references=state["references"],
                        zero_reference=state["zero_reference"],
                        weight_inputs=state.get("weight_inputs", {}))
        summaries.total_variance = {n: dict(g) for n, g in state["total_variance"].items()}
        summaries.squared_bias = {n: dict(g) for n, g in state["squared_bias"].items()}
        summaries._open = {
            (name, group): Moments.from_dict(m, device) for name, group, m in state["open"]
        }
        summaries._open_parts = {
            (name, group): WeightPart(count, mean.to(device), m2)
            for name, group, count, mean, m2 in state.get("open_parts", [])
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
