"""The `GradientEstimator` interface shared by Monte Carlo analysis and training."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar

import torch

from estimator_lab.graphs.base import GateTrace, PreparedBatch, StochasticGraph
from estimator_lab.graphs.gates import (  # noqa: F401  (re-exported for estimators)
    bernoulli_gates,
    bernoulli_log_prob,
    hard_bernoulli,
)

UNNAMED = {"repr": repr}
"""Field metadata that shows a hyper-parameter in `declared_repr` by its repr alone, without its
name (`ReinforceEma(EmaBaseline(decay=0.9))`)."""


def declared_repr(obj: Any) -> str:
    """`Class(name=value, ...)` from the hyper-parameters of `obj`, its declared dataclass fields.

    The fields shown (`repr=True`) appear in order of declaration as `name=repr(value)`, or as
    `metadata["repr"](value)` alone for a field whose metadata has that function (`UNNAMED`);
    an object that is no dataclass shows none. It is the identity of an estimator or baseline:
    checkpoints (`run_fingerprint`) and manifests record it, so it is generated, never written
    by hand, and attributes derived from the hyper-parameters (not fields) stay out of it.

    Example:
        >>> @dataclass(repr=False)
        ... class Scaled:
        ...     scale: float = 1.0
        ...     label: str = "x"
        ...     __repr__ = declared_repr
        >>> Scaled(2.0)
        Scaled(scale=2.0, label='x')
    """
    shown = [f for f in fields(obj) if f.repr] if is_dataclass(obj) else []
    parts = [f.metadata["repr"](getattr(obj, f.name)) if "repr" in f.metadata
             else f"{f.name}={getattr(obj, f.name)!r}" for f in shown]
    return f"{type(obj).__name__}({', '.join(parts)})"


class GradientEstimator:
    """A gradient estimator for the expected loss of a `StochasticGraph`.

    An estimator turns one explicit noise tensor into a scalar surrogate whose autograd gradient,
    with respect to every parameter of the graph and to the gate logits, is one draw of an
    estimate of the gradient of `E[mean_j L_j]` (the mean over the batch of per-example losses).
    All randomness comes from the noise argument, so a draw is a pure function of it and two
    estimators given the same noise share their gate samples (common random numbers).

    Hyper-parameters are dataclass fields: an estimator that has any is decorated with
    `@dataclass(eq=False, repr=False)` and declares them (validating and converting them in
    `__post_init__`), so its `__init__` and its repr (`declared_repr`, its identity in
    checkpoints and manifests) are generated from one declaration; equality stays identity.

    Capability flags are class attributes, as in `torch.distributions`:

    Attributes:
        name: the registry name.
        is_unbiased: whether the expected draw equals the gradient of the expected loss under
            the estimator's own gate `distribution`.
        distribution: the gate distribution whose expected loss it estimates the gradient of:
            `"bernoulli"` (`b ~ Bernoulli(sigmoid(a))`), or another (e.g. `"sts"`,
            `"noisy-rectifier"`, `"concrete"`) for estimators that change the gate.
        multilayer: whether it supports graphs with several gate layers (`graph.sample`).
        discrete_noise: whether a draw depends on its noise only through the Bernoulli gates
            `1[u < p]` it implies, copy by copy over leading noise dims (`K x B x G` noise: `K`
            gate samples); then exact moments come from enumerating gate configurations.
        supports_vmap: whether `surrogate` is a pure tensor function that
            `torch.func.vmap` can map over draws (no `.item()`, no data-dependent Python
            control flow, no in-place updates of its inputs); if not, the engine loops.
        batch_state: whether `init` computes the state from the prepared batch (the oracle
            baseline's Eq. 10 values), so `init(graph)` without it raises `ValueError`.

    State (baselines, learned control variates) is explicit: `init(graph, prepared)` returns it,
    `update` returns a new one, and `surrogate` only reads it, so the engine can freeze it while
    it measures variance and the draws stay i.i.d.
    """

    name: ClassVar[str] = ""
    is_unbiased: ClassVar[bool] = False
    distribution: ClassVar[str] = "bernoulli"
    multilayer: ClassVar[bool] = False
    discrete_noise: ClassVar[bool] = False
    supports_vmap: ClassVar[bool] = True
    batch_state: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Lets a subclass override `init` with `graph` alone (a state that does not depend on
        the batch, as before `prepared` was passed): it is wrapped to take and ignore
        `prepared` and `seed`."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("init")
        if init is not None and "prepared" not in inspect.signature(init).parameters:

            @functools.wraps(init)
            def init_from_graph(self, graph, prepared=None, *, seed=None):
                return init(self, graph)

            cls.init = init_from_graph

    def noise_shape(self, graph: StochasticGraph, prepared: PreparedBatch) -> tuple[int, ...]:
        """Shape of the uniform noise one draw consumes: by default one `U(0,1)` per gate,
        `B x G` with `G = graph.num_gates` over all layers."""
        return (prepared.batch_size, graph.num_gates)

    def quadrature_breakpoints(self, logits: torch.Tensor) -> torch.Tensor:
        """Where a draw can jump or kink as a function of each gate's uniform: a `K x G` tensor.

        Exact quadrature (`exact_moments`) splits `[0, 1]` at these points, so its integrand is
        smooth on every cell. The default, `p` and `1 - p`, covers gates `1[u < p]` and their
        antithetic partners `1[1 - u < p]`; estimators with other thresholds override it.

        Args:
            logits: the `G` gate logits of one example.
        """
        p = torch.sigmoid(logits)
        return torch.stack([p, 1 - p])

    def evaluations(self, graph: StochasticGraph | None = None) -> int | None:
        """How many loss evaluations one draw costs on `graph` (1 unless overridden).

        Without a graph: the cost where it does not depend on the graph, and `None` where it
        does (`local-expectation`, `muprop`, `indecater`), which `estimator-lab estimators`
        lists as "per graph".
        """
        return 1

    def init(
        self,
        graph: StochasticGraph,
        prepared: PreparedBatch | None = None,
        *,
        seed: int | None = None,
    ) -> Any:
        """The initial state (`None` for stateless estimators).

        An override whose state does not depend on the batch may take `graph` alone,
        `init(self, graph)`: the class wraps it to accept and ignore `prepared` and `seed`.

        Args:
            graph: the model.
            prepared: `graph.prepare(batch)` for the batch the state is for (no autograd graph
                needed); only `batch_state` estimators read it, and need it.
            seed: the run's seed, for a state drawn at random from the batch (the oracle
                baseline's Monte Carlo pilot on a graph too large to enumerate).
        """
        return None

    def check_graph(self, graph: StochasticGraph) -> None:
        """Raises `ValueError` for a graph whose gates the estimator does not take (the
        categorical and top-k bases refuse other gates; by default every graph is taken)."""

    def hard_sample(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The losses at the hard gates drawn from `noise` and those gates' log-probability.

        By default the gates are Bernoulli, `b = 1[u < p]` on every layer (`trace_log_prob`);
        the categorical and top-k bases draw their own. Score-function estimators weight the
        log-probability.

        Returns:
            two `... x B` tensors, `L(b)` and `log P(b)`, both with their autograd graphs.
        """
        trace = graph.sample(prepared, noise, hard_bernoulli)
        return trace.losses, trace_log_prob(trace)

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        """A scalar whose gradient is one draw of the estimate.

        Args:
            graph: the model.
            prepared: `graph.prepare(batch)` for a batch of `B` examples, with its autograd graph.
            noise: a tensor of shape `noise_shape(graph, prepared)`, uniform on `[0, 1)`.
            state: the current state from `init` or `update`.
        """
        raise NotImplementedError

    def update(
        self, state: Any, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor
    ) -> Any:
        """The state after observing one draw (unchanged for stateless estimators)."""
        return state

    __repr__ = declared_repr


class GateEstimator(GradientEstimator):
    """Base of the estimators that differ only in the gate they put into the graph.

    The surrogate is the mean loss of `graph.sample` with every gate layer drawn by `gate`:
    the gate's value is what the loss sees (a hard sample, or a relaxed one) and its derivative
    with respect to the logits is the estimator's backward rule (`straight_through` for the
    forms that forward a hard sample). Parameters the loss touches directly get the pathwise
    gradient at those gate values.
    """

    def gate(
        self, graph: StochasticGraph, logits: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """One gate layer's values, differentiable in `logits`, from its logits and noise."""
        raise NotImplementedError

    def surrogate(
        self, graph: StochasticGraph, prepared: PreparedBatch, noise: torch.Tensor, state: Any
    ) -> torch.Tensor:
        self.check_graph(graph)

        def gate(layer: int, logits: torch.Tensor, layer_noise: torch.Tensor) -> torch.Tensor:
            return self.gate(graph, logits, layer_noise)

        return graph.sample(prepared, noise, gate).losses.mean()


@dataclass(eq=False, repr=False)
class TemperatureEstimator(GradientEstimator):
    """Base of estimators with a relaxation temperature `tau > 0` (Concrete, ReinMax).

    Attributes:
        temperature: `tau > 0` (default 1).
    """

    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        self.temperature = float(self.temperature)


def straight_through(value: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    """`value + (smooth - stopgrad(smooth))`: the value of `value`, the gradient of `smooth`.

    Example:
        >>> a = torch.tensor(0.3, requires_grad=True)
        >>> h = straight_through(torch.tensor(1.0), 2 * a)
        >>> h.item(), torch.autograd.grad(h, a)[0].item()
        (1.0, 2.0)
    """
    return value + (smooth - smooth.detach())


def check_num_samples(estimator: GradientEstimator, num_samples: int, minimum: int) -> int:
    """`num_samples` as an `int`, or `ValueError` unless it is a whole number `>= minimum`."""
    if int(num_samples) != num_samples or num_samples < minimum:
        raise ValueError(f"{estimator.name} needs num_samples >= {minimum}, got {num_samples}")
    return int(num_samples)


def trace_log_prob(trace: GateTrace) -> torch.Tensor:
    """`log P(b)` of every gate of a trace, summed over gates and layers: a `... x B` tensor."""
    return sum(
        bernoulli_log_prob(logits, gates).sum(-1)
        for logits, gates in zip(trace.logits, trace.gates, strict=True)
    )


def require_single_layer(graph: StochasticGraph, estimator: GradientEstimator) -> None:
    """Raises `ValueError` when `estimator` (not `multilayer`) meets a multi-layer graph."""
    if len(graph.layer_sizes) > 1 and not estimator.multilayer:
        raise ValueError(
            f"estimator {estimator.name!r} supports one gate layer; "
            f"{type(graph).__name__} has layers {graph.layer_sizes}"
        )
