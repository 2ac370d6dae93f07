"""`check_estimator`: the contract every gradient estimator, built-in or plugin, must pass.

Modelled on scikit-learn's `check_estimator`: one call runs a battery of checks on an estimator
instance and returns a `ContractReport` that says, check by check and in plain words, what holds
and what does not. The checks:

1. `flags`: the capability flags have the right types; `evaluations(graph)` is a positive int.
2. `shapes`: per-draw gradients are `K x param.shape` (gate logits `K x B x G_0`) and finite on
   small conditional networks (`B` in {1, 3}, `G` in {1, 5}); the surrogate is a finite 0-dim
   tensor; on a two-layer sigmoid belief net a `multilayer` estimator works and a single-layer
   one raises `ValueError`.
3. `dtypes`: float32 and float64 both work, the outputs have the graph's dtype, and the two
   agree to float32 precision under the same noise.
4. `devices`: the draws on each device (CUDA when available) equal the CPU draws to rounding.
5. `determinism`: the same noise gives bitwise-identical draws twice; `vmap` and the loop agree.
6. `no_leaks`: drawing leaves the graph's parameters and `.grad` alone; state tensors never
   require grad, `surrogate` does not write into them or leak gradients into them, and `update`
   returns a new state rather than editing its input; an unused parameter gets an exactly zero
   gradient; the draws do not depend on the global RNG.
7. `unbiasedness`: for Bernoulli-gate estimators, the Monte Carlo mean of `num_draws` draws
   against the exact gradient (enumeration) on a conditional network with 4 gates and, for
   multi-layer estimators, a two-layer sigmoid belief net, with Holm-corrected per-coordinate
   z-tests over every coordinate of every graph (gate logits and all parameters). An estimator
   that claims `is_unbiased` fails when any coordinate is flagged; for one that does not, the
   measured relative bias is reported (the check passes).

Note [Randomized statistical tests]: only `unbiasedness` is random, and its seed is fixed, so a
report is deterministic. Its false-failure rate, the probability over seeds that a correct
unbiased estimator fails, is at most `alpha` (Holm controls the family-wise error over all
coordinates of all graphs; up to the normal approximation of a mean of `num_draws` bounded
draws). Power: a coordinate whose bias exceeds `(z_{alpha / 2d} + z_{0.999}) sigma / sqrt(N)`
(`sigma` the per-draw standard deviation, `d` coordinates, `N` draws) is flagged with probability
at least 0.999. With the defaults (`N = 2000`, `d = 122` for a multi-layer estimator,
`alpha = 1e-3`) that threshold is `(4.46 + 3.09) / sqrt(2000) = 0.17 sigma`. REINFORCE, the
noisiest unbiased estimator here, has `|g_i| / sigma_i` up to 0.32 on the conditional graph's
gate logits (0.11 on the belief net's second-layer weights), so a sign flip (bias
`2 |g_i| = 0.64 sigma_i`, expected `z = 28`) is caught with a wide margin. So is a baseline
that depends on the sampled gate: `c_i = L(b) b_i` has bias `-p_i (1 - p_i) E[L | b_i = 1] / B`
on the logit of example `j`'s gate `i`, while the gradient is
`p_i (1 - p_i) (E[L | b_i = 1] - E[L | b_i = 0]) / B`, typically smaller for a positive loss.
Doubling `num_draws` doubles the check's time (about a second per estimator at the default on
two CPU cores) and divides the detectable bias by `sqrt(2)`.

References:
    scikit-learn, `sklearn.utils.estimator_checks.check_estimator`;
    PyTorch, `torch/testing/_internal/common_utils.py`, Note [Randomized statistical tests];
    Holm (1979), "A simple sequentially rejective multiple test procedure".
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats as scipy_stats
from torch import nn

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.registry import available, get_estimator
from estimator_lab.exact.enumeration import exact_gradient
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.conditional import ConditionalConfig, ConditionalNetwork
from estimator_lab.graphs.sbn import SigmoidBeliefNet
from estimator_lab.montecarlo.accumulators import MomentAccumulator, Moments
from estimator_lab.montecarlo.engine import GATE_LOGITS, gradient_draws
from estimator_lab.noise import uniform_noise
from estimator_lab.stats.unbiasedness import rounding_scale, zero_mean_test

CHECKS = ("flags", "shapes", "dtypes", "devices", "determinism", "no_leaks", "unbiasedness")
DEFAULT_NUM_DRAWS = 2000  # see the module docstring for the power this buys
DEFAULT_ALPHA = 1e-3
POWER = 0.999  # the detection probability the stated detectable bias refers to
CHUNK_SIZE = 1000  # draws held in memory at once by the unbiasedness check
NUM_STATE_UPDATES = 8  # `update` calls before the unbiasedness check freezes the state
DRAWS_PER_SHAPE_CHECK = 3
FLOAT64_TOLERANCE = 1e-9  # largest difference / largest draw for float64 rounding differences
FLOAT32_TOLERANCE = 1e-4  # the same between float32 and float64 draws (float32 eps is 1.2e-7)

Batch = tuple[torch.Tensor, ...]
EstimatorFactory = Callable[[StochasticGraph, Batch], GradientEstimator]


class ContractViolation(AssertionError):
    """An estimator broke its contract; the message lists every failed check and why."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: the check, one of `CHECKS`.
        passed: whether the estimator satisfies it.
        message: what was found, in plain words (why it failed, or what was verified).
        details: measured numbers and, for a check that raised, the traceback.
    """

    name: str
    passed: bool
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ContractReport:
    """The results of `check_estimator` for one estimator.

    Attributes:
        estimator: the estimator's name and construction (`repr`).
        results: one `CheckResult` per check run, in order.
    """

    estimator: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        """The checks that failed."""
        return tuple(result for result in self.results if not result.passed)

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"no check {name!r} in this report (ran {[r.name for r in self.results]})")

    def __iter__(self) -> Iterator[CheckResult]:
        return iter(self.results)

    def summary(self) -> str:
        """One line per check: `PASS`/`FAIL`, its name and its message."""
        return "\n".join(
            f"{'PASS' if r.passed else 'FAIL'} {r.name}: {r.message}" for r in self.results
        )

    def raise_if_failed(self) -> None:
        """Raises `ContractViolation` listing every failed check and why, if any failed."""
        if self.passed:
            return
        lines = "\n".join(f"- {r.name}: {r.message}" for r in self.failures)
        raise ContractViolation(
            f"{self.estimator} breaks the estimator contract "
            f"({len(self.failures)} of {len(self.results)} checks failed):\n{lines}"
        )


@dataclass(frozen=True)
class _Settings:
    dtypes: tuple[torch.dtype, ...]
    devices: tuple[torch.device, ...]
    num_draws: int
    alpha: float
    seed: int

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the checks that need one: float64 when asked for, else the first."""
        return torch.float64 if torch.float64 in self.dtypes else self.dtypes[0]


class _Subject:
    """The estimator under test: an instance, or a factory for graph-dependent estimators."""

    def __init__(self, estimator: GradientEstimator | EstimatorFactory) -> None:
        if isinstance(estimator, GradientEstimator):
            self.instance, self.factory = estimator, None
        elif callable(estimator):
            self.instance, self.factory = None, estimator
        else:
            raise TypeError(
                f"check_estimator needs a GradientEstimator instance or a factory "
                f"(graph, batch) -> GradientEstimator, got {estimator!r}"
            )

    def build(self, graph: StochasticGraph, batch: Batch) -> GradientEstimator:
        if self.instance is not None:
            return self.instance
        estimator = self.factory(graph, batch)
        if not isinstance(estimator, GradientEstimator):
            raise TypeError(f"the factory returned {estimator!r}, not a GradientEstimator")
        return estimator

    def label(self) -> str:
        if self.instance is not None:
            name = getattr(self.instance, "name", "")
            return f"{name!r} ({self.instance!r})" if name else repr(self.instance)
        return f"factory {getattr(self.factory, '__qualname__', repr(self.factory))}"


class _Failed(Exception):
    """Raised inside a check to fail it with a message (and optional details)."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


def check_estimator(
    estimator: GradientEstimator | EstimatorFactory,
    *,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    devices: Sequence[torch.device | str] | None = None,
    num_draws: int = DEFAULT_NUM_DRAWS,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    checks: Sequence[str] | None = None,
) -> ContractReport:
    """Runs the estimator contract (module docstring) and reports every check.

    The graphs are small and fixed (seeded constructions, the same for every call); `seed`
    only chooses the noise. A check that raises fails with the exception as its message.
    Call `report.raise_if_failed()` in a test to turn failures into a `ContractViolation`.

    Args:
        estimator: a `GradientEstimator` instance, or a factory `(graph, batch) -> estimator`
            for estimators built for a graph and batch (e.g. `reinforce-oracle`, whose baseline
            values are expectations over one batch's gates).
        dtypes: floating dtypes that must work (the first two are compared).
        devices: devices that must give the CPU's draws (default: CPU, and CUDA if available).
        num_draws: Monte Carlo draws per graph in the unbiasedness check (see the module
            docstring for the bias it detects).
        alpha: the unbiasedness check's false-failure rate (family-wise, Holm).
        seed: the noise seed of the draws.
        checks: names of the checks to run (default: all of `CHECKS`).

    Returns:
        a `ContractReport`.

    Example:
        >>> from estimator_lab.estimators import get_estimator
        >>> report = check_estimator(get_estimator("reinforce"), checks=["flags", "shapes"])
        >>> report.passed
        True
        >>> print(report.summary().splitlines()[0][:60])
        PASS flags: is_unbiased=True, multilayer=True, supports_vmap
    """
    selected = CHECKS if checks is None else tuple(checks)
    unknown = [name for name in selected if name not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; the checks are {list(CHECKS)}")
    dtypes = tuple(dtypes)
    if not dtypes or any(not d.is_floating_point for d in dtypes):
        raise ValueError(f"dtypes must be floating dtypes, got {dtypes}")
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if num_draws < 2 or not 0 < alpha < 1 or seed < 0:
        raise ValueError(
            f"need num_draws >= 2, 0 < alpha < 1 and seed >= 0, got {num_draws}, {alpha}, {seed}"
        )
    settings = _Settings(dtypes, tuple(torch.device(d) for d in devices), num_draws, alpha, seed)
    subject = _Subject(estimator)
    runners = {
        "flags": _check_flags,
        "shapes": _check_shapes,
        "dtypes": _check_dtypes,
        "devices": _check_devices,
        "determinism": _check_determinism,
        "no_leaks": _check_no_leaks,
        "unbiasedness": _check_unbiasedness,
    }
    results = tuple(_run(name, runners[name], subject, settings) for name in selected)
    return ContractReport(subject.label(), results)


def parametrize_estimators(names: Sequence[str] | None = None):
    """`pytest.mark.parametrize("estimator", ...)` over registry entries, ids by name.

    Args:
        names: registry names (default: every name in `available()` at collection time).

    Example:
        >>> marker = parametrize_estimators(["reinforce", "st"])
        >>> marker.args[0], [e.name for e in marker.args[1]]
        ('estimator', ['reinforce', 'st'])
    """
    import pytest

    names = list(available() if names is None else names)
    return pytest.mark.parametrize("estimator", [get_estimator(n) for n in names], ids=names)


def _run(name: str, runner, subject: _Subject, settings: _Settings) -> CheckResult:
    started = time.perf_counter()
    try:
        result = runner(subject, settings)
    except _Failed as failure:
        result = CheckResult(name, False, str(failure), failure.details)
    except Exception as error:  # a check that crashes is a failed check, with the reason
        result = CheckResult(
            name, False, f"raised {type(error).__name__}: {error}",
            {"traceback": traceback.format_exc()},
        )
    details = dict(result.details) | {"seconds": time.perf_counter() - started}
    return dataclasses.replace(result, name=name, details=details)


# --- small graphs -------------------------------------------------------------------------


class _NetworkWithUnusedParameter(ConditionalNetwork):
    """A conditional network with an extra parameter `unused` that nothing reads."""

    def __init__(self, config: ConditionalConfig, generator: torch.Generator) -> None:
        super().__init__(config, generator)
        self.unused = nn.Parameter(torch.ones(2))


def _conditional(
    num_gates: int,
    batch_size: int,
    dtype: torch.dtype,
    *,
    seed: int = 0,
    output_scale: float = 1.0,
    network: type[ConditionalNetwork] = ConditionalNetwork,
) -> tuple[StochasticGraph, Batch]:
    """A seeded conditional network (5 inputs, 3 gater units, 3 classes) and a batch."""
    generator = torch.Generator().manual_seed(seed)
    config = ConditionalConfig(
        num_inputs=5, num_gater_hidden=3, num_gates=num_gates, num_classes=3
    )
    graph = network(config, generator)
    with torch.no_grad():  # scaled up, the loss depends visibly on the gates
        graph.output.weight.mul_(output_scale)
    x = torch.rand(batch_size, 5, generator=generator)
    y = torch.randint(0, 3, (batch_size,), generator=generator)
    return graph.to(dtype), (x.to(dtype), y)


def _sbn(batch_size: int, dtype: torch.dtype, *, seed: int = 0) -> tuple[StochasticGraph, Batch]:
    """A seeded two-layer sigmoid belief net (4 inputs, layers of 3 and 2 gates) and a batch."""
    generator = torch.Generator().manual_seed(seed)
    graph = SigmoidBeliefNet(4, (3, 2), generator)
    x = (torch.rand(batch_size, 4, generator=generator) < 0.5).to(torch.float32)
    return graph.to(dtype), (x.to(dtype),)


def _problems(multilayer: bool, dtype: torch.dtype) -> list[tuple[str, StochasticGraph, Batch]]:
    """The graphs most checks run on: a 5-gate conditional net, and an SBN if multilayer."""
    problems = [("conditional-5", *_conditional(5, 3, dtype))]
    if multilayer:
        problems.append(("sbn-3-2", *_sbn(3, dtype)))
    return problems


def _to(graph: StochasticGraph, batch: Batch, dtype=None, device=None):
    """A copy of `graph` and `batch` in `dtype` (floating tensors only) on `device`."""
    graph = copy.deepcopy(graph).to(dtype=dtype, device=device)
    batch = tuple(
        t.to(dtype=dtype, device=device) if t.is_floating_point() else t.to(device=device)
        for t in batch
    )
    return graph, batch


# --- drawing ------------------------------------------------------------------------------


def _method(estimator: GradientEstimator) -> str:
    return "vmap" if estimator.supports_vmap else "loop"


def _noise(estimator, graph, batch, num_draws, seed, dtype, start: int = 0) -> torch.Tensor:
    with torch.no_grad():
        prepared = graph.prepare(batch)
    shape = tuple(estimator.noise_shape(graph, prepared))
    device = prepared.logits.device
    return uniform_noise(seed, range(start, start + num_draws), shape, dtype=dtype, device=device)


def _draws(estimator, graph, batch, noise, state, method=None) -> dict[str, torch.Tensor]:
    return gradient_draws(
        graph, estimator, batch, noise, state=state, method=method or _method(estimator)
    )


def _relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]):
    """`max |a - b| / max |b|` per tensor, the worst tensor name and its value."""
    worst, worst_name = 0.0, None
    for name in b:
        x, y = a[name].double().cpu(), b[name].double().cpu()
        scale = y.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
        value = float((x - y).abs().max() / scale) if y.numel() else 0.0
        if not value <= worst:  # NaN counts as the worst
            worst, worst_name = value, name
    return worst, worst_name


# --- the checks ---------------------------------------------------------------------------


def _attempt(problems: list[str], label: str, action: Callable[..., Any], *args: Any) -> Any:
    """`action(*args)`; if it raises, records why under `label` and returns None."""
    try:
        return action(*args)
    except Exception as error:
        problems.append(f"{label} raised {type(error).__name__}: {error}")
        return None


def _join(problems: list[str]) -> str:
    """The problems as one message; `label: reason` lines with one reason share it.

    Example:
        >>> _join(["a: broke", "b: broke", "c: fine?"])
        'a, b: broke; c: fine?'
    """
    labels: dict[str, list[str]] = {}
    for problem in problems:
        label, sep, reason = problem.partition(": ")
        key = reason if sep else problem
        labels.setdefault(key, [])
        if sep and label not in labels[key]:
            labels[key].append(label)
    return "; ".join(
        f"{', '.join(found)}: {reason}" if found else reason for reason, found in labels.items()
    )


def _evaluations(subject: _Subject, graph: StochasticGraph, batch: Batch) -> Any:
    return subject.build(graph, batch).evaluations(graph)


def _check_flags(subject: _Subject, settings: _Settings) -> CheckResult:
    graph, batch = _conditional(5, 3, settings.dtype)
    sbn, sbn_batch = _sbn(3, settings.dtype)
    estimator = subject.build(graph, batch)
    problems = []
    for flag in ("is_unbiased", "multilayer", "supports_vmap", "discrete_noise"):
        value = getattr(estimator, flag, None)
        if not isinstance(value, bool):
            problems.append(f"{flag} must be a bool, got {value!r}")
    for flag in ("name", "distribution"):
        value = getattr(estimator, flag, None)
        if not isinstance(value, str) or not value:
            problems.append(f"{flag} must be a non-empty str, got {value!r}")
    evaluations = {}
    for label, g, b in (("conditional-5", graph, batch), ("sbn-3-2", sbn, sbn_batch)):
        if label == "sbn-3-2" and getattr(estimator, "multilayer", False) is not True:
            continue
        count = _attempt(problems, f"evaluations(graph) on {label}",
                         _evaluations, subject, g, b)
        evaluations[label] = count
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            problems.append(f"evaluations(graph) must be a positive int on {label}, got {count!r}")
    if problems:
        raise _Failed(_join(problems))
    return CheckResult(
        "flags", True,
        f"is_unbiased={estimator.is_unbiased}, multilayer={estimator.multilayer}, "
        f"supports_vmap={estimator.supports_vmap}, distribution={estimator.distribution!r}, "
        f"evaluations {evaluations}",
        {"evaluations": evaluations},
    )


def _validate_draws(label, graph, batch, draws, num_draws, dtype, device) -> list[str]:
    """Problems with a dict of per-draw gradients: missing names, shapes, dtype, device, NaN."""
    with torch.no_grad():
        logits_shape = tuple(graph.prepare(batch).logits.shape)
    expected = {GATE_LOGITS: (num_draws, *logits_shape)}
    expected |= {n: (num_draws, *p.shape) for n, p in graph.named_parameters()}
    problems = []
    for name, shape in expected.items():
        value = draws[name]
        if tuple(value.shape) != shape:
            problems.append(f"{label}: {name} draws have shape {tuple(value.shape)}, "
                            f"expected {shape} (K x {'B x G_0' if name == GATE_LOGITS else name})")
        elif value.dtype != dtype:
            problems.append(f"{label}: {name} draws are {value.dtype}, the graph is {dtype}")
        elif value.device.type != device.type:
            problems.append(f"{label}: {name} draws are on {value.device}, the graph on {device}")
        elif not torch.isfinite(value).all():
            count = int((~torch.isfinite(value)).sum())
            problems.append(f"{label}: {count} of {value.numel()} {name} draws are not finite")
    return problems


def _surrogate_problems(label, graph, batch, estimator, noise, state) -> list[str]:
    """Problems with one direct surrogate value: type, 0-dim, dtype, finiteness."""
    value = estimator.surrogate(graph, graph.prepare(batch), noise, state)
    if not isinstance(value, torch.Tensor):
        return [f"{label}: surrogate returned {type(value).__name__}, not a tensor"]
    if value.dim() != 0:
        return [f"{label}: surrogate has shape {tuple(value.shape)}, expected a 0-dim tensor"]
    dtype = next(graph.parameters()).dtype
    if value.dtype != dtype:
        return [f"{label}: surrogate is {value.dtype}, the graph is {dtype}"]
    if not torch.isfinite(value):
        return [f"{label}: surrogate is {value.item()}, not finite"]
    return []


def _draw_and_validate(problems, label, subject, graph, batch, noise, device=None):
    """Checks the surrogate and the per-draw gradients on one graph; the draws, or None."""
    device = device or torch.device("cpu")
    dtype = next(graph.parameters()).dtype
    estimator = subject.build(graph, batch)
    state = estimator.init(graph)
    found = _attempt(problems, f"{label}: surrogate",
                     _surrogate_problems, label, graph, batch, estimator, noise[0], state)
    if found is None or found:
        problems += found or []
        return None
    draws = _attempt(problems, f"{label}: drawing ({_method(estimator)})",
                     _draws, estimator, graph, batch, noise, state)
    if draws is None:
        return None
    found = _validate_draws(label, graph, batch, draws, noise.shape[0], dtype, device)
    problems += found
    return None if found else draws


def _check_shapes(subject: _Subject, settings: _Settings) -> CheckResult:
    dtype, seed, k = settings.dtype, settings.seed, DRAWS_PER_SHAPE_CHECK
    cases = [
        (f"conditional B={b} G={g}", *_conditional(g, b, dtype)) for b in (1, 3) for g in (1, 5)
    ]
    problems, checked = [], []
    for label, graph, batch in cases:
        estimator = subject.build(graph, batch)
        with torch.no_grad():
            shape = estimator.noise_shape(graph, graph.prepare(batch))
        if not (isinstance(shape, tuple) and all(isinstance(s, int) and s > 0 for s in shape)):
            problems.append(f"{label}: noise_shape must be a tuple of positive ints, got {shape!r}")
            continue
        noise = _noise(estimator, graph, batch, k, seed, dtype)
        _draw_and_validate(problems, label, subject, graph, batch, noise)
        checked.append(label)
    graph, batch = _sbn(3, dtype)
    estimator = subject.build(graph, batch)
    label = "sbn-3-2 (two gate layers)"
    if estimator.multilayer:
        noise = _noise(estimator, graph, batch, k, seed, dtype)
        _draw_and_validate(problems, label, subject, graph, batch, noise)
        checked.append(label)
    else:
        problems += _single_layer_refuses(graph, batch, estimator, seed, dtype)
        checked.append(f"{label} refused with ValueError")
    if problems:
        raise _Failed(_join(problems))
    return CheckResult("shapes", True, f"{k} draws each in {dtype}: " + ", ".join(checked))


def _single_layer_refuses(graph, batch, estimator, seed, dtype) -> list[str]:
    """A single-layer estimator must raise `ValueError` on a multi-layer graph."""
    with torch.no_grad():
        prepared = graph.prepare(batch)
    try:
        state = estimator.init(graph)
        noise = uniform_noise(seed, range(1), estimator.noise_shape(graph, prepared), dtype=dtype)
        estimator.surrogate(graph, graph.prepare(batch), noise[0], state)
    except ValueError:
        return []
    except Exception as error:
        return [f"multilayer=False, but on a graph with layers {graph.layer_sizes} it raised "
                f"{type(error).__name__} ({error}) instead of ValueError "
                f"(call require_single_layer(graph, self) first)"]
    return [f"multilayer=False, but on a graph with layers {graph.layer_sizes} the surrogate "
            f"returned a value instead of raising ValueError "
            f"(call require_single_layer(graph, self) first)"]


def _listing(agreement: dict[str, float]) -> str:
    return ", ".join(f"{value:.1e} on {label}" for label, value in agreement.items())


def _check_dtypes(subject: _Subject, settings: _Settings) -> CheckResult:
    seed, k = settings.seed, DRAWS_PER_SHAPE_CHECK
    probe = subject.build(*_conditional(5, 3, settings.dtype))
    problems, agreement = [], {}
    for label, graph, batch in _problems(probe.multilayer, torch.float32):
        noise = _noise(subject.build(graph, batch), graph, batch, k, seed, torch.float32)
        draws = {}
        for dtype in settings.dtypes:
            # Upcasting a float32 graph, inputs and noise is exact: only the arithmetic differs.
            g, b = _to(graph, batch, dtype)
            draws[dtype] = _draw_and_validate(
                problems, f"{label} {dtype}", subject, g, b, noise.to(dtype)
            )
        low, high = settings.dtypes[:2] if len(settings.dtypes) > 1 else (None, None)
        if low is None or draws[low] is None or draws[high] is None:
            continue
        worst, name = _relative_difference(draws[low], draws[high])
        agreement[label] = worst
        if not worst <= FLOAT32_TOLERANCE:
            problems.append(
                f"{label}: {low} and {high} draws from the same float32 graph and noise "
                f"differ by {worst:.2g} of the largest draw ({name}); rounding explains at "
                f"most {FLOAT32_TOLERANCE:g}"
            )
    if problems:
        raise _Failed(_join(problems), agreement=agreement)
    names = ", ".join(str(d).removeprefix("torch.") for d in settings.dtypes)
    compared = f"; largest relative difference {_listing(agreement)}" if agreement else ""
    return CheckResult("dtypes", True, f"{names} work{compared}", {"agreement": agreement})


def _check_devices(subject: _Subject, settings: _Settings) -> CheckResult:
    others = [d for d in settings.devices if d != torch.device("cpu")]
    if not others:
        return CheckResult("devices", True, "cpu only (no other device asked for or available)")
    seed, k = settings.seed, DRAWS_PER_SHAPE_CHECK
    probe = subject.build(*_conditional(5, 3, settings.dtype))
    problems, agreement = [], {}
    for dtype in settings.dtypes:
        tolerance = FLOAT64_TOLERANCE if dtype == torch.float64 else FLOAT32_TOLERANCE
        for label, graph, batch in _problems(probe.multilayer, dtype):
            noise = _noise(subject.build(graph, batch), graph, batch, k, seed, dtype)
            reference = _draw_and_validate(problems, f"{label} {dtype} on cpu", subject, graph,
                                           batch, noise)
            for device in others:
                where = f"{label} {dtype} on {device}"
                g, b = _to(graph, batch, device=device)
                draws = _draw_and_validate(problems, where, subject, g, b, noise.to(device),
                                           device)
                if draws is None or reference is None:
                    continue
                worst, name = _relative_difference(draws, reference)
                agreement[where] = worst
                if not worst <= tolerance:
                    problems.append(f"{where}: draws differ from the CPU's by {worst:.2g} of the "
                                    f"largest draw ({name}), more than rounding ({tolerance:g})")
    if problems:
        raise _Failed(_join(problems), agreement=agreement)
    return CheckResult(
        "devices", True,
        f"{', '.join(str(d) for d in others)} match the CPU draws (largest relative difference "
        f"{max(agreement.values()):.1e})",
        {"agreement": agreement},
    )


def _check_determinism(subject: _Subject, settings: _Settings) -> CheckResult:
    seed, k, dtype = settings.seed, DRAWS_PER_SHAPE_CHECK, settings.dtype
    tolerance = FLOAT64_TOLERANCE if dtype == torch.float64 else FLOAT32_TOLERANCE
    probe = subject.build(*_conditional(5, 3, dtype))
    problems, agreement = [], {}
    for label, graph, batch in _problems(probe.multilayer, dtype):
        estimator = subject.build(graph, batch)
        state = estimator.init(graph)
        noise = _noise(estimator, graph, batch, k, seed, dtype)
        method = _method(estimator)
        first = _attempt(problems, f"{label}: drawing ({method})",
                         _draws, estimator, graph, batch, noise, state)
        if first is None:
            continue
        second = _draws(estimator, graph, batch, noise.clone(), state)
        unequal = [n for n in first if not torch.equal(first[n], second[n])]
        if unequal:
            problems.append(f"{label}: the same noise gave different draws for {unequal} "
                            f"({method})")
        if estimator.supports_vmap:
            looped = _draws(estimator, graph, batch, noise, state, method="loop")
            worst, name = _relative_difference(first, looped)
            agreement[label] = worst
            if not worst <= tolerance:
                problems.append(f"{label}: vmap and loop draws differ by {worst:.2g} of the "
                                f"largest draw ({name}); set supports_vmap=False if the surrogate "
                                f"cannot be vmapped")
    if problems:
        raise _Failed(_join(problems), agreement=agreement)
    how = (
        f"vmap matches the loop (largest relative difference {_listing(agreement)})"
        if agreement else "loop only (supports_vmap=False)"
    )
    return CheckResult("determinism", True, f"bitwise repeatable; {how}", {"agreement": agreement})


def _state_tensors(state: Any, path: str = "state") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a state: through mappings, sequences and dataclasses."""
    if isinstance(state, torch.Tensor):
        yield path, state
    elif isinstance(state, Mapping):
        for key, value in state.items():
            yield from _state_tensors(value, f"{path}[{key!r}]")
    elif isinstance(state, list | tuple):
        for index, value in enumerate(state):
            yield from _state_tensors(value, f"{path}[{index}]")
    elif dataclasses.is_dataclass(state) and not isinstance(state, type):
        for item in dataclasses.fields(state):
            yield from _state_tensors(getattr(state, item.name), f"{path}.{item.name}")


def _snapshot(state: Any) -> dict[str, torch.Tensor]:
    return {path: tensor.detach().clone() for path, tensor in _state_tensors(state)}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise-equal values (NaN equal to NaN)."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _state_problems(state: Any, snapshot: dict[str, torch.Tensor], when: str) -> list[str]:
    problems = []
    for path, tensor in _state_tensors(state):
        if tensor.requires_grad:
            problems.append(f"{path} requires grad {when}: state must be detached")
        elif tensor.grad is not None:
            problems.append(f"{path} received a .grad {when}: a gradient leaked into the state")
        if path in snapshot and not _same(tensor.detach(), snapshot[path]):
            problems.append(f"{path} changed {when}: surrogate must only read the state, and "
                            f"update must return a new one")
    return problems


def _surrogate_backward(estimator, graph, batch, noise, state) -> None:
    """One surrogate and its `.backward()`, on a copy of the graph (its `.grad` is scratch)."""
    graph = copy.deepcopy(graph)
    value = estimator.surrogate(graph, graph.prepare(batch), noise, state)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.requires_grad:
        value.backward()


def _check_no_leaks(subject: _Subject, settings: _Settings) -> CheckResult:
    seed, dtype, k = settings.seed, settings.dtype, DRAWS_PER_SHAPE_CHECK
    graph, batch = _conditional(5, 3, dtype, network=_NetworkWithUnusedParameter)
    estimator = subject.build(graph, batch)
    noise = _noise(estimator, graph, batch, k + 1, seed, dtype)
    problems = []

    # State: detached, read-only in surrogate, replaced (not edited) by update.
    initial = estimator.init(graph)
    problems += _state_problems(initial, {}, "after init")
    before = _snapshot(initial)
    with torch.no_grad():
        prepared = graph.prepare(batch)
    updated = _attempt(problems, "update",
                       estimator.update, initial, graph, prepared, noise[k])
    problems += _state_problems(initial, before, "during update (its input state)")
    states = {"from init": initial}
    if updated is not None:
        problems += _state_problems(updated, {}, "after update")
        states["after update"] = updated
    for when, state in states.items():
        before = _snapshot(state)
        _attempt(problems, f"surrogate and backward (state {when})",
                 _surrogate_backward, estimator, graph, batch, noise[0], state)
        problems += _state_problems(state, before, f"during surrogate (state {when})")

    # The graph's parameters and their .grad are untouched by drawing; unused ones get zeros.
    for param in graph.parameters():
        param.grad = torch.full_like(param, 0.5)
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in graph.named_parameters()}
    draws = _attempt(problems, f"drawing ({_method(estimator)})",
                     _draws, estimator, graph, batch, noise[:k], estimator.init(graph))
    for name, param in graph.named_parameters():
        value, grad = before[name]
        if not _same(param.detach(), value):
            problems.append(f"drawing changed the value of parameter {name}")
        if param.grad is None or not _same(param.grad, grad):
            problems.append(f"drawing changed {name}.grad (use torch.autograd.grad, never "
                            f".backward(), and do not zero gradients)")
        if not param.requires_grad:
            problems.append(f"drawing switched off requires_grad of {name}")
    if draws is not None and not bool((draws["unused"] == 0).all()):
        problems.append("a parameter the loss never uses got a non-zero gradient "
                        f"(largest {float(draws['unused'].abs().max()):.3g})")

    # The global RNG: the draws are the same whatever it was seeded with.
    def seeded(rng_seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(rng_seed)
        return _draws(estimator, graph, batch, noise[:k], estimator.init(graph), method="loop")

    with torch.random.fork_rng(devices=[]):
        first = _attempt(problems, "drawing (loop)", seeded, 0)
        second = _attempt(problems, "drawing (loop)", seeded, 1)
    if first is not None and second is not None:
        differ = [n for n in first if not _same(first[n], second[n])]
        if differ:
            problems.append(f"the draws of {differ} change with torch.manual_seed: the surrogate "
                            f"reads the global RNG (all randomness must come from the noise)")
    if problems:
        raise _Failed(_join(problems))
    paths = [path for path, _ in _state_tensors(initial)]
    return CheckResult(
        "no_leaks", True,
        f"parameters and .grad untouched, unused parameter gets exact zeros, {len(paths)} state "
        f"tensors detached and read-only, independent of the global RNG",
        {"state_tensors": paths},
    )


def _reference_problems(multilayer: bool) -> list[tuple[str, StochasticGraph, Batch]]:
    """Enumerable float64 graphs for the unbiasedness check.

    `conditional-4`: 4 gates, 2 examples, the output weights scaled by 8 so the loss depends
    on the gates (81 coordinates). `sbn-3-2`: layers of 3 and 2 gates above 4 binary inputs,
    2 examples (41 coordinates), for multi-layer estimators. All gate probabilities lie in
    `[0.09, 0.91]`, so no coordinate's draws hinge on an event too rare for `num_draws`.
    """
    problems = [("conditional-4", *_conditional(4, 2, torch.float64, output_scale=8.0))]
    if multilayer:
        problems.append(("sbn-3-2", *_sbn(2, torch.float64)))
    return problems


@dataclass(frozen=True)
class _GraphDraws:
    label: str
    names: list[str]
    shapes: list[tuple[int, ...]]
    exact: torch.Tensor  # d
    moments: Moments  # of draw - exact
    covariance: torch.Tensor  # d x d, of one draw


def _measure(subject: _Subject, settings: _Settings, label, graph, batch) -> _GraphDraws:
    """Draws minus the exact gradient on one graph: moments and covariance, streamed."""
    _, exact = exact_gradient(graph, batch)
    names = [GATE_LOGITS] + [n for n, _ in graph.named_parameters()]
    exact_flat = torch.cat([exact[n].reshape(-1) for n in names])
    estimator = subject.build(graph, batch)
    n = settings.num_draws
    # Advance the state on noise the measured draws do not use, then freeze it.
    state = estimator.init(graph)
    with torch.no_grad():
        prepared = graph.prepare(batch)
    for row in _noise(estimator, graph, batch, NUM_STATE_UPDATES, settings.seed, torch.float64,
                      start=n):
        state = estimator.update(state, graph, prepared, row)
    accumulator = MomentAccumulator()
    shift = gram = None
    for start in range(0, n, CHUNK_SIZE):
        size = min(CHUNK_SIZE, n - start)
        noise = _noise(estimator, graph, batch, size, settings.seed, torch.float64, start)
        draws = _draws(estimator, graph, batch, noise, state)
        flat = torch.cat([draws[name].reshape(size, -1) for name in names], 1) - exact_flat
        shift = flat.mean(0) if shift is None else shift
        centred = flat - shift
        gram = centred.T @ centred + (0 if gram is None else gram)
        accumulator.update({"difference": flat}, overwrite=True)
    moments = accumulator["difference"]
    offset = moments.mean - shift
    covariance = (gram - n * torch.outer(offset, offset)) / (n - 1)
    shapes = [tuple(exact[name].shape) for name in names]
    return _GraphDraws(label, names, shapes, exact_flat, moments, covariance)


def _coordinate(names, shapes, index: int) -> str:
    """`name[i, j]` for a flat coordinate index."""
    for name, shape in zip(names, shapes, strict=True):
        size = math.prod(shape)
        if index < size:
            where = np.unravel_index(index, shape) if shape else ()
            return f"{name}[{', '.join(str(int(i)) for i in where)}]"
        index -= size
    raise IndexError(index)


def _bias_summary(measured: _GraphDraws) -> dict[str, float]:
    """Relative bias `||mean - exact|| / ||exact||`, its standard error and noise floor.

    The standard error is the delta method's, `sqrt(u^T Sigma u / N)` with `u` the unit
    vector along the mean difference; the noise floor `sqrt(tr(Sigma) / N)` is the size the
    norm has from sampling alone, and `||mean - exact||^2 - tr(Sigma) / N` is an unbiased
    estimate of the squared bias (its square root, clipped at zero, is
    `relative_debiased_bias` after dividing by `||exact||`).
    """
    difference = measured.moments.mean
    n = measured.moments.count
    norm = float(difference.norm())
    reference = float(measured.exact.norm())
    unit = difference / norm if norm > 0 else difference
    stderr = math.sqrt(max(float(unit @ measured.covariance @ unit), 0.0) / n)
    floor_sq = float(measured.covariance.diagonal().sum()) / n
    return {
        "relative_bias": norm / reference,
        "relative_bias_stderr": stderr / reference,
        "relative_noise_floor": math.sqrt(floor_sq) / reference,
        "relative_debiased_bias": math.sqrt(max(norm**2 - floor_sq, 0.0)) / reference,
    }


def _p(pvalue: float) -> str:
    """`= p` in two significant digits, or `< 1e-300` when it underflows to zero."""
    return f"= {pvalue:.2g}" if pvalue > 0 else "< 1e-300"


def _check_unbiasedness(subject: _Subject, settings: _Settings) -> CheckResult:
    probe = subject.build(*_conditional(4, 2, torch.float64))
    if probe.distribution != "bernoulli":
        return CheckResult(
            "unbiasedness", True,
            f"not checked: no exact reference for distribution {probe.distribution!r} "
            f"(enumeration gives the gradient under Bernoulli gates only)",
            {"checked": False},
        )
    measured = [
        _measure(subject, settings, label, graph, batch)
        for label, graph, batch in _reference_problems(probe.multilayer)
    ]
    mean = torch.cat([m.moments.mean for m in measured])
    m2 = torch.cat([m.moments.m2 for m in measured])
    exact = torch.cat([m.exact for m in measured])
    test = zero_mean_test(
        Moments(settings.num_draws, mean, m2), alpha=settings.alpha,
        rounding=rounding_scale((mean + exact).numpy(), exact.numpy()),
    )
    d = mean.numel()
    detectable = (
        scipy_stats.norm.isf(settings.alpha / (2 * d)) + scipy_stats.norm.isf(1 - POWER)
    ) / math.sqrt(settings.num_draws)
    per_graph, offset, findings = {}, 0, []
    for m in measured:
        size = m.exact.numel()
        part = slice(offset, offset + size)
        offset += size
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0: exact agreement
            z = np.nan_to_num(np.abs(test.estimate[part] / test.standard_error[part]))
        worst = int(np.argmax(z))
        flagged = test.rejected[part]
        counts, start = [], 0
        for name, shape in zip(m.names, m.shapes, strict=True):
            width = math.prod(shape)
            hits = int(flagged[start:start + width].sum())
            if hits:
                counts.append(f"{name} {hits}/{width}")
            start += width
        bias = _bias_summary(m)
        per_graph[m.label] = bias | {
            "holm_pvalue": float(test.pvalues_adjusted[part].min()),
            "flagged": int(flagged.sum()),
            "coordinates": size,
        }
        mean_draw = float(m.moments.mean[worst] + m.exact[worst])
        if flagged.any():
            findings.append(
                f"on graph '{m.label}' (Holm p {_p(per_graph[m.label]['holm_pvalue'])}; "
                f"{int(flagged.sum())} of {size} coordinates flagged: {', '.join(counts)}; worst "
                f"coordinate {_coordinate(m.names, m.shapes, worst)}: mean {mean_draw:.3g} ± "
                f"{test.standard_error[part][worst]:.1g}, exact {float(m.exact[worst]):.3g}; "
                f"relative bias {bias['relative_bias']:.3g} ± {bias['relative_bias_stderr']:.1g})"
            )
    details = {
        "checked": True,
        "holm_pvalue": test.pvalue,
        "max_abs_z": test.statistic,
        "coordinates": d,
        "num_draws": settings.num_draws,
        "alpha": settings.alpha,
        "detectable_bias_in_sd": detectable,
        "graphs": per_graph,
    }
    biases = ", ".join(
        f"{label} {v['relative_bias']:.3g} ± {v['relative_bias_stderr']:.1g} "
        f"(noise floor {v['relative_noise_floor']:.2g})"
        for label, v in per_graph.items()
    )
    graphs = f"{len(measured)} graph{'s' if len(measured) > 1 else ''}"
    budget = (f"{d} coordinates of {graphs}, {settings.num_draws} draws each, "
              f"level {settings.alpha:g}")
    if probe.is_unbiased and findings:
        raise _Failed(
            "claims is_unbiased=True but its mean draw differs from the exact gradient "
            + " and ".join(findings), **details
        )
    if probe.is_unbiased:
        return CheckResult(
            "unbiasedness", True,
            f"no bias detected (Holm p {_p(test.pvalue)} over {budget}; a bias above "
            f"{detectable:.2f} per-draw sd would be caught with probability {POWER}); "
            f"relative bias {biases}",
            details,
        )
    verdict = (
        "bias detected " + " and ".join(findings) if findings
        else f"no bias detected at this budget (Holm p {_p(test.pvalue)})"
    )
    return CheckResult(
        "unbiasedness", True,
        f"claims is_unbiased=False (information only): relative bias {biases}; {verdict} "
        f"({budget})",
        details,
    )
