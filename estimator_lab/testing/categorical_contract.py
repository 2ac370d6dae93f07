"""`check_categorical_estimator`: the contract of estimators for categorical gates.

The categorical counterpart of `check_estimator` (same `ContractReport` and `CheckResult`), run on
small categorical graphs: a probe graph whose logits come from a linear encoder of the inputs
and whose loss is a cubic (so not separable, not quadratic) function of the one-hot gates
through a decoder parameter, with an extra parameter nothing reads. The checks:

1. `flags`: the capability flags have the right types, `distribution == "categorical"`, and
   `evaluations(graph)` is a positive int.
2. `shapes`: per-draw gradients are `K x param.shape` (gate logits `K x B x N x K`) and finite
   for `B` in {1, 3} and `(N, K)` in {(1, 2), (3, 4)}; the noise shape ends in `B x N x K`;
   the surrogate is a finite 0-dim tensor; a Bernoulli graph is refused with `ValueError`
   (`require_categorical`; any other error is reported as a failure naming it).
3. `dtypes`: float32 and float64 draws from the same graph and noise agree to float32 precision,
   in the graph's dtype.
4. `determinism`: the same noise gives bitwise-identical draws twice; `vmap` and the loop agree.
5. `no_leaks`: drawing leaves the parameters and their `.grad` alone, the unused parameter gets
   exact zeros, and the draws do not depend on the global RNG.
6. `unbiasedness`: against the exact gradient by enumeration (`categorical_exact_gradient`) on
   the probe graph (3 gates of 3 classes, 2 examples): for `discrete_noise` estimators, the exact
   mean of a draw by enumeration (`categorical_exact_moments`); an estimator that claims
   `is_unbiased` fails when its relative exact bias exceeds `EXACT_TOLERANCE`. Every estimator
   also gets the Monte Carlo test of `check_estimator` (Holm-corrected per-coordinate z-tests of
   `num_draws` draws, level `alpha`), which covers continuous-noise estimators; one that claims
   `is_unbiased` fails when a coordinate is flagged. Biased estimators get their measured
   relative bias reported (the check passes). Adaptive states get `NUM_STATE_UPDATES` updates
   on separate noise first, then stay frozen.

Note [Randomized statistical tests]: only the Monte Carlo part of `unbiasedness` is random, with a
fixed seed; its false-failure rate for a correct unbiased estimator is at most `alpha` (Holm over
all coordinates, up to the normal approximation of a mean of `num_draws` draws). The exact part
has no false failures: enumeration is exact up to float64 rounding.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.prepare import initial_state
from estimator_lab.exact.categorical import categorical_exact_gradient, categorical_exact_moments
from estimator_lab.graphs.base import PreparedBatch
from estimator_lab.graphs.categorical import CategoricalGraph
from estimator_lab.graphs.toy import ToyGraph
from estimator_lab.montecarlo.accumulators import MomentAccumulator, Moments
from estimator_lab.montecarlo.engine import GATE_LOGITS
from estimator_lab.stats.unbiasedness import rounding_scale, zero_mean_test
from estimator_lab.testing.drawing import (
    DRAWS_PER_SHAPE_CHECK,
    FLOAT32_TOLERANCE,
    FLOAT64_TOLERANCE,
    probe_draws,
    probe_noise,
    relative_difference,
    same,
)
from estimator_lab.testing.results import CheckFailed, CheckResult, ContractReport
from estimator_lab.testing.unbiasedness import (
    CHUNK_SIZE,
    DEFAULT_ALPHA,
    DEFAULT_NUM_DRAWS,
    updated_state,
)

CATEGORICAL_CHECKS = ("flags", "shapes", "dtypes", "determinism", "no_leaks", "unbiasedness")
EXACT_TOLERANCE = 1e-9  # relative exact bias that float64 rounding explains


class CategoricalProbe(CategoricalGraph):
    """`N` categoricals of `K` classes with logits `encoder(x)` and a cubic loss.

    With `s_b = sum_ij D_bij V_ij` (`V` the `decoder` parameter), the loss of example `b` is
    `(s_b - y_b)^2 + s_b^3 / 3`: it couples the gates and is not quadratic in `D`, so
    estimators exact only for separable or quadratic losses show their bias. `unused` is a
    parameter the loss never reads.

    Args:
        num_gates: `N`.
        num_classes: `K`.
        num_inputs: the input size of the encoder.
        generator: seeds the parameters.
    """

    def __init__(self, num_gates: int, num_classes: int, num_inputs: int,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.num_gates, self.num_classes = num_gates, num_classes
        self.encoder = nn.Linear(num_inputs, num_gates * num_classes)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.randn(self.encoder.weight.shape, generator=generator))
            self.encoder.bias.copy_(torch.randn(self.encoder.bias.shape, generator=generator))
        self.decoder = nn.Parameter(torch.randn(num_gates, num_classes, generator=generator) / 2)
        self.unused = nn.Parameter(torch.ones(2))

    def prepare(self, batch: tuple[torch.Tensor, ...]) -> PreparedBatch:
        x, y = batch
        logits = self.encoder(x).view(x.shape[0], self.num_gates, self.num_classes)
        return PreparedBatch(logits=logits, features={"y": y})

    def loss(self, prepared: PreparedBatch, gates: torch.Tensor) -> torch.Tensor:
        s = (gates * self.decoder).sum((-2, -1))  # ... x B
        return (s - prepared.features["y"]).square() + s**3 / 3


def categorical_probe(num_gates: int = 3, num_classes: int = 3, batch_size: int = 2,
                      dtype: torch.dtype = torch.float64, seed: int = 0):
    """A seeded `CategoricalProbe` (4 inputs) and its batch `(x, y)`, in `dtype`."""
    generator = torch.Generator().manual_seed(seed)
    graph = CategoricalProbe(num_gates, num_classes, 4, generator)
    x = torch.rand(batch_size, 4, generator=generator)
    y = torch.randn(batch_size, generator=generator)
    return graph.to(dtype), (x.to(dtype), y.to(dtype))


def check_categorical_estimator(
    estimator: GradientEstimator,
    *,
    num_draws: int = DEFAULT_NUM_DRAWS,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    checks: Sequence[str] | None = None,
) -> ContractReport:
    """Runs the categorical estimator contract (module docstring) and reports every check.

    Args:
        estimator: a categorical `GradientEstimator` instance.
        num_draws: Monte Carlo draws in the unbiasedness check.
        alpha: the Monte Carlo part's false-failure rate (family-wise, Holm).
        seed: the noise seed.
        checks: names of the checks to run (default: all of `CATEGORICAL_CHECKS`).

    Returns:
        a `ContractReport`.

    Example:
        >>> from estimator_lab.estimators.categorical import get_categorical_estimator
        >>> report = check_categorical_estimator(get_categorical_estimator("st"),
        ...                                      checks=["flags", "shapes"])
        >>> report.passed
        True
    """
    selected = CATEGORICAL_CHECKS if checks is None else tuple(checks)
    unknown = [name for name in selected if name not in CATEGORICAL_CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; the checks are {list(CATEGORICAL_CHECKS)}")
    if num_draws < 2 or not 0 < alpha < 1 or seed < 0:
        raise ValueError(
            f"need num_draws >= 2, 0 < alpha < 1 and seed >= 0, got {num_draws}, {alpha}, {seed}"
        )
    runners = {
        "flags": _check_flags, "shapes": _check_shapes, "dtypes": _check_dtypes,
        "determinism": _check_determinism, "no_leaks": _check_no_leaks,
        "unbiasedness": _check_unbiasedness,
    }
    results = []
    for name in selected:
        try:
            result = runners[name](estimator, num_draws=num_draws, alpha=alpha, seed=seed)
        except CheckFailed as failure:
            result = CheckResult(name, False, str(failure), failure.details)
        except Exception as error:  # a check that crashes is a failed check, with the reason
            result = CheckResult(name, False, f"raised {type(error).__name__}: {error}")
        results.append(result)
    label = f"{estimator.name!r} ({estimator!r})"
    return ContractReport(label, tuple(results))


def _check_flags(estimator, **_) -> CheckResult:
    problems = []
    for flag in ("is_unbiased", "multilayer", "supports_vmap", "discrete_noise"):
        if not isinstance(getattr(estimator, flag, None), bool):
            problems.append(f"{flag} must be a bool, got {getattr(estimator, flag, None)!r}")
    if getattr(estimator, "distribution", None) != "categorical":
        problems.append(f"distribution must be 'categorical', got "
                        f"{getattr(estimator, 'distribution', None)!r}")
    count = estimator.evaluations(categorical_probe()[0])
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        problems.append(f"evaluations(graph) must be a positive int, got {count!r}")
    if problems:
        raise CheckFailed("; ".join(problems))
    return CheckResult("flags", True, f"is_unbiased={estimator.is_unbiased}, discrete_noise="
                       f"{estimator.discrete_noise}, evaluations {count}")


def _shape_problems(label, estimator, graph, batch, seed) -> list[str]:
    with torch.no_grad():
        prepared = graph.prepare(batch)
    shape = estimator.noise_shape(graph, prepared)
    logits_shape = tuple(prepared.logits.shape)
    if not (isinstance(shape, tuple) and all(isinstance(s, int) and s > 0 for s in shape)
            and shape[-3:] == logits_shape):
        return [f"{label}: noise_shape must be a tuple of positive ints ending in B x N x K "
                f"{logits_shape}, got {shape!r}"]
    noise = probe_noise(estimator, graph, batch, DRAWS_PER_SHAPE_CHECK, seed, torch.float64)
    state = initial_state(estimator, graph, batch)
    value = estimator.surrogate(graph, graph.prepare(batch), noise[0], state)
    if not isinstance(value, torch.Tensor) or value.dim() != 0 or not torch.isfinite(value):
        return [f"{label}: the surrogate must be a finite 0-dim tensor, got {value!r}"]
    draws = probe_draws(estimator, graph, batch, noise, state)
    expected = {GATE_LOGITS: logits_shape}
    expected |= {n: tuple(p.shape) for n, p in graph.named_parameters()}
    problems = []
    for name, want in expected.items():
        got = tuple(draws[name].shape)
        if got != (DRAWS_PER_SHAPE_CHECK, *want):
            problems.append(f"{label}: {name} draws have shape {got}, expected "
                            f"{(DRAWS_PER_SHAPE_CHECK, *want)}")
        elif not torch.isfinite(draws[name]).all():
            problems.append(f"{label}: {name} draws are not finite")
    return problems


def _check_shapes(estimator, seed, **_) -> CheckResult:
    problems = []
    cases = [(b, n, k) for b in (1, 3) for n, k in ((1, 2), (3, 4))]
    for b, n, k in cases:
        graph, batch = categorical_probe(n, k, b)
        problems += _shape_problems(f"B={b} N={n} K={k}", estimator, graph, batch, seed)
    toy = ToyGraph([0.0, 1.0])
    try:
        prepared = toy.prepare(toy.example_batch())
        estimator.surrogate(toy, prepared, torch.rand(1, 2, 2), estimator.init(toy))
        problems.append("a Bernoulli graph was not refused (call require_categorical first)")
    except ValueError:
        pass
    except Exception as error:  # refused, but by accident: say so, naming the error
        problems.append(f"a Bernoulli graph raised {type(error).__name__}: {error} instead of "
                        f"the ValueError of require_categorical")
    if problems:
        raise CheckFailed("; ".join(problems))
    return CheckResult("shapes", True, f"{len(cases)} probe graphs; Bernoulli graph refused")


def _check_dtypes(estimator, seed, **_) -> CheckResult:
    graph, batch = categorical_probe(3, 4, 3, dtype=torch.float32)
    noise = probe_noise(estimator, graph, batch, DRAWS_PER_SHAPE_CHECK, seed, torch.float32)
    low = probe_draws(estimator, graph, batch, noise, initial_state(estimator, graph, batch))
    wide = copy.deepcopy(graph).double()
    high = probe_draws(estimator, wide, tuple(t.double() for t in batch), noise.double(),
                       initial_state(estimator, wide, tuple(t.double() for t in batch)))
    wrong = [n for n, v in low.items() if v.dtype != torch.float32]
    wrong += [n for n, v in high.items() if v.dtype != torch.float64]
    if wrong:
        raise CheckFailed(f"draws of {wrong} are not in the graph's dtype")
    worst, name = relative_difference(low, high)
    if not worst <= FLOAT32_TOLERANCE:
        raise CheckFailed(f"float32 and float64 draws differ by {worst:.2g} of the largest draw "
                      f"({name}); rounding explains at most {FLOAT32_TOLERANCE:g}")
    return CheckResult("dtypes", True, f"float32 matches float64 to {worst:.1e}")


def _check_determinism(estimator, seed, **_) -> CheckResult:
    graph, batch = categorical_probe(3, 4, 3)
    noise = probe_noise(estimator, graph, batch, DRAWS_PER_SHAPE_CHECK, seed, torch.float64)
    first = probe_draws(estimator, graph, batch, noise, initial_state(estimator, graph, batch))
    second = probe_draws(estimator, graph, batch, noise.clone(),
                         initial_state(estimator, graph, batch))
    unequal = [n for n in first if not torch.equal(first[n], second[n])]
    if unequal:
        raise CheckFailed(f"the same noise gave different draws for {unequal}")
    looped = probe_draws(estimator, graph, batch, noise, initial_state(estimator, graph, batch),
                         "loop")
    worst, name = relative_difference(first, looped)
    if not worst <= FLOAT64_TOLERANCE:
        raise CheckFailed(f"vmap and loop draws differ by {worst:.2g} of the largest draw ({name})")
    return CheckResult("determinism", True, f"bitwise repeatable; vmap matches the loop to "
                       f"{worst:.1e}")


def _check_no_leaks(estimator, seed, **_) -> CheckResult:
    graph, batch = categorical_probe(3, 4, 3)
    noise = probe_noise(estimator, graph, batch, DRAWS_PER_SHAPE_CHECK, seed, torch.float64)
    for param in graph.parameters():
        param.grad = torch.full_like(param, 0.5)
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in graph.named_parameters()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        first = probe_draws(estimator, graph, batch, noise,
                            initial_state(estimator, graph, batch), "loop")
        torch.manual_seed(1)
        second = probe_draws(estimator, graph, batch, noise,
                             initial_state(estimator, graph, batch), "loop")
    problems = []
    for name, param in graph.named_parameters():
        value, grad = before[name]
        if not same(param.detach(), value) or param.grad is None or not same(param.grad, grad):
            problems.append(f"drawing changed parameter {name} or its .grad")
    if not bool((first["unused"] == 0).all()):
        problems.append("a parameter the loss never uses got a non-zero gradient")
    differ = [n for n in first if not same(first[n], second[n])]
    if differ:
        problems.append(f"the draws of {differ} change with torch.manual_seed")
    if problems:
        raise CheckFailed("; ".join(problems))
    return CheckResult("no_leaks", True, "parameters and .grad untouched, unused parameter gets "
                       "exact zeros, independent of the global RNG")


def _flat(tensors: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([tensors[n].reshape(-1) for n in names])


def _check_unbiasedness(estimator, num_draws, alpha, seed) -> CheckResult:
    graph, batch = categorical_probe()
    _, exact = categorical_exact_gradient(graph, batch)
    names = list(exact)
    truth = _flat(exact, names)
    scale = float(truth.norm())
    findings, details = [], {"num_draws": num_draws, "alpha": alpha}
    state = updated_state(estimator, graph, batch, seed, num_draws)
    if estimator.discrete_noise:
        moments = categorical_exact_moments(graph, estimator, batch, state=state)
        exact_bias = float((_flat(moments.mean, names) - truth).norm()) / scale
        details["relative_exact_bias"] = exact_bias
        if exact_bias > EXACT_TOLERANCE:
            findings.append(f"exact relative bias {exact_bias:.3g} (enumeration over "
                            f"{moments.atoms} configurations)")
    accumulator = MomentAccumulator()
    for start in range(0, num_draws, CHUNK_SIZE):
        size = min(CHUNK_SIZE, num_draws - start)
        noise = probe_noise(estimator, graph, batch, size, seed, torch.float64, start)
        draws = probe_draws(estimator, graph, batch, noise, state)
        flat = torch.cat([draws[n].reshape(size, -1) for n in names], 1)
        accumulator.update({"difference": flat - truth}, overwrite=True)
    moments = accumulator["difference"]
    test = zero_mean_test(
        Moments(moments.count, moments.mean, moments.m2), alpha=alpha,
        rounding=rounding_scale((moments.mean + truth).numpy(), truth.numpy()),
    )
    mc_bias = float(moments.mean.norm()) / scale
    details |= {"holm_pvalue": test.pvalue, "flagged": int(test.rejected.sum()),
                "relative_bias": mc_bias}
    if test.rejected.any():
        findings.append(f"Monte Carlo: {int(test.rejected.sum())} of {truth.numel()} coordinates "
                        f"flagged (Holm p = {test.pvalue:.2g}, {num_draws} draws, level "
                        f"{alpha:g}; relative bias {mc_bias:.3g})")
    if estimator.is_unbiased and findings:
        raise CheckFailed(f"claims is_unbiased=True but: {'; '.join(findings)}", **details)
    exact_part = (f"exact relative bias {details['relative_exact_bias']:.2g}, "
                  if "relative_exact_bias" in details else "")
    measured = (f"{exact_part}Monte Carlo relative bias {mc_bias:.2g} (Holm p = "
                f"{test.pvalue:.2g} over {truth.numel()} coordinates, {num_draws} draws)")
    if estimator.is_unbiased:
        return CheckResult("unbiasedness", True, f"no bias detected: {measured}", details)
    verdict = "bias detected" if findings else "no bias detected at this budget"
    return CheckResult("unbiasedness", True, f"claims is_unbiased=False (information only): "
                       f"{verdict}: {measured}", details)

