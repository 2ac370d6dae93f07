"""Monte Carlo moments of gradient draws without materialising `draws x out x in` tensors.

For a linear layer `y = H W^T + b` whose input `H` (`B x in`) is the same in every draw (the
paper network's gater layers and expert: `StochasticGraph.shared_input_layers`), draw `k`'s
weight gradient is `G_k = Delta_k^T H`, with `Delta_k` (`B x out`) the draw's gradient with
respect to the layer's output. Its moments over draws follow from those of `Delta`:

- mean: `E[G] = E[Delta]^T H`;
- per-coordinate second moment: `E[G[o, i]^2] = H[:, i]^T C_o H[:, i]`, with the per-unit Gram
  matrices `C_o = E[Delta[:, o] Delta[:, o]^T]` (`B x B`).

So a run keeps, per such layer, `sum_k Delta_k` and `sum_k Delta_k[:, o] Delta_k[:, o]^T`
(`out x B x B`, float64, both about a fixed shift for accuracy), and forms the `out x in`
moments once, at the end, with one `out x B^2` by `B^2 x in` product. Every `Delta_k` comes
from one `vmap(grad)` over the draws with respect to zero probes added to the layers' outputs
(`prepare(batch, probes=...)`); the layers' biases (gradient `sum_j Delta_k[j, :]`), the gate
logits and the remaining parameters (whose inputs change with the gates, e.g. the output layer)
are small and are materialised and folded into a `MomentAccumulator` as in `run_draws`.

The noise of draw `k` is `uniform_noise(seed, [k], ...)` as in `iter_draw_chunks`, so a run
has the statistics of `run_draws` on the same seed (to rounding), whatever the chunk size.

References:
    Goodfellow (2015), "Efficient per-example gradient computations" (per-example gradients of
    a linear layer as outer products of its input and output gradients).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.montecarlo.accumulators import MomentAccumulator, Moments
from estimator_lab.montecarlo.engine import (
    GATE_LOGITS,
    gradient_draws,
    shared_noise,
    tracked_parameters,
)
from estimator_lab.montecarlo.groups import WeightPart
from estimator_lab.montecarlo.plan import DrawPlan
from estimator_lab.noise import uniform_noise

if TYPE_CHECKING:  # estimators import the engine: only a type here
    from estimator_lab.estimators.base import GradientEstimator

_PRODUCT_ELEMENTS = 2**24
"""Largest `B^2 x in` block of input products formed at once when moments are read."""


@dataclass(frozen=True)
class GramMoments:
    """Sums of draws `Delta_k` (`B x out`) enough for the moments of `Delta_k^T H`.

    Attributes:
        count: number of draws `n`.
        shift: a `B x out` float64 tensor `S` near the mean draw (kept fixed once chosen).
        total: a `B x out` float64 tensor, `sum_k (Delta_k - S)`.
        gram: an `out x B x B` float64 tensor,
            `gram[o] = sum_k (Delta_k - S)[:, o] (Delta_k - S)[:, o]^T`.
    """

    count: int
    shift: torch.Tensor
    total: torch.Tensor
    gram: torch.Tensor


def gram_moments_of(deltas: torch.Tensor, *, shift: torch.Tensor | None = None) -> GramMoments:
    """The sums of a chunk of draws, about `shift` (default: the first draw).

    Args:
        deltas: a `K x B x out` tensor, one draw per row.
        shift: a `B x out` tensor near the mean.

    Example:
        >>> deltas = torch.randn(4, 3, 2, dtype=torch.float64)
        >>> g = gram_moments_of(deltas, shift=torch.zeros(3, 2, dtype=torch.float64))
        >>> torch.allclose(g.gram[1], deltas[:, :, 1].T @ deltas[:, :, 1])
        True
    """
    if deltas.dim() != 3 or deltas.shape[0] == 0:
        raise ValueError(f"deltas must be a non-empty K x B x out tensor, got "
                         f"{tuple(deltas.shape)}")
    shift = (deltas[0] if shift is None else shift).to(torch.float64, copy=True)
    y = _shifted_by_unit(deltas, shift)
    return GramMoments(len(deltas), shift, y.sum(1).T.to(torch.float64),
                       torch.bmm(y.transpose(1, 2), y).to(torch.float64))


def _shifted_by_unit(deltas: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """`Y = Delta - S` laid out unit by unit: an `out x K x B` contiguous tensor in the draws'
    dtype, for `K x B x out` draws `deltas` and a `B x out` shift.

    One strided pass (a `bmm` of strided views is slow) that also shifts. As in `moments_of`,
    a chunk's sums run in the draws' dtype and are combined in float64.
    """
    count, batch, out = deltas.shape
    y = torch.empty(out, count, batch, dtype=deltas.dtype, device=deltas.device)
    return torch.sub(deltas.permute(2, 0, 1), shift.T.unsqueeze(1).to(deltas.dtype), out=y)


def merge_gram_moments(a: GramMoments, b: GramMoments) -> GramMoments:
    """The sums of the union of two disjoint sets of draws, about `a`'s shift.

    With `d = S_b - S_a`, the draws of `b` about `S_a` are `(Delta - S_b) + d`, so
    `total = total_a + total_b + n_b d` and, per unit `o`,
    `gram[o] = gram_a[o] + gram_b[o] + t_o d_o^T + d_o t_o^T + n_b d_o d_o^T` with
    `t = total_b`.
    """
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    if a.gram.shape != b.gram.shape:
        raise ValueError(f"cannot merge Gram sums of shapes {tuple(a.gram.shape)} and "
                         f"{tuple(b.gram.shape)}")
    if torch.equal(a.shift, b.shift):  # the usual case: chunks summed about one shift
        return GramMoments(a.count + b.count, a.shift, a.total + b.total, a.gram + b.gram)
    d = (b.shift - a.shift).T  # out x B
    t = b.total.T
    cross = t.unsqueeze(-1) * d.unsqueeze(-2)
    gram = (a.gram + b.gram + cross + cross.transpose(-1, -2)
            + b.count * d.unsqueeze(-1) * d.unsqueeze(-2))
    return GramMoments(a.count + b.count, a.shift, a.total + b.total + b.count * d.T, gram)


def weight_moments(sums: GramMoments, inputs: torch.Tensor) -> Moments:
    """Moments of the weight gradients `G_k = Delta_k^T H`, flattened like `W` (`out x in`).

    With `Y_k = Delta_k - S`: `mean = (S + total / n)^T H` and
    `M2[o, i] = sum_k ((Y_k^T H)[o, i])^2 - ((total^T H)[o, i])^2 / n`, where the first sum is
    `H[:, i]^T gram[o] H[:, i]`: the product of `gram`'s upper triangles (`out x B(B+1)/2`, the
    off-diagonal entries doubled) with the input products `H[b, i] H[c, i]`, `b <= c`
    (`B(B+1)/2 x in`, formed in column blocks).

    Args:
        sums: the layer's sums over draws.
        inputs: `H`, the layer's `B x in` input.

    Returns:
        float64 `Moments` of `out * in` coordinates.
    """
    h = inputs.to(torch.float64)
    batch, num_in = h.shape
    out = sums.gram.shape[0]
    mean = (sums.shift + sums.total / sums.count).T @ h
    offset = sums.total.T @ h
    # gram[o] is symmetric: its upper triangle, off-diagonal entries counted twice.
    rows, cols = torch.triu_indices(batch, batch, device=h.device)
    twice = torch.where(rows == cols, 1.0, 2.0).to(h.dtype)
    half_gram = sums.gram.reshape(out, batch * batch)[:, rows * batch + cols] * twice
    width = max(1, _PRODUCT_ELEMENTS // len(rows))
    quad = torch.cat([half_gram @ (h[rows, i:i + width] * h[cols, i:i + width])
                      for i in range(0, num_in, width)], dim=1)
    m2 = (quad - offset.square() / sums.count).clamp_min_(0)
    return Moments(sums.count, mean.reshape(-1), m2.reshape(-1))


def _group_weight_parts(y: torch.Tensor, shift: torch.Tensor, input_gram: torch.Tensor,
                        parts: list[tuple[int, slice]]) -> list[tuple[int, WeightPart]]:
    """The batch-means parts of a chunk's draws of a shared-input layer's weight, by group.

    With `A = H H^T` and `Y_k = Delta_k - S`, draw `k` adds `q_k = sum_o Y_k[:, o]^T A
    Y_k[:, o]` (one `(out K) x B` by `B x B` product for the chunk). A group's `n` draws with
    `t = sum_k Y_k` have mean weight `M^T H`, `M = S + t / n`, and
    `sum_k ||G_k - M^T H||^2 = sum_k q_k - sum_o t_o^T A t_o / n` (`out x B^2` work, never
    `out x in`).

    Args:
        y: the chunk's shifted draws, `out x K x B` (`_shifted_by_unit`).
        shift: `S`, `B x out` float64.
        input_gram: `A` (`B x B`, float64).
        parts: `(group, rows)` of the chunk (`_group_rows`).

    Returns:
        `(group, WeightPart)` per part.
    """
    out, count, batch = y.shape
    quadratic = (y.reshape(out * count, batch) @ input_gram.to(y.dtype)).view_as(y).mul_(y)
    per_draw = quadratic.sum(dim=(0, 2)).to(torch.float64)  # the chunk's sums in its dtype
    result = []
    for group, rows in parts:
        n = rows.stop - rows.start
        total = y[:, rows].sum(1).T.to(torch.float64)  # B x out
        offset = float((input_gram @ total).mul_(total).sum())
        m2 = float(per_draw[rows].sum()) - offset / n
        result.append((group, WeightPart(n, shift + total / n, max(m2, 0.0))))
    return result


class FastAccumulator:
    """Moments of one estimator's draws of the gate logits and the parameters of a graph.

    Reads like a `MomentAccumulator` (`names()`, `acc[name] -> Moments`, `compute()`,
    `elapsed_s`, `skipped`, `groups`, `state_dict()`), with the same names, order and
    flattening as the generic path; the weights of shared-input layers are kept as
    `GramMoments` about the first draw, owned by the accumulator and added to in place (one
    `out x B x B` batched product per chunk), and their `Moments` are formed when read (with
    `higher_moments`, their draws
    `Delta_k^T H` are formed chunk by chunk instead, as `M3` and `M4` need them). Batch-means
    groups of those weights are kept as `WeightPart`s (`GroupSummaries.add_weight_part`).

    Args:
        names: the tracked names in order (`"gate_logits"`, then the parameters).
        inputs: shared-input layer name -> its `B x in` input `H` (layers whose weight is
            tracked).
        higher_moments, group_size, references, zero_reference: as for `MomentAccumulator`.
    """

    path = "fast"

    def __init__(self, names: list[str], inputs: Mapping[str, torch.Tensor], *,
                 higher_moments: bool = False, group_size: int | None = None,
                 references: Mapping[str, torch.Tensor] | None = None,
                 zero_reference: bool = False) -> None:
        self._names = list(names)
        self.inputs = {layer: h.detach().to(torch.float64) for layer, h in inputs.items()}
        self.higher_moments = higher_moments
        self.dense = MomentAccumulator(higher_moments=higher_moments, group_size=group_size,
                                       references=dict(references or {}),
                                       zero_reference=zero_reference)
        if self.groups is not None and not higher_moments:
            self.groups.weight_inputs.update(
                {f"{layer}.weight": h for layer, h in self.inputs.items()})
        self.grams: dict[str, GramMoments] = {}
        self.elapsed_s = 0.0
        self.skipped: list[int] = []
        self._read: dict[str, Moments] = {}
        self._input_grams = {layer: h @ h.T for layer, h in self.inputs.items()}

    @property
    def groups(self):
        """The batch-means `GroupSummaries` (None without groups)."""
        return self.dense.groups

    def update(self, dense: Mapping[str, torch.Tensor], deltas: Mapping[str, torch.Tensor], *,
               first_index: int | None = None) -> None:
        """Adds a chunk of draws.

        Args:
            dense: name -> `K x ...` draws of the materialised tensors (scratch space, unless
                two of them share memory).
            deltas: shared-input layer -> `K x B x out` gradients with respect to its output.
            first_index: the global index of the chunk's first draw (needed with groups).
        """
        if self.groups is not None and first_index is None:
            raise ValueError("an accumulator with groups needs first_index in update")
        dense = dict(dense)
        for layer, chunk in deltas.items():
            if self.higher_moments:
                dense[f"{layer}.weight"] = chunk.transpose(1, 2) @ self.inputs[layer].to(
                    chunk.dtype)
                continue
            known = self.grams.get(layer)
            if known is None:  # sums owned by this accumulator, added to in place
                shift = chunk[0].to(torch.float64, copy=True)
                batch, out = shift.shape
                known = GramMoments(0, shift, torch.zeros_like(shift),
                                    shift.new_zeros(out, batch, batch))
            y = _shifted_by_unit(chunk, known.shift)
            # Converted before the in-place add: a mixed-dtype add_ is several times slower.
            known.gram.add_(torch.bmm(y.transpose(1, 2), y).to(torch.float64))
            known.total.add_(y.sum(1).T.to(torch.float64))
            self.grams[layer] = replace(known, count=known.count + len(chunk))
            if self.groups is not None:
                parts = _group_rows(len(chunk), first_index, self.groups)
                for group, part in _group_weight_parts(y, known.shift,
                                                       self._input_grams[layer], parts):
                    self.groups.add_weight_part(f"{layer}.weight", group, part)
        # Autograd may hand one tensor to several inputs (the gate-logit gradient is the gater
        # output's): the deltas are read by now, and dense chunks are scratch unless aliased.
        distinct = len({t.untyped_storage().data_ptr() for t in dense.values()}) == len(dense)
        self.dense.update(dense, overwrite=distinct, first_index=first_index)
        self._read.clear()

    def merge(self, other: FastAccumulator) -> None:
        """Adds the draws another accumulator of the same graph and batch has seen."""
        if other.inputs.keys() != self.inputs.keys() or not all(
            torch.equal(h, other.inputs[layer]) for layer, h in self.inputs.items()
        ):
            raise ValueError("cannot merge accumulators of different layer inputs (another "
                             "batch or other parameters)")
        self.dense.merge(other.dense)
        for layer, sums in other.grams.items():
            known = self.grams.get(layer)
            self.grams[layer] = _copy(sums) if known is None else merge_gram_moments(known, sums)
        self.elapsed_s += other.elapsed_s
        self.skipped = sorted(self.skipped + other.skipped)
        self._read.clear()

    def names(self) -> list[str]:
        """Names of the tracked tensors, in the order of the generic path."""
        return list(self._names)

    def __getitem__(self, name: str) -> Moments:
        if name not in self._names:
            raise KeyError(name)
        layer = name.removesuffix(".weight")
        if name.endswith(".weight") and layer in self.grams:
            if name not in self._read:
                self._read[name] = weight_moments(self.grams[layer], self.inputs[layer])
            return self._read[name]
        return self.dense[name]

    def compute(self) -> dict[str, Moments]:
        """The moments of every tracked tensor."""
        return {name: self[name] for name in self._names}

    def state_dict(self) -> dict:
        """Everything needed to resume or merge, as plain dicts and CPU tensors (loadable with
        `torch.load(weights_only=True)`)."""
        return {
            "kind": self.path, "names": list(self._names),
            "inputs": {layer: h.cpu() for layer, h in self.inputs.items()},
            "higher_moments": self.higher_moments, "dense": self.dense.state_dict(),
            "grams": {layer: {"count": g.count, "shift": g.shift.cpu().clone(),
                              "total": g.total.cpu().clone(), "gram": g.gram.cpu().clone()}
                      for layer, g in self.grams.items()},
            "elapsed_s": self.elapsed_s, "skipped": list(self.skipped),
        }

    @classmethod
    def from_state_dict(cls, state: dict, device=None) -> FastAccumulator:
        """Inverse of `state_dict`, tensors moved to `device`."""
        accumulator = cls(state["names"], {k: h.to(device) for k, h in state["inputs"].items()},
                          higher_moments=state["higher_moments"])
        accumulator.dense = MomentAccumulator.from_state_dict(state["dense"], device)
        accumulator.grams = {
            layer: _copy(GramMoments(g["count"], g["shift"].to(device), g["total"].to(device),
                                     g["gram"].to(device))) for layer, g in state["grams"].items()
        }
        accumulator.elapsed_s = state["elapsed_s"]
        accumulator.skipped = list(state["skipped"])
        return accumulator


def _copy(sums: GramMoments) -> GramMoments:
    """Sums with tensors of their own (an accumulator adds to its sums in place)."""
    return GramMoments(sums.count, sums.shift.clone(), sums.total.clone(), sums.gram.clone())


def restore_accumulator(state: dict, device=None) -> MomentAccumulator | FastAccumulator:
    """The accumulator of either path from its `state_dict`."""
    if state.get("kind") == FastAccumulator.path:
        return FastAccumulator.from_state_dict(state, device)
    return MomentAccumulator.from_state_dict(state, device)


def _group_rows(count: int, first_index: int | None, groups) -> list[tuple[int | None, slice]]:
    """`(group, rows)` of a chunk of consecutive draws, split at group boundaries."""
    if groups is None:
        return [(None, slice(0, count))]
    size, parts, start = groups.group_size, [], 0
    while start < count:
        group = (first_index + start) // size
        stop = min(count, (group + 1) * size - first_index)
        parts.append((group, slice(start, stop)))
        start = stop
    return parts


class _ProbedSurrogate(torch.nn.Module):
    """`(layer probes, logit probe, noise) -> surrogate`, the graph a submodule."""

    def __init__(self, graph: StochasticGraph, estimator: GradientEstimator, batch, state) -> None:
        super().__init__()
        self.graph, self.estimator, self.batch, self.state = graph, estimator, batch, state

    def forward(self, probes: dict[str, torch.Tensor], logit_probe: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
        prepared = self.graph.prepare(self.batch, probes=probes)
        prepared.logits = prepared.logits + logit_probe
        return self.estimator.surrogate(self.graph, prepared, noise, self.state)


@dataclass(frozen=True)
class FastLayout:
    """Which tensors the fast path materialises and which it keeps as Gram sums.

    Attributes:
        names: every tracked name, in the generic path's order.
        inputs: shared-input layer -> its `B x in` input, for the layers whose weight is
            tracked (their output gradients `Delta` are drawn).
        biases: shared-input layers whose bias is tracked (`sum_b Delta[b]`).
        dense: the other tracked parameters (drawn by `vmap(grad)`).
        include_logits: whether the gate-logit gradient is tracked.
    """

    names: tuple[str, ...]
    inputs: dict[str, torch.Tensor]
    biases: tuple[str, ...]
    dense: tuple[str, ...]
    include_logits: bool

    @classmethod
    def of(cls, graph: StochasticGraph, batch, plan: DrawPlan) -> FastLayout:
        """The layout of a plan on a graph and batch (see `fast_path_reason` first)."""
        with torch.no_grad():
            layers = graph.shared_input_layers(batch)
        tracked = list(tracked_parameters(graph, plan.parameters))
        shared = {f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")}
        return cls(
            names=tuple([GATE_LOGITS] if plan.include_logits else []) + tuple(tracked),
            inputs={layer: h for layer, h in layers.items() if f"{layer}.weight" in tracked},
            biases=tuple(layer for layer in layers if f"{layer}.bias" in tracked),
            dense=tuple(n for n in tracked if n not in shared),
            include_logits=plan.include_logits,
        )

    @property
    def probed(self) -> tuple[str, ...]:
        """The layers whose output gradient is drawn."""
        return tuple(dict.fromkeys([*self.inputs, *self.biases]))


def fast_path_reason(graph: StochasticGraph, estimators: Mapping[str, GradientEstimator],
                     batch, plan: DrawPlan) -> str | None:
    """Why the fast path does not apply to a run (None when it does).

    It applies when the plan differentiates by `vmap`, every estimator supports vmap, the
    graph declares shared-input layers (`StochasticGraph.shared_input_layers`: `nn.Linear`
    layers with a bias whose `B x in` input is finite and the same in every draw) and the plan
    tracks one of their weights. Whether each surrogate reaches those weights only through the
    layers' outputs is checked on the first draw (`fast_path_problem`).
    """
    if plan.method != "vmap":
        return "method='loop' asks for one autograd pass per draw"
    for name, estimator in estimators.items():
        if not estimator.supports_vmap:
            return f"estimator {name!r} does not support vmap"
    with torch.no_grad():
        prepared = graph.prepare(batch)
        layers = graph.shared_input_layers(batch)
    if not layers:
        return (f"{type(graph).__name__} declares no shared-input layers "
                "(StochasticGraph.shared_input_layers)")
    for layer, h in layers.items():
        module = graph.get_submodule(layer)
        if not isinstance(module, torch.nn.Linear) or module.bias is None:
            return f"shared-input layer {layer!r} is not an nn.Linear with a bias: {module}"
        if h.shape != (prepared.batch_size, module.in_features):
            return (f"input of {layer!r} has shape {tuple(h.shape)}, expected "
                    f"(B, {module.in_features})")
        if not bool(torch.isfinite(h).all()):
            return f"the input of shared-input layer {layer!r} is not finite"
    if not FastLayout.of(graph, batch, plan).inputs:
        return "no shared-input layer's weight is tracked"
    return None


class FastDraws:
    """One estimator's draws on the fast path: a `vmap(grad)` over a chunk's noise with respect
    to the dense parameters, zero probes on the shared-input layers' outputs and the logits.

    Args:
        graph, estimator, batch, state: the model, the estimator, the minibatch and the
            estimator's frozen state.
        layout: what to draw (`FastLayout.of`).
    """

    def __init__(self, graph: StochasticGraph, estimator: GradientEstimator, batch, state,
                 layout: FastLayout) -> None:
        with torch.no_grad():
            logits = graph.logits(batch)
        self.layout = layout
        self.probes = {
            layer: torch.zeros(logits.shape[0], graph.get_submodule(layer).out_features,
                               dtype=logits.dtype, device=logits.device)
            for layer in layout.probed
        }
        self.logit_probe = torch.zeros_like(logits)
        params = dict(graph.named_parameters())
        self.tracked = {n: params[n].detach() for n in layout.dense}
        frozen = {f"graph.{n}": p.detach() for n, p in params.items()}
        module = _ProbedSurrogate(graph, estimator, batch, state)

        def surrogate(tracked, probes, logit_probe, noise):
            values = frozen | {f"graph.{n}": t for n, t in tracked.items()}
            return torch.func.functional_call(module, values, (probes, logit_probe, noise))

        self._per_draw = torch.func.vmap(
            torch.func.grad(surrogate, argnums=(0, 1, 2)), in_dims=(None, None, None, 0))

    def __call__(self, noise: torch.Tensor) -> tuple[dict[str, torch.Tensor],
                                                     dict[str, torch.Tensor]]:
        """`(dense, deltas)` for a `K x *noise_shape` chunk of noise: name -> `K x ...` draws,
        and shared-input layer -> `K x B x out` output gradients."""
        param_grads, probe_grads, logit_grads = self._per_draw(
            self.tracked, self.probes, self.logit_probe, noise)
        layout = self.layout
        dense = ({GATE_LOGITS: logit_grads} if layout.include_logits else {}) | param_grads | {
            f"{layer}.bias": probe_grads[layer].sum(1) for layer in layout.biases
        }
        return dense, {layer: probe_grads[layer] for layer in layout.inputs}


def fast_path_problem(graph: StochasticGraph, estimators: Mapping[str, GradientEstimator],
                      batch, plan: DrawPlan, states: Mapping[str, Any],
                      start: int | None = None) -> str | None:
    """`fast_path_reason`, then `Delta^T H` against autograd's weight gradients on one draw.

    The decomposition holds only if the weights reach the surrogate through the layers'
    outputs alone; an estimator that reads them directly would get wrong moments silently.

    Args:
        graph, estimators, batch, plan, states: the run.
        start: the draw to check (default: the plan's first).

    Returns:
        None where the fast path applies, else why not (naming the estimator and the layer
        where the two gradients differ).
    """
    reason = fast_path_reason(graph, estimators, batch, plan)
    if reason is not None:
        return reason
    index = plan.first_draw if start is None else start
    with torch.no_grad():
        prepared = graph.prepare(batch)
    layout = FastLayout.of(graph, batch, plan)
    for name, estimator in estimators.items():
        noise = uniform_noise(plan.seed, range(index, index + 1),
                              estimator.noise_shape(graph, prepared),
                              dtype=prepared.logits.dtype, device=prepared.logits.device)
        _, deltas = FastDraws(graph, estimator, batch, states.get(name), layout)(noise)
        problem = _weight_gap(name, graph, estimator, batch, states.get(name), noise, deltas,
                              layout.inputs)
        if problem is not None:
            return problem
    return None


def _weight_gap(name: str, graph: StochasticGraph, estimator: GradientEstimator, batch, state,
                noise: torch.Tensor, deltas: Mapping[str, torch.Tensor],
                inputs: Mapping[str, torch.Tensor]) -> str | None:
    """None if one draw's `Delta^T H` is autograd's weight gradient, else a message."""
    reference = gradient_draws(graph, estimator, batch, noise[:1], state=state,
                               parameters=[f"{layer}.weight" for layer in deltas],
                               include_logits=False)
    tolerance = 1e3 * torch.finfo(noise.dtype).eps  # relative to the largest entry
    for layer, delta in deltas.items():
        expected = reference[f"{layer}.weight"][0]
        gap = float((delta[0].T @ inputs[layer] - expected).abs().max())
        if gap > tolerance * max(float(expected.abs().max()), torch.finfo(noise.dtype).tiny):
            return (f"estimator {name!r}: the gradient of {layer}.weight is not Delta^T H (gap "
                    f"{gap:.3g}); its surrogate must reach the layer's parameters only through "
                    "the layer's output (prepare)")
    return None


def iter_fast_chunks(
    graph: StochasticGraph,
    estimators: Mapping[str, GradientEstimator],
    batch: tuple[torch.Tensor, ...],
    plan: DrawPlan,
    *,
    states: Mapping[str, Any],
    start: int | None = None,
) -> Iterator[tuple[range, dict[str, tuple[dict, dict]], dict[str, float]]]:
    """Yields `(draw_range, {estimator: (dense, deltas)}, {estimator: seconds})` by chunk.

    The fast path's `iter_draw_chunks`: the same noise (common random numbers, shared between
    estimators of one noise shape), `dense` as `FastDraws` returns it.

    Args:
        graph, estimators, batch: the run.
        plan: its plan (the fast path must apply: `fast_path_reason`).
        states: frozen estimator states by name.
        start: the first draw to make (default: the plan's first).
    """
    with torch.no_grad():
        prepared = graph.prepare(batch)
    layout = FastLayout.of(graph, batch, plan)
    drawers = {name: FastDraws(graph, est, batch, states.get(name), layout)
               for name, est in estimators.items()}
    for indices in plan.chunks(start):
        chunk, elapsed, noises = {}, {}, {}
        for name, estimator in estimators.items():
            started = time.perf_counter()
            noise = shared_noise(noises, estimator, graph, prepared, plan.seed, indices)
            chunk[name] = drawers[name](noise)
            elapsed[name] = time.perf_counter() - started
        yield indices, chunk, elapsed
