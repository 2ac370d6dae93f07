"""Categorical gates from explicit uniform noise, and the `cat-toy` graph with its closed form.

A categorical gate takes a class `z` in `{0 .. K-1}`, used one-hot (`D = e_z`), with
`p = softmax(theta)` over its `K` logits. Its noise is `K` uniforms `u`: the Gumbel-max trick
`z = argmax_j (theta_j + g_j)`, `g_j = -log(-log u_j)`, gives `P(z = j) = p_j`, so a draw stays a
pure function of its uniforms (seed, draw index) and estimators given the same noise share their
samples. A categorical graph holds `N` such gates per example: its logits are a `B x N x K`
tensor (`PreparedBatch.logits`), its noise `... x B x N x K`, and its loss reads gates of shape
`... x B x N x K` (one-hot, or relaxed points of the simplex for relaxation estimators). Bernoulli
graphs are untouched: a Bernoulli gate is the `K = 2` case in maths, not in storage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import nn

from estimator_lab.configurations import DEFAULT_MAX_CONFIGURATIONS, EnumerationTooLarge
from estimator_lab.graphs.base import GateFunction, GateTrace, PreparedBatch, StochasticGraph
from estimator_lab.graphs.spec_options import pop_number, too_many_configurations


def gate_distribution(graph: StochasticGraph) -> str:
    """The distribution of a graph's gates: its `distribution` flag, `"bernoulli"` for the
    graphs that predate the flag (every Bernoulli graph).

    Example:
        >>> gate_distribution(CategoricalToy.seeded(1, 2)), gate_distribution(nn.Module())
        ('categorical', 'bernoulli')
    """
    return getattr(graph, "distribution", "bernoulli")


def gumbel_noise(noise: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel samples `g = -log(-log u)` from uniforms `u`, clamped into
    `[tiny, 1 - eps / 2]` first so the result is finite.

    Example:
        >>> gumbel_noise(torch.tensor([0.5]))  # -log(log 2)
        tensor([0.3665])
    """
    info = torch.finfo(noise.dtype)
    return -torch.log(-torch.log(noise.clamp(info.tiny, 1 - info.eps / 2)))


def one_hot_argmax(scores: torch.Tensor) -> torch.Tensor:
    """The one-hot `e_{argmax}` of the last dim, in the dtype of `scores` (vmap-safe)."""
    index = scores.argmax(-1, keepdim=True)
    return torch.zeros_like(scores).scatter(-1, index, 1.0)


def categorical_gates(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One-hot gates `e_z`, `z = argmax_j (theta_j + g_j)` (Gumbel-max), without gradient.

    Args:
        logits: `... x K` logits `theta`.
        noise: uniforms of the same (or a broadcastable) shape.

    Returns:
        a one-hot tensor of the broadcast shape, in the dtype of `logits`.

    Example:
        >>> categorical_gates(torch.zeros(3), torch.tensor([0.2, 0.9, 0.5]))
        tensor([0., 1., 0.])
    """
    return one_hot_argmax(logits.detach() + gumbel_noise(noise))


def categorical_log_prob(logits: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """`log P(z | theta) = sum_j D_j log softmax(theta)_j` per gate: `... x K` -> `...`."""
    return (gates * torch.log_softmax(logits, -1)).sum(-1)


def hard_categorical(layer: int, logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Gate function for `CategoricalGraph.sample`: one-hot gates, no gradient path."""
    return categorical_gates(logits, noise)


def softmax_jacobian_product(probs: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """`J(pi) x = pi * x - pi (pi . x)` over the last dim, `J(pi) = diag(pi) - pi pi^T`.

    `J(softmax(theta))` is the (symmetric) Jacobian of the softmax at `theta`.

    Example:
        >>> softmax_jacobian_product(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))
        tensor([ 0.2500, -0.2500])
    """
    return probs * vector - probs * (probs * vector).sum(-1, keepdim=True)


def conditional_gumbel(logits: torch.Tensor, gates: torch.Tensor, noise: torch.Tensor):
    """Perturbed logits `x = theta + g` drawn from their law given `argmax x = z`.

    With `E = -log v` standard exponentials and `Z = sum_l exp(theta_l)`, the top score is
    `x_z = log Z - log E_z` (a Gumbel of location `log Z`) and every other one is a Gumbel of
    location `theta_k` truncated below `x_z`: `x_k = -log(E_k exp(-theta_k) + E_z / Z)`
    (Paulus et al. 2021, Eq. 9 and Appendix A; Maddison et al. 2014). For uniform `v` the
    result has the conditional law of `theta + g` given `z`, so averaging a function of it
    over `v` is the conditional expectation used by Gumbel-Rao. For every `v`,
    `exp(-x_k) = E_k exp(-theta_k) + exp(-x_z) > exp(-x_z)`, so `x_z` is the strict maximum.

    Args:
        logits: `... x K` logits `theta`.
        gates: the one-hot `e_z`, broadcastable to `logits`.
        noise: `... x K` uniforms `v` in `[0, 1)`.

    Returns:
        the `... x K` perturbed logits (differentiable in `logits`; detach as needed).

    Example:
        >>> x = conditional_gumbel(torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]),
        ...                        torch.full((3,), 0.5))
        >>> int(x.argmax())
        1
    """
    info = torch.finfo(noise.dtype)
    exponential = -torch.log(noise.clamp(info.tiny, 1 - info.eps / 2))
    log_z = torch.logsumexp(logits, -1, keepdim=True)
    chosen = (gates * exponential).sum(-1, keepdim=True)
    top = log_z - torch.log(chosen)
    below = -torch.logaddexp(torch.log(exponential) - logits, torch.log(chosen) - log_z)
    return torch.where(gates > 0, top, below)


def gumbel_uniforms(logits: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """The uniforms `u = exp(-exp(-(x - theta)))` whose Gumbel-max scores are `perturbed`."""
    return torch.exp(-torch.exp(-(perturbed - logits)))


class ClassGateGraph(StochasticGraph):
    """A `StochasticGraph` with one layer of `num_gates` gates over `num_classes` classes each,
    whose values are `K`-dim (the one-hot class of a categorical gate, the k-hot mask of a
    top-k gate): logits `B x N x K`, noise and gates `... x B x N x K`.

    Attributes:
        num_gates: `N`, gates per example.
        num_classes: `K`, classes per gate.
    """

    num_classes: int

    def sample(
        self, prepared: PreparedBatch, noise: torch.Tensor, gate_fn: GateFunction
    ) -> GateTrace:
        """Draws the gates with `gate_fn(0, logits, noise)` from `... x B x N x K` noise."""
        logits = prepared.logits
        if logits.dim() < noise.dim():
            logits = logits.expand(noise.shape)
        gates = gate_fn(0, logits, noise)
        return GateTrace([logits], [gates], self.loss(prepared, gates))


class CategoricalGraph(ClassGateGraph):
    """A `StochasticGraph` whose gates are `num_gates` categoricals of `num_classes` classes.

    Subclasses implement `prepare(batch)` with `B x N x K` logits and `loss(prepared, gates)`
    for `... x B x N x K` gates (one-hot when drawn by `hard_categorical`). One gate layer.

    Attributes:
        distribution: `"categorical"`, the flag estimators and exact sweeps dispatch on.
        num_gates: `N`, categorical gates per example.
        num_classes: `K >= 2`, classes per gate.
    """

    distribution: ClassVar[str] = "categorical"
    num_classes: int

    @property
    def num_configurations(self) -> int:
        """`K^N`, the configurations one example's gates can take."""
        return self.num_classes**self.num_gates

    def category_losses(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """Losses with gate `i` set to class `k`, the other gates held at `gates`.

        This generic version evaluates the `N K` configurations at once (memory
        `N K x ... x B x N x K`).

        Args:
            prepared: the output of `prepare` for a batch of `B` examples.
            gates: a `... x B x N x K` tensor of one-hot gates.

        Returns:
            a `... x B x N x K` tensor: entry `[..., j, i, k]` is example `j`'s loss with gate
            `i` set to `e_k`.
        """
        n, k = self.num_gates, self.num_classes
        eye_n = torch.eye(n, dtype=gates.dtype, device=gates.device)
        eye_k = torch.eye(k, dtype=gates.dtype, device=gates.device)
        lead = [1] * (gates.dim() - 2)
        row = eye_n.view(n, 1, *lead, n, 1)  # which gate is replaced
        value = eye_k.view(1, k, *lead, 1, k)  # by which class
        replaced = gates * (1 - row) + row * value  # N x K x ... x B x N x K
        return self.loss(prepared, replaced).movedim(0, -1).movedim(0, -1)

    def gate_flip_losses(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        """Not defined for categorical gates (see `category_losses`)."""
        raise NotImplementedError(
            f"{type(self).__name__} has categorical gates: use category_losses, not the "
            f"Bernoulli gate_flip_losses"
        )


class CategoricalToy(CategoricalGraph):
    """`N` independent categoricals with `K` classes and loss `(1/N) sum_i (z_i/(K-1) - t)^2`.

    The logits `theta` (`N x K`) are the parameter. The loss reads the gates through the
    embedding `z_i/(K-1) = sum_j D_ij c_j`, `c_j = j / (K - 1)`, so it is quadratic in the
    one-hot `D` (relaxed gates see the same formula). With `v_j = (c_j - t)^2`,
    `E[L] = (1/N) sum_i sum_j p_ij v_j` and

        dE[L]/dtheta_ij = (1/N) p_ij (v_j - sum_l p_il v_l).

    The batch is `(x,)` with `x` a `B x 0` tensor: it only says how many independent copies.

    Args:
        logits: the initial `N x K` logits (`K >= 2`).
        target: `t`, a finite number.

    Example:
        >>> toy = CategoricalToy(torch.zeros(1, 3), target=0.5)  # v = (1/4, 0, 1/4)
        >>> toy.true_gradient()["theta"]
        tensor([[ 0.0278, -0.0556,  0.0278]], dtype=torch.float64)
    """

    def __init__(self, logits: torch.Tensor, target: float = 0.45) -> None:
        super().__init__()
        logits = torch.as_tensor(logits, dtype=torch.float64)
        if logits.dim() != 2 or logits.shape[0] < 1:
            raise ValueError(f"cat-toy logits must be N x K with N >= 1, got {tuple(logits.shape)}")
        if logits.shape[1] < 2:
            raise ValueError(f"cat-toy needs k >= 2 classes, got k={logits.shape[1]}")
        if not math.isfinite(target):
            raise ValueError(f"cat-toy target t must be finite, got {target}")
        self.theta = nn.Parameter(logits.clone())
        self.target = float(target)
        self.num_gates, self.num_classes = logits.shape

    @classmethod
    def seeded(
        cls, num_gates: int, num_classes: int, target: float = 0.45, seed: int = 0
    ) -> CategoricalToy:
        """A toy with `N x K` logits drawn from `N(0, 1)` by a seeded generator."""
        if num_gates < 1:
            raise ValueError(f"cat-toy needs n >= 1 gates, got n={num_gates}")
        if num_classes < 2:
            raise ValueError(f"cat-toy needs k >= 2 classes, got k={num_classes}")
        generator = torch.Generator().manual_seed(seed)
        logits = torch.randn(num_gates, num_classes, generator=generator, dtype=torch.float64)
        return cls(logits, target)

    def example_batch(self, batch_size: int = 1) -> tuple[torch.Tensor]:
        """`batch_size` copies of the (input-free) problem."""
        return (torch.zeros(batch_size, 0, dtype=self.theta.dtype),)

    def class_values(self) -> torch.Tensor:
        """`c_j = j / (K - 1)`, a `K` tensor in the dtype of `theta`."""
        k = self.num_classes
        return torch.arange(k, dtype=self.theta.dtype, device=self.theta.device) / (k - 1)

    def prepare(self, batch: tuple[torch.Tensor, ...]) -> PreparedBatch:
        (x,) = batch
        return PreparedBatch(logits=self.theta.expand(x.shape[0], -1, -1))

    def loss(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        z = (gates * self.class_values()).sum(-1)  # ... x B x N
        return (z - self.target).square().mean(-1)

    def expected_loss(self) -> torch.Tensor:
        """`E[L]` in closed form (a 0-dim tensor, differentiable)."""
        values = (self.class_values() - self.target).square()
        return (torch.softmax(self.theta, -1) * values).sum(-1).mean()

    @torch.no_grad()
    def true_gradient(self) -> dict[str, torch.Tensor]:
        """The closed-form gradient `(1/N) p_ij (v_j - sum_l p_il v_l)` by parameter name."""
        p = torch.softmax(self.theta, -1)
        values = (self.class_values() - self.target).square()
        return {"theta": softmax_jacobian_product(p, values.expand_as(p)) / self.num_gates}


def parse_cat_toy(
    options: Mapping[str, str],
    *,
    seed: int = 0,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
) -> tuple[CategoricalToy, tuple[torch.Tensor]]:
    """Builds `cat-toy:n=N,k=K,t=T,batch=B` from its parsed `key=value` options.

    Args:
        options: the spec's options; the keys read (`n`, `k`, `t`, `batch`) are removed from a
            mutable mapping, so the caller can report the ones left as unknown.
        seed: seeds the logits.
        max_configurations: the enumeration guard on `K^N`.

    Returns:
        the graph (float64) and its batch.

    Raises:
        ValueError: for a non-number, `n < 1`, `k < 2`, a non-finite `t`, `batch < 1`, or
            (`EnumerationTooLarge`) `K^N` above `max_configurations`.

    Example:
        >>> graph, (x,) = parse_cat_toy({"n": "3", "k": "4", "t": "0.45"})
        >>> graph.theta.shape, x.shape
        (torch.Size([3, 4]), torch.Size([1, 0]))
    """
    options = options if isinstance(options, dict) else dict(options)
    n = pop_number(options, "n", 2, graph="cat-toy")
    k = pop_number(options, "k", 3, graph="cat-toy")
    target = pop_number(options, "t", 0.45, float, graph="cat-toy")
    batch_size = pop_number(options, "batch", 1, graph="cat-toy", minimum=1)
    if n >= 1 and k >= 2:  # smaller sizes get CategoricalToy's own error
        refusal = too_many_categorical(n, k, max_configurations)
        if refusal is not None:
            raise EnumerationTooLarge(refusal)
    graph = CategoricalToy.seeded(n, k, target, seed)
    return graph, graph.example_batch(batch_size)


def too_many_categorical(num_gates: int, num_classes: int, max_configurations: int) -> str | None:
    """Why `K^N` configurations exceed `max_configurations` (one line), else `None`.

    Example:
        >>> too_many_categorical(3, 4, 64) is None, too_many_categorical(3, 4, 63) is None
        (True, False)
    """
    return too_many_configurations(f"{num_gates:,} categorical gates of {num_classes:,} classes",
                                   num_classes, str(num_classes), num_gates, max_configurations)
