"""bitflip-1 and UGC (Kunes et al., 2022) for Bernoulli gates.

Both flip one gate of a sampled gate vector. With `b = 1[u < p]`, `p = sigmoid(a)`, and a gate
`j` chosen uniformly from a set `S` of `|S| = K` gates by one more uniform `v`
(`j = S[floor(v K)]`, `S` sorted by `min(p, 1 - p)`), the draw on gate `i in S` is

    g_{a_i} = K 1[j = i] sigmoid'(a_i) [L(b; b_i = 1) - L(b; b_i = 0)],

one loss at `b` and one at `b` with gate `j` flipped. Unbiased: given the other gates the flip
difference `Delta_i(b_{-i})` does not depend on `b_i`, `E[Delta_i] sigmoid'(a_i)` is the
gradient, and `P(j = i) = 1 / K`. Its second moment on gate `i` is
`K m_i^2 M_i^2 E[Delta_i^2]` (`m = min(p, 1 - p)`, `M = 1 - m`): small at the boundary of the
parameter space (`m -> 0`), where DisARM's relative variance explodes.

DisARM's draw on gate `i` is `M_i / 2 (L(b) - L(b~)) (b_i - b~_i)`: nonzero with probability
`2 m_i`, where `L(b) - L(b~) = +-Delta_i(b_{-i}) + R_i`, `R_i` the change due to the other gates
of the antithetic pair. Without `R_i` its second moment is `m_i M_i^2 E[Delta_i^2] / 2`, so
bitflip-1 on `K` gates is the smaller one exactly when `K m_i < 1/2`. UGC uses bitflip-1 on
the largest set `S` of the gates nearest the boundary with `|S| m_i < 1/2` for every `i in S`
(the `K` smallest `m_i`, `K` the largest with `m_(K) < 1 / (2K)`), and DisARM on the others;
with one gate in `S` that is every gate with `p != 1/2`, where DisARM's draw is constant.
The claim of the paper, uniformly lower variance than DisARM, is checked exactly (not assumed)
by `analyses/ugc_claim`: the cross term `R_i` can make DisARM's variance smaller.

Note: the selection rule above is this module's derivation of "bitflip-1 or DisARM per
coordinate, whichever has the smaller variance bound", written without the paper's text at
hand; the paper's own rule may differ in its constant.

Noise: `B x (G + 1)`: `G` gate uniforms and the selector `v` in the last column. A draw depends
on `u` only through `1[u < p]` and `1[1 - u < p]`, and on `v` only through `floor(v K)`, so it is
piecewise constant on cells split at `quadrature_breakpoints`, and `exact_moments` with one
Gauss-Legendre node per cell (`quadrature_points=1`, `max_quadrature_dims=G + 1`) is exact.

References:
    Kunes, Yin, Land, Haviv, Pe'er, Tavaré (2022), "Gradient estimation for binary latent
    variables via gradient variance clipping", arXiv 2208.06124 (AAAI 2023).
"""

from __future__ import annotations

from typing import Any

import torch

from estimator_lab.estimators.arm import DisARM, antithetic_gates
from estimator_lab.estimators.base import (
    GradientEstimator,
    bernoulli_gates,
    require_single_layer,
)
from estimator_lab.estimators.registry import register_estimator
from estimator_lab.graphs.base import PreparedBatch, StochasticGraph


def boundary_gates(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """UGC's bitflip set: the gates in order of `m = min(p, 1 - p)` and how many are in it.

    Args:
        logits: a `... x G` tensor of gate logits.

    Returns:
        `order` (`... x G`, gate indices by increasing `m`) and `count` (`...`, the largest `K`
        with `m_(K) < 1 / (2K)`, 0 when none): the set is `order[..., :count]`.

    Example:
        >>> order, count = boundary_gates(torch.tensor([[0.0, -4.0, 3.0]]))
        >>> order.tolist(), count.tolist()  # m = 0.5, 0.018, 0.047: 2 * 0.047 <= 1/2, 3 * 0.5 not
        ([[1, 2, 0]], [2])
    """
    p = torch.sigmoid(logits)
    smallest, order = torch.sort(torch.minimum(p, 1 - p), dim=-1, stable=True)
    ranks = torch.arange(1, logits.shape[-1] + 1, dtype=logits.dtype, device=logits.device)
    return order, (2 * ranks * smallest < 1).sum(-1)


def flip_one(
    gates: torch.Tensor, order: torch.Tensor, count: torch.Tensor, selector: torch.Tensor
) -> torch.Tensor:
    """The one-hot `B x G` mask of the gate `j = order[floor(v count)]` (all zero if `count = 0`).

    Args:
        gates: `B x G` gate values (for dtype and shape).
        order: `B x G` gate indices; the first `count` are the candidates.
        count: `B` candidate counts.
        selector: `B` uniforms `v`.
    """
    position = torch.minimum((selector * count).floor().long(), (count - 1).clamp_min(0))
    chosen = order.gather(-1, position.unsqueeze(-1))  # B x 1
    columns = torch.arange(gates.shape[-1], device=gates.device)
    return ((columns == chosen) & (count > 0).unsqueeze(-1)).to(gates.dtype)


class _OneFlip(GradientEstimator):
    """Shared noise layout and quadrature cells of bitflip-1 and UGC (module docstring)."""

    is_unbiased = True

    def noise_shape(self, graph: StochasticGraph, prepared: PreparedBatch) -> tuple[int, ...]:
        return (prepared.batch_size, graph.num_gates + 1)

    def candidates(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`order` (`B x G`) and `count` (`B`) of the gates bitflip-1 covers."""
        raise NotImplementedError

    def quadrature_breakpoints(self, logits: torch.Tensor) -> torch.Tensor:
        """`p`, `1 - p` for each gate column and `k / K` (`k = 1 .. K - 1`) for the selector:
        a `max(2, G - 1) x (G + 1)` tensor (short columns repeat their last value)."""
        p = torch.sigmoid(logits)
        _, count = self.candidates(logits.unsqueeze(0))
        count = int(count[0])
        rows = max(2, logits.numel() - 1)
        edges = torch.arange(1, max(count, 2), dtype=p.dtype, device=p.device) / max(count, 1)
        selector = torch.cat([edges, edges[-1:].expand(rows - edges.numel())])
        gates = torch.cat([torch.stack([p, 1 - p]), p.expand(rows - 2, -1)])
        return torch.cat([gates, selector.unsqueeze(-1)], -1)

    def flip_gradient(
        self,
        graph: StochasticGraph,
        prepared: PreparedBatch,
        noise: torch.Tensor,
        gates: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Losses and the bitflip-1 part of the gate-logit draw.

        Args:
            gates: the sampled `B x G` gates `b`.
            extra: an optional `B x G` gate vector evaluated in the same call (DisARM's `b~`).

        Returns:
            the losses at `b` and at `extra` (`B` each, `extra`'s `None` if not given), and the
            `B x G` draw `K 1[j = i] sigmoid'(a_i) Delta_i` (zero off the chosen gate).
        """
        logits = prepared.logits.detach()
        order, count = self.candidates(logits)
        mask = flip_one(gates, order, count, noise[..., -1])
        flipped = gates + mask * (1 - 2 * gates)
        stack = [gates, flipped] if extra is None else [gates, extra, flipped]
        losses = graph.loss(prepared, torch.stack(stack))
        # (2 b_j - 1)(L(b) - L(flip_j b)) = L(b; b_j = 1) - L(b; b_j = 0)
        delta = (2 * gates - 1) * (losses[0] - losses[-1]).detach().unsqueeze(-1)
        p = torch.sigmoid(logits)
        gate_grad = count.unsqueeze(-1).to(p.dtype) * mask * p * (1 - p) * delta
        return losses[0], (None if extra is None else losses[1]), gate_grad


@register_estimator("bitflip")
class Bitflip(_OneFlip):
    """bitflip-1: `g_{a_i} = G 1[j = i] sigmoid'(a_i) [L(b; b_i=1) - L(b; b_i=0)]`, `j ~ U{1..G}`.

    The flipped gate `j` is chosen uniformly among all `G` gates (module docstring); two loss
    evaluations, `b` and `b` with gate `j` flipped. Parameters the loss touches directly get the
    pathwise gradient at `b` (a `Bernoulli(p)` sample; the flipped vector is not, so it gets no
    pathwise term). The draw depends on the selector uniform as well as on the gates, so
    `discrete_noise` is False; it is piecewise constant, and `exact_moments` with
    `quadrature_points=1` is exact.

    Example:
        >>> from estimator_lab.graphs.toy import ToyGraph
        >>> toy = ToyGraph([0.0], target=0.45)  # one gate: always flipped, the exact gradient
        >>> prepared = toy.prepare(toy.example_batch())
        >>> s = Bitflip().surrogate(toy, prepared, torch.tensor([[0.2, 0.7]]), None)
        >>> torch.autograd.grad(s, toy.theta)[0]  # sigmoid'(0) (L(1) - L(0)) = 0.25 * 0.1
        tensor([0.0250], dtype=torch.float64)

    References:
        Kunes, Yin, Land, Haviv, Pe'er, Tavaré (2022), arXiv 2208.06124.
    """

    def evaluations(self, graph: StochasticGraph | None = None) -> int:
        """Two: `L(b)` and `L(b)` with gate `j` flipped."""
        return 2

    def candidates(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.arange(logits.shape[-1], device=logits.device).expand(logits.shape)
        count = torch.full(logits.shape[:-1], logits.shape[-1], device=logits.device)
        return order, count

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        require_single_layer(graph, self)
        logits = prepared.logits
        gates = bernoulli_gates(logits.detach(), noise[..., :-1])
        loss, _, gate_grad = self.flip_gradient(graph, prepared, noise, gates)
        return (loss + (gate_grad * (logits - logits.detach())).sum(-1)).mean()


@register_estimator("ugc")
class UGC(_OneFlip):
    """Unbiased gradient variance clipping: bitflip-1 near the boundary, DisARM elsewhere.

    Per example, the gates `S` nearest the boundary (`boundary_gates`: the `K` smallest
    `m_i = min(p_i, 1 - p_i)` with `K m_i < 1/2`) get bitflip-1 among themselves,
    `K 1[j = i] sigmoid'(a_i) Delta_i` with `j` uniform on `S`; the others get DisARM's
    `1/2 (L(b) - L(b~)) (-1)^{b~_i} 1[b_i != b~_i] sigmoid(|a_i|)`, on the antithetic pair
    `b = 1[u < p]`, `b~ = 1[1 - u < p]`. Both parts are unbiased coordinate by coordinate, so
    the draw is. Three loss evaluations (`b`, `b~`, `b` with gate `j` flipped); parameters the
    loss touches directly get DisARM's `(grad L(b) + grad L(b~)) / 2`. With `S` empty it is
    DisARM draw by draw (under the same `u`): only when every `p = 1/2`.

    Example:
        >>> from estimator_lab.graphs.toy import ToyGraph
        >>> toy = ToyGraph([0.0, -4.0], target=0.45)  # gate 1 (m = 0.018) is bitflip's
        >>> prepared = toy.prepare(toy.example_batch())
        >>> s = UGC().surrogate(toy, prepared, torch.tensor([[0.2, 0.5, 0.3]]), None)
        >>> torch.autograd.grad(s, toy.theta)[0]  # DisARM on gate 0; exact on gate 1 (K = 1)
        tensor([0.0250, 0.0018], dtype=torch.float64)

    References:
        Kunes, Yin, Land, Haviv, Pe'er, Tavaré (2022), arXiv 2208.06124.
    """

    def evaluations(self, graph: StochasticGraph | None = None) -> int:
        """Three: `L(b)`, `L(b~)` and `L(b)` with gate `j` flipped."""
        return 3

    def candidates(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return boundary_gates(logits)

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        require_single_layer(graph, self)
        logits = prepared.logits
        uniforms = noise[..., :-1]
        pair = antithetic_gates(logits, uniforms)
        loss, antithetic_loss, flip_grad = self.flip_gradient(
            graph, prepared, noise, pair[0], extra=pair[1]
        )
        order, count = self.candidates(logits.detach())
        bitflip = order.argsort(-1) < count.unsqueeze(-1)  # the rank of gate i is below K
        difference = (loss - antithetic_loss).detach().unsqueeze(-1)
        disarm = difference * DisARM().weights(logits.detach(), uniforms, pair)
        gate_grad = torch.where(bitflip, flip_grad, disarm)
        value = (loss + antithetic_loss) / 2
        return (value + (gate_grad * (logits - logits.detach())).sum(-1)).mean()
