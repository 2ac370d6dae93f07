"""Top-k gates from explicit uniform noise, their exact law, and the `topk-toy` graph.

A top-k gate chooses a subset `S` of `k` of its `K` classes without replacement, used as a
k-hot mask `m` (`m_j = 1[j in S]`). Its noise is `K` uniforms `u`: Gumbel-top-k, the indices of
the `k` largest `theta_j + g_j` with `g_j = -log(-log u_j)`, draws `S` with the law of `k`
successive softmax draws without replacement (Plackett-Luce; Yellott 1977, Kool et al. 2019),

    P(S) = sum_{orderings s of S} prod_{t=1}^k exp(theta_{s_t}) / sum_{j not in s_<t} exp(theta_j),

so a draw is a pure function of its uniforms and estimators given the same noise share their
samples. `k = 1` is the categorical gate (`P({j}) = softmax(theta)_j`). A top-k graph holds `N`
such gates per example: logits `B x N x K`, noise `... x B x N x K`, and its loss reads masks of
shape `... x B x N x K` (k-hot, or relaxed points: non-negative coordinates summing to `k`).
The law is evaluated by summing the `k!` orderings, so `k` is kept at most `MAX_CHOSEN`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import nn

from estimator_lab.graphs.base import PreparedBatch
from estimator_lab.graphs.categorical import ClassGateGraph, gumbel_noise
from estimator_lab.graphs.spec_options import pop_number, too_many_configurations

MAX_CHOSEN = 6
"""The largest `k` a top-k gate takes: its log-probability sums `k!` (720) orderings."""


def check_topk_sizes(num_classes: int, num_chosen: int) -> None:
    """Raises `ValueError` unless `1 <= k < K` and `k <= MAX_CHOSEN` (one line, says which).

    Example:
        >>> check_topk_sizes(4, 2)
    """
    if num_classes < 2:
        raise ValueError(f"a top-k gate needs at least 2 classes, got {num_classes}")
    if not 1 <= num_chosen < num_classes:
        raise ValueError(f"a top-k gate chooses 1 <= k < {num_classes} classes, got k={num_chosen}")
    if num_chosen > MAX_CHOSEN:
        raise ValueError(f"a top-k gate chooses at most k={MAX_CHOSEN} (its law sums k! "
                         f"orderings), got k={num_chosen}")


def topk_gates(logits: torch.Tensor, noise: torch.Tensor, k: int) -> torch.Tensor:
    """k-hot masks of the `k` largest `theta_j + g_j` (Gumbel-top-k), without gradient.

    Args:
        logits: `... x K` logits `theta`.
        noise: uniforms of the same (or a broadcastable) shape.
        k: classes chosen per gate.

    Returns:
        a k-hot tensor of the broadcast shape, in the dtype of `logits`.

    Example:
        >>> topk_gates(torch.zeros(4), torch.tensor([0.2, 0.9, 0.5, 0.7]), 2)
        tensor([0., 1., 0., 1.])
    """
    scores = logits.detach() + gumbel_noise(noise)
    index = scores.topk(k, -1).indices
    return torch.zeros_like(scores).scatter(-1, index, 1.0)


def _orderings(k: int, device) -> torch.Tensor:
    """The `k! x k` permutations of `0 .. k-1`."""
    return torch.tensor(list(itertools.permutations(range(k))), device=device)


def topk_log_prob(logits: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """`log P(S | theta)` of k-hot masks (module docstring), differentiable in `logits`.

    The denominator of step `t` of an ordering `s` is the mass of the classes not yet drawn:
    those outside `S` and `s_t .. s_k`, so it is `logaddexp(lse_{j not in S} theta_j,
    lse_{r >= t} theta_{s_r})`, stable in float64 and float32.

    Args:
        logits: `... x K` logits.
        mask: `... x K` k-hot masks (broadcast with `logits`; read without gradient).
        k: the subset size, `1 <= k < K`.

    Returns:
        a tensor of the broadcast shape without its last dim.

    Example:
        >>> p = torch.tensor([0.5, 0.3, 0.2])
        >>> P = topk_log_prob(p.log(), torch.tensor([1.0, 1.0, 0.0]), 2).exp()
        >>> round(float(P), 6), round(0.5 * 0.3 / 0.5 + 0.3 * 0.5 / 0.7, 6)
        (0.514286, 0.514286)
    """
    logits, mask = torch.broadcast_tensors(logits, mask.detach())
    chosen = logits.gather(-1, mask.topk(k, -1).indices)  # ... x k
    ordered = chosen[..., _orderings(k, logits.device)]  # ... x k! x k
    outside = torch.where(mask > 0, -torch.inf, logits).logsumexp(-1)  # ...
    suffix = ordered.flip(-1).logcumsumexp(-1).flip(-1)  # mass of s_t .. s_k
    log_den = torch.logaddexp(outside[..., None, None], suffix)
    return (ordered - log_den).sum(-1).logsumexp(-1)


def topk_subsets(
    num_classes: int, num_chosen: int, *, dtype=torch.float64, device=None
) -> torch.Tensor:
    """Every `k`-subset of `K` classes as a `C(K, k) x K` k-hot tensor, in lexicographic order.

    Example:
        >>> topk_subsets(3, 2)
        tensor([[1., 1., 0.],
                [1., 0., 1.],
                [0., 1., 1.]], dtype=torch.float64)
    """
    combos = torch.tensor(list(itertools.combinations(range(num_classes), num_chosen)),
                          device=device)
    masks = torch.zeros(combos.shape[0], num_classes, dtype=dtype, device=device)
    return masks.scatter(-1, combos, 1.0)


def inclusion_probabilities(logits: torch.Tensor, k: int) -> torch.Tensor:
    """`pi_j = P(j in S) = sum_{S containing j} P(S)`, exactly, differentiable.

    Sums the law over all `C(K, k)` subsets (`... x C(K, k)` log-probabilities at once), so it
    is meant for the small `K` of routers and toys. `sum_j pi_j = k`; `k = 1` gives the softmax.

    Args:
        logits: `... x K` logits.
        k: the subset size.

    Returns:
        a `... x K` tensor.

    Example:
        >>> inclusion_probabilities(torch.zeros(4), 2)
        tensor([0.5000, 0.5000, 0.5000, 0.5000])
    """
    subsets = topk_subsets(logits.shape[-1], k, dtype=logits.dtype, device=logits.device)
    log_probs = topk_log_prob(logits.unsqueeze(-2), subsets, k)  # ... x C
    return (log_probs.exp().unsqueeze(-1) * subsets).sum(-2)


def relaxed_topk(scores: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """The successive-softmax relaxation of the top-k mask of `scores`.

    `alpha_1 = scores`, `a_t = softmax(alpha_t / tau)`, `alpha_{t+1} = alpha_t + log(1 - a_t)`,
    and the relaxed mask is `sum_{t=1}^k a_t`: non-negative coordinates summing to `k`, tending
    to the k-hot mask of the `k` largest scores as `tau -> 0` (Plötz and Roth 2018; Xie and
    Ermon 2019, "Reparameterizable subset sampling via continuous relaxations", section 4.2).
    A coordinate can exceed 1 at moderate `tau` (a dominant score keeps about half of step 2's
    mass): the published relaxation, not a projection onto the k-subset polytope.

    Args:
        scores: `... x K` perturbed logits `theta + g`.
        k: the subset size.
        temperature: `tau > 0`.

    Returns:
        a `... x K` tensor, differentiable in `scores`.

    Example:
        >>> relaxed_topk(torch.tensor([3.0, 0.0, 2.0, -1.0]), 2, 0.1).round(decimals=3)
        tensor([1., 0., 1., 0.])
    """
    tiny = torch.finfo(scores.dtype).tiny
    alpha, total = scores, torch.zeros_like(scores)
    for _ in range(k):
        step = torch.softmax(alpha / temperature, -1)
        total = total + step
        alpha = alpha + torch.log((1 - step).clamp_min(tiny))
    return total


class TopKGraph(ClassGateGraph):
    """A `StochasticGraph` whose gates are `num_gates` top-k gates choosing `num_chosen` of
    `num_classes` classes.

    Subclasses implement `prepare(batch)` with `B x N x K` logits and `loss(prepared, masks)`
    for `... x B x N x K` masks. One gate layer.

    Attributes:
        distribution: `"topk"`, the flag estimators and exact sweeps dispatch on.
        num_gates: `N`, top-k gates per example.
        num_classes: `K`, classes per gate.
        num_chosen: `k`, classes chosen per gate (`1 <= k < K`).
    """

    distribution: ClassVar[str] = "topk"
    num_classes: int
    num_chosen: int

    @property
    def num_configurations(self) -> int:
        """`C(K, k)^N`, the configurations one example's gates can take."""
        return math.comb(self.num_classes, self.num_chosen) ** self.num_gates

    def hard_gate(self, layer: int, logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Gate function for `sample`: k-hot Gumbel-top-k masks, no gradient path."""
        return topk_gates(logits, noise, self.num_chosen)

    def log_prob(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """`log P(S)` summed over the `N` gates: `... x B x N x K` -> `... x B`."""
        return topk_log_prob(logits, masks, self.num_chosen).sum(-1)

    def gate_flip_losses(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """Not defined for top-k gates (a flip would break the k-hot constraint)."""
        raise NotImplementedError(f"{type(self).__name__} has top-k gates: no Bernoulli flips")


class TopKToy(TopKGraph):
    """`N` independent top-k gates and loss `(1/N) sum_i ((1/k) sum_j m_ij c_j - t)^2`.

    `c_j = j / (K - 1)`, so the loss is the squared distance of the mean class value of each
    chosen subset to `t`: quadratic in the mask, with cross terms between chosen classes
    (straight-through is biased on it). With `k = 1` it is `cat-toy` on the same logits. The
    logits `theta` (`N x K`) are the parameter; the batch `(x,)`, `x` a `B x 0` tensor, only
    says how many independent copies.

    Args:
        logits: the initial `N x K` logits.
        num_chosen: `k`, `1 <= k < K`.
        target: `t`, a finite number.

    Example:
        >>> toy = TopKToy(torch.zeros(1, 3), num_chosen=2, target=0.5)
        >>> toy.loss(toy.prepare(toy.example_batch()), torch.ones(1, 1, 3))
        tensor([0.0625])
    """

    def __init__(self, logits: torch.Tensor, num_chosen: int = 2, target: float = 0.45) -> None:
        super().__init__()
        logits = torch.as_tensor(logits, dtype=torch.float64)
        if logits.dim() != 2 or logits.shape[0] < 1:
            raise ValueError(f"topk-toy logits must be N x K with N >= 1, got "
                             f"{tuple(logits.shape)}")
        check_topk_sizes(logits.shape[1], num_chosen)
        if not math.isfinite(target):
            raise ValueError(f"topk-toy target t must be finite, got {target}")
        self.theta = nn.Parameter(logits.clone())
        self.target = float(target)
        self.num_gates, self.num_classes = logits.shape
        self.num_chosen = int(num_chosen)

    @classmethod
    def seeded(cls, num_gates: int, num_classes: int, num_chosen: int = 2, target: float = 0.45,
               seed: int = 0) -> TopKToy:
        """A toy with `N x K` logits drawn from `N(0, 1)` by a seeded generator."""
        if num_gates < 1:
            raise ValueError(f"topk-toy needs n >= 1 gates, got n={num_gates}")
        check_topk_sizes(num_classes, num_chosen)
        generator = torch.Generator().manual_seed(seed)
        logits = torch.randn(num_gates, num_classes, generator=generator, dtype=torch.float64)
        return cls(logits, num_chosen, target)

    def example_batch(self, batch_size: int = 1) -> tuple[torch.Tensor]:
        """`batch_size` copies of the (input-free) problem."""
        return (torch.zeros(batch_size, 0, dtype=self.theta.dtype),)

    def prepare(self, batch: tuple[torch.Tensor, ...]) -> PreparedBatch:
        (x,) = batch
        return PreparedBatch(logits=self.theta.expand(x.shape[0], -1, -1))

    def loss(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        k = self.num_classes
        values = torch.arange(k, dtype=gates.dtype, device=gates.device) / (k - 1)
        mean_value = (gates * values).sum(-1) / self.num_chosen  # ... x B x N
        return (mean_value - self.target).square().mean(-1)


def too_many_topk(num_gates: int, num_classes: int, num_chosen: int,
                  max_configurations: int) -> str | None:
    """Why `C(K, k)^N` configurations exceed `max_configurations` (one line), else `None`.

    Example:
        >>> too_many_topk(2, 4, 2, 100) is None
        True
    """
    return too_many_configurations(
        f"{num_gates:,} top-{num_chosen} gates of {num_classes:,} classes",
        math.comb(num_classes, num_chosen), f"C({num_classes},{num_chosen})", num_gates,
        max_configurations,
    )


def parse_topk_toy(
    options: Mapping[str, str],
    *,
    max_configurations: int,
    seed: int = 0,
) -> tuple[TopKToy, tuple[torch.Tensor]]:
    """Builds `topk-toy:n=N,classes=K,k=k,t=T,batch=B` from its parsed options.

    Args:
        options: the spec's options; the keys read are removed from a mutable mapping, so the
            caller can report the ones left as unknown.
        max_configurations: the enumeration guard on `C(K, k)^N` (checked before building).
        seed: seeds the logits.

    Returns:
        the graph (float64) and its batch.

    Raises:
        ValueError: for a non-number, `n < 1`, sizes `check_topk_sizes` refuses, a non-finite
            `t`, `batch < 1`, or too many configurations.

    Example:
        >>> graph, (x,) = parse_topk_toy({"n": "2", "classes": "4", "k": "2"},
        ...                             max_configurations=2**22)
        >>> graph.theta.shape, graph.num_configurations
        (torch.Size([2, 4]), 36)
    """
    options = options if isinstance(options, dict) else dict(options)
    n = pop_number(options, "n", 2, graph="topk-toy")
    classes = pop_number(options, "classes", 4, graph="topk-toy")
    k = pop_number(options, "k", 2, graph="topk-toy")
    target = pop_number(options, "t", 0.45, float, graph="topk-toy")
    batch_size = pop_number(options, "batch", 1, graph="topk-toy", minimum=1)
    if n < 1:
        raise ValueError(f"topk-toy needs n >= 1 gates, got n={n}")
    check_topk_sizes(classes, k)
    refusal = too_many_topk(n, classes, k, max_configurations)
    if refusal is not None:
        raise ValueError(refusal)
    graph = TopKToy.seeded(n, classes, k, target, seed)
    return graph, graph.example_batch(batch_size)
