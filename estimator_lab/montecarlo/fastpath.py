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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.montecarlo.accumulators import MomentAccumulator, Moments
from estimator_lab.montecarlo.engine import GATE_LOGITS, finite_draw_rows, gradient_draws
from estimator_lab.montecarlo.noise import uniform_noise

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
    count, batch, out = deltas.shape
    # One strided copy to `out x K x B` (bmm of strided views is slow), shifted in place. As in
    # `moments_of`, a chunk's sums run in the draws' dtype and are combined in float64.
    y = torch.empty(out, count, batch, dtype=deltas.dtype, device=deltas.device)
    y.copy_(deltas.permute(2, 0, 1)).sub_(shift.T.unsqueeze(1).to(deltas.dtype))
    gram = torch.bmm(y.transpose(1, 2), y).to(torch.float64)
    return GramMoments(count, shift, y.sum(1).T.to(torch.float64), gram)


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
    `H[:, i]^T gram[o] H[:, i]`: the product of `gram` (`out x B^2`) with the input products
    `H[b, i] H[c, i]` (`B^2 x in`, formed in column blocks).

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
    flat_gram = sums.gram.reshape(out, batch * batch)
    width = max(1, _PRODUCT_ELEMENTS // (batch * batch))
    quad = torch.cat([
        flat_gram @ (h[:, None, i:i + width] * h[None, :, i:i + width]).reshape(batch**2, -1)
        for i in range(0, num_in, width)
    ], dim=1)
    m2 = (quad - offset.square() / sums.count).clamp_min_(0)
    return Moments(sums.count, mean.reshape(-1), m2.reshape(-1))


class FastAccumulator:
    """Moments of one estimator's draws of the gate logits and every parameter of a graph.

    Reads like a `MomentAccumulator` (`names()`, `acc[name] -> Moments`, `compute()`,
    `elapsed_s`, `skipped`, `groups`), with the same names, order and flattening as
    `run_draws`; the weights of shared-input layers are kept as `GramMoments` and their
    `Moments` are formed when read.

    Args:
        names: the tracked names in order (`"gate_logits"`, then the parameters).
        inputs: shared-input layer name -> its `B x in` input `H`.
    """

    groups = None
    higher_moments = False

    def __init__(self, names: list[str], inputs: Mapping[str, torch.Tensor]) -> None:
        self._names = list(names)
        self.inputs = {layer: h.detach().to(torch.float64) for layer, h in inputs.items()}
        self.dense = MomentAccumulator()
        self.grams: dict[str, GramMoments] = {}
        self.elapsed_s = 0.0
        self.skipped: list[int] = []
        self._read: dict[str, Moments] = {}

    def update(self, dense: Mapping[str, torch.Tensor], deltas: Mapping[str, torch.Tensor]) -> None:
        """Adds a chunk of draws.

        Args:
            dense: name -> `K x ...` draws of the materialised tensors (scratch space, unless
                two of them share memory).
            deltas: shared-input layer -> `K x B x out` gradients with respect to its output.
        """
        for layer, chunk in deltas.items():
            known = self.grams.get(layer)
            sums = gram_moments_of(chunk, shift=None if known is None else known.shift)
            self.grams[layer] = sums if known is None else merge_gram_moments(known, sums)
        # Autograd may hand one tensor to several inputs (the gate-logit gradient is the gater
        # output's): the deltas are read by now, and dense chunks are scratch unless aliased.
        distinct = len({t.untyped_storage().data_ptr() for t in dense.values()}) == len(dense)
        self.dense.update(dict(dense), overwrite=distinct)
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
            self.grams[layer] = sums if known is None else merge_gram_moments(known, sums)
        self.elapsed_s += other.elapsed_s
        self.skipped = sorted(self.skipped + other.skipped)
        self._read.clear()

    def names(self) -> list[str]:
        """Names of the tracked tensors, in the order of `run_draws`."""
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


def _shared_layers(graph: StochasticGraph, batch, batch_size: int) -> dict[str, torch.Tensor]:
    """The graph's shared-input layers and their inputs, checked."""
    with torch.no_grad():
        layers = graph.shared_input_layers(batch)
    if not layers:
        raise ValueError(
            f"{type(graph).__name__} declares no shared-input layers "
            "(StochasticGraph.shared_input_layers), so the fast path does not apply; use "
            "run_draws"
        )
    for layer, h in layers.items():
        module = graph.get_submodule(layer)
        if not isinstance(module, torch.nn.Linear) or module.bias is None:
            raise TypeError(f"shared-input layer {layer!r} must be an nn.Linear with a bias, "
                            f"got {module}")
        if h.shape != (batch_size, module.in_features):
            raise ValueError(f"input of {layer!r} has shape {tuple(h.shape)}, expected "
                             f"(B, {module.in_features})")
    return layers


def _check_first_draw(name: str, graph: StochasticGraph, estimator: GradientEstimator, batch,
                      state, noise: torch.Tensor, deltas: Mapping[str, torch.Tensor],
                      inputs: Mapping[str, torch.Tensor]) -> None:
    """Checks `Delta^T H` against autograd's weight gradients for the chunk's first draw.

    The decomposition holds only if the weights reach the surrogate through the layers'
    outputs alone; an estimator that reads them directly would get wrong moments silently.

    Raises:
        ValueError: naming the estimator and the layer where the two differ.
    """
    reference = gradient_draws(graph, estimator, batch, noise[:1], state=state,
                               parameters=[f"{layer}.weight" for layer in deltas],
                               include_logits=False)
    tolerance = 1e3 * torch.finfo(noise.dtype).eps  # relative to the largest entry
    for layer, delta in deltas.items():
        expected = reference[f"{layer}.weight"][0]
        gap = float((delta[0].T @ inputs[layer] - expected).abs().max())
        if gap > tolerance * max(float(expected.abs().max()), torch.finfo(noise.dtype).tiny):
            raise ValueError(
                f"estimator {name!r}: the gradient of {layer}.weight is not Delta^T H (gap "
                f"{gap:.3g}); its surrogate must reach the layer's parameters only through "
                "the layer's output (prepare), so the fast path does not apply; use run_draws"
            )


def fast_moments(
    graph: StochasticGraph,
    estimators: Mapping[str, GradientEstimator],
    batch: tuple[torch.Tensor, ...],
    *,
    num_draws: int,
    seed: int,
    chunk_size: int = 32,
    states: Mapping[str, Any] | None = None,
    first_draw: int = 0,
) -> dict[str, FastAccumulator]:
    """Streaming moments of `num_draws` gradient draws per estimator, weights never per draw.

    The statistics are those of `run_draws(graph, estimators, batch, num_draws=num_draws,
    seed=seed)` (every parameter and the gate logits tracked) up to rounding; memory is one
    chunk of `K x B x out` output gradients plus `out x B x B` Gram sums per shared-input
    layer, never `K x out x in`.

    Args:
        graph: a graph that declares `shared_input_layers` (e.g. `ConditionalNetwork`).
        estimators: estimators by name; each surrogate must run under `torch.func.vmap`.
        batch: the fixed minibatch, on the graph's device.
        num_draws: draws per estimator.
        seed: the noise seed; draw `k` uses `uniform_noise(seed, [k], ...)`.
        chunk_size: draws differentiated at once.
        states: frozen estimator states by name (default: `estimator.init(graph)`).
        first_draw: index of the first draw (a share of a larger run; shares `merge`).

    Returns:
        one `FastAccumulator` per estimator, keyed like `estimators`, with `elapsed_s` the
        seconds spent making its draws and folding them into the sums (the Gram sums are the
        fast path's share of the gradient work).

    Raises:
        ValueError: for a graph without shared-input layers, an estimator that does not
            support vmap or whose surrogate reads a shared-input layer's weights other than
            through its output (checked on the first draw against autograd), or non-positive
            counts.
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
    if num_draws < 1 or chunk_size < 1 or first_draw < 0:
        raise ValueError(f"num_draws and chunk_size must be >= 1 and first_draw >= 0, got "
                         f"{num_draws}, {chunk_size}, {first_draw}")
    for name, estimator in estimators.items():
        if not estimator.supports_vmap:
            raise ValueError(f"estimator {name!r} does not support vmap; use run_draws")
    with torch.no_grad():
        prepared = graph.prepare(batch)
    logits = prepared.logits
    layers = _shared_layers(graph, batch, prepared.batch_size)
    states = {name: est.init(graph) for name, est in estimators.items()} | dict(states or {})
    probes = {
        layer: torch.zeros(logits.shape[0], graph.get_submodule(layer).out_features,
                           dtype=logits.dtype, device=logits.device)
        for layer in layers
    }
    logit_probe = torch.zeros_like(logits)
    shared = {f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")}
    params = dict(graph.named_parameters())
    tracked = {n: p.detach() for n, p in params.items() if n not in shared}
    frozen = {f"graph.{n}": p.detach() for n, p in params.items()}
    names = [GATE_LOGITS, *params]

    results = {}
    for name, estimator in estimators.items():
        module = _ProbedSurrogate(graph, estimator, batch, states[name])

        def surrogate(tracked, probes, logit_probe, noise, module=module):
            values = frozen | {f"graph.{n}": t for n, t in tracked.items()}
            return torch.func.functional_call(module, values, (probes, logit_probe, noise))

        per_draw = torch.func.vmap(
            torch.func.grad(surrogate, argnums=(0, 1, 2)), in_dims=(None, None, None, 0)
        )
        accumulator = FastAccumulator(names, layers)
        noise_shape = estimator.noise_shape(graph, prepared)
        stop = first_draw + num_draws
        for start in range(first_draw, stop, chunk_size):
            started = time.perf_counter()
            indices = range(start, min(start + chunk_size, stop))
            noise = uniform_noise(seed, indices, noise_shape, dtype=logits.dtype,
                                  device=logits.device)
            param_grads, deltas, logit_grads = per_draw(tracked, probes, logit_probe, noise)
            dense = {GATE_LOGITS: logit_grads} | param_grads | {
                f"{layer}.bias": delta.sum(1) for layer, delta in deltas.items()
            }
            # A non-finite output gradient makes its layer's bias gradient (a sum) non-finite,
            # and a non-finite entry its tensor's sum: one reduction each, then the culprit.
            if not all(bool(torch.isfinite(t.sum())) for t in dense.values()):
                finite_draw_rows(name, dense, indices, "raise")
            if start == first_draw:
                _check_first_draw(name, graph, estimator, batch, states[name], noise, deltas,
                                  layers)
            accumulator.update(dense, deltas)
            accumulator.elapsed_s += time.perf_counter() - started
        results[name] = accumulator
    return results
