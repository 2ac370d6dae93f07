"""The deterministic checks of the estimator contract: `flags`, `shapes`, `dtypes`, `devices`,
`determinism` and `no_leaks` (what each verifies is in `testing.contract`'s docstring).

Each check takes the `Subject` and the `Settings`, collects every problem it finds in plain
words, and raises `CheckFailed` with all of them, or returns a passing `CheckResult` saying
what it verified.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from estimator_lab.estimators.prepare import initial_state
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.montecarlo.engine import GATE_LOGITS
from estimator_lab.noise import uniform_noise
from estimator_lab.testing.drawing import (
    DRAWS_PER_SHAPE_CHECK,
    FLOAT32_TOLERANCE,
    FLOAT64_TOLERANCE,
    draw_method,
    probe_draws,
    probe_noise,
    relative_difference,
    same,
)
from estimator_lab.testing.probes import (
    NetworkWithUnusedParameter,
    conditional_probe,
    copy_to,
    probe_problems,
    sbn_probe,
)
from estimator_lab.testing.results import CheckFailed, CheckResult
from estimator_lab.testing.subject import Batch, Settings, Subject


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


def _evaluations(subject: Subject, graph: StochasticGraph, batch: Batch) -> Any:
    return subject.build(graph, batch).evaluations(graph)


def check_flags(subject: Subject, settings: Settings) -> CheckResult:
    graph, batch = conditional_probe(5, 3, settings.dtype)
    sbn, sbn_batch = sbn_probe(3, settings.dtype)
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
        raise CheckFailed(_join(problems))
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
    state = initial_state(estimator, graph, batch)
    found = _attempt(problems, f"{label}: surrogate",
                     _surrogate_problems, label, graph, batch, estimator, noise[0], state)
    if found is None or found:
        problems += found or []
        return None
    draws = _attempt(problems, f"{label}: drawing ({draw_method(estimator)})",
                     probe_draws, estimator, graph, batch, noise, state)
    if draws is None:
        return None
    found = _validate_draws(label, graph, batch, draws, noise.shape[0], dtype, device)
    problems += found
    return None if found else draws


def check_shapes(subject: Subject, settings: Settings) -> CheckResult:
    dtype, seed, k = settings.dtype, settings.seed, DRAWS_PER_SHAPE_CHECK
    cases = [(f"conditional B={b} G={g}", *conditional_probe(g, b, dtype))
             for b in (1, 3) for g in (1, 5)]
    problems, checked = [], []
    for label, graph, batch in cases:
        estimator = subject.build(graph, batch)
        with torch.no_grad():
            shape = estimator.noise_shape(graph, graph.prepare(batch))
        if not (isinstance(shape, tuple) and all(isinstance(s, int) and s > 0 for s in shape)):
            problems.append(f"{label}: noise_shape must be a tuple of positive ints, got {shape!r}")
            continue
        noise = probe_noise(estimator, graph, batch, k, seed, dtype)
        _draw_and_validate(problems, label, subject, graph, batch, noise)
        checked.append(label)
    graph, batch = sbn_probe(3, dtype)
    estimator = subject.build(graph, batch)
    label = "sbn-3-2 (two gate layers)"
    if estimator.multilayer:
        noise = probe_noise(estimator, graph, batch, k, seed, dtype)
        _draw_and_validate(problems, label, subject, graph, batch, noise)
        checked.append(label)
    else:
        problems += _single_layer_refuses(graph, batch, estimator, seed, dtype)
        checked.append(f"{label} refused with ValueError")
    if problems:
        raise CheckFailed(_join(problems))
    return CheckResult("shapes", True, f"{k} draws each in {dtype}: " + ", ".join(checked))


def _single_layer_refuses(graph, batch, estimator, seed, dtype) -> list[str]:
    """A single-layer estimator must raise `ValueError` on a multi-layer graph."""
    with torch.no_grad():
        prepared = graph.prepare(batch)
    try:
        state = estimator.init(graph, prepared)
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


def check_dtypes(subject: Subject, settings: Settings) -> CheckResult:
    seed, k = settings.seed, DRAWS_PER_SHAPE_CHECK
    probe = subject.build(*conditional_probe(5, 3, settings.dtype))
    problems, agreement = [], {}
    for label, graph, batch in probe_problems(probe.multilayer, torch.float32):
        noise = probe_noise(subject.build(graph, batch), graph, batch, k, seed, torch.float32)
        draws = {}
        for dtype in settings.dtypes:
            # Upcasting a float32 graph, inputs and noise is exact: only the arithmetic differs.
            g, b = copy_to(graph, batch, dtype)
            draws[dtype] = _draw_and_validate(
                problems, f"{label} {dtype}", subject, g, b, noise.to(dtype)
            )
        low, high = settings.dtypes[:2] if len(settings.dtypes) > 1 else (None, None)
        if low is None or draws[low] is None or draws[high] is None:
            continue
        worst, name = relative_difference(draws[low], draws[high])
        agreement[label] = worst
        if not worst <= FLOAT32_TOLERANCE:
            problems.append(
                f"{label}: {low} and {high} draws from the same float32 graph and noise "
                f"differ by {worst:.2g} of the largest draw ({name}); rounding explains at "
                f"most {FLOAT32_TOLERANCE:g}"
            )
    if problems:
        raise CheckFailed(_join(problems), agreement=agreement)
    names = ", ".join(str(d).removeprefix("torch.") for d in settings.dtypes)
    compared = f"; largest relative difference {_listing(agreement)}" if agreement else ""
    return CheckResult("dtypes", True, f"{names} work{compared}", {"agreement": agreement})


def check_devices(subject: Subject, settings: Settings) -> CheckResult:
    others = [d for d in settings.devices if d != torch.device("cpu")]
    if not others:
        return CheckResult("devices", True, "cpu only (no other device asked for or available)")
    seed, k = settings.seed, DRAWS_PER_SHAPE_CHECK
    probe = subject.build(*conditional_probe(5, 3, settings.dtype))
    problems, agreement = [], {}
    for dtype in settings.dtypes:
        tolerance = FLOAT64_TOLERANCE if dtype == torch.float64 else FLOAT32_TOLERANCE
        for label, graph, batch in probe_problems(probe.multilayer, dtype):
            noise = probe_noise(subject.build(graph, batch), graph, batch, k, seed, dtype)
            reference = _draw_and_validate(problems, f"{label} {dtype} on cpu", subject, graph,
                                           batch, noise)
            for device in others:
                where = f"{label} {dtype} on {device}"
                g, b = copy_to(graph, batch, device=device)
                draws = _draw_and_validate(problems, where, subject, g, b, noise.to(device),
                                           device)
                if draws is None or reference is None:
                    continue
                worst, name = relative_difference(draws, reference)
                agreement[where] = worst
                if not worst <= tolerance:
                    problems.append(f"{where}: draws differ from the CPU's by {worst:.2g} of the "
                                    f"largest draw ({name}), more than rounding ({tolerance:g})")
    if problems:
        raise CheckFailed(_join(problems), agreement=agreement)
    return CheckResult(
        "devices", True,
        f"{', '.join(str(d) for d in others)} match the CPU draws (largest relative difference "
        f"{max(agreement.values()):.1e})",
        {"agreement": agreement},
    )


def check_determinism(subject: Subject, settings: Settings) -> CheckResult:
    seed, k, dtype = settings.seed, DRAWS_PER_SHAPE_CHECK, settings.dtype
    tolerance = FLOAT64_TOLERANCE if dtype == torch.float64 else FLOAT32_TOLERANCE
    probe = subject.build(*conditional_probe(5, 3, dtype))
    problems, agreement = [], {}
    for label, graph, batch in probe_problems(probe.multilayer, dtype):
        estimator = subject.build(graph, batch)
        state = initial_state(estimator, graph, batch)
        noise = probe_noise(estimator, graph, batch, k, seed, dtype)
        method = draw_method(estimator)
        first = _attempt(problems, f"{label}: drawing ({method})",
                         probe_draws, estimator, graph, batch, noise, state)
        if first is None:
            continue
        second = probe_draws(estimator, graph, batch, noise.clone(), state)
        unequal = [n for n in first if not torch.equal(first[n], second[n])]
        if unequal:
            problems.append(f"{label}: the same noise gave different draws for {unequal} "
                            f"({method})")
        if estimator.supports_vmap:
            looped = probe_draws(estimator, graph, batch, noise, state, method="loop")
            worst, name = relative_difference(first, looped)
            agreement[label] = worst
            if not worst <= tolerance:
                problems.append(f"{label}: vmap and loop draws differ by {worst:.2g} of the "
                                f"largest draw ({name}); set supports_vmap=False if the surrogate "
                                f"cannot be vmapped")
    if problems:
        raise CheckFailed(_join(problems), agreement=agreement)
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

def _state_problems(state: Any, snapshot: dict[str, torch.Tensor], when: str) -> list[str]:
    problems = []
    for path, tensor in _state_tensors(state):
        if tensor.requires_grad:
            problems.append(f"{path} requires grad {when}: state must be detached")
        elif tensor.grad is not None:
            problems.append(f"{path} received a .grad {when}: a gradient leaked into the state")
        if path in snapshot and not same(tensor.detach(), snapshot[path]):
            problems.append(f"{path} changed {when}: surrogate must only read the state, and "
                            f"update must return a new one")
    return problems


def _surrogate_backward(estimator, graph, batch, noise, state) -> None:
    """One surrogate and its `.backward()`, on a copy of the graph (its `.grad` is scratch)."""
    graph = copy.deepcopy(graph)
    value = estimator.surrogate(graph, graph.prepare(batch), noise, state)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.requires_grad:
        value.backward()


def check_no_leaks(subject: Subject, settings: Settings) -> CheckResult:
    seed, dtype, k = settings.seed, settings.dtype, DRAWS_PER_SHAPE_CHECK
    graph, batch = conditional_probe(5, 3, dtype, network=NetworkWithUnusedParameter)
    estimator = subject.build(graph, batch)
    noise = probe_noise(estimator, graph, batch, k + 1, seed, dtype)
    problems = []

    # State: detached, read-only in surrogate, replaced (not edited) by update.
    initial = initial_state(estimator, graph, batch)
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
    draws = _attempt(problems, f"drawing ({draw_method(estimator)})",
                     probe_draws, estimator, graph, batch, noise[:k],
                     initial_state(estimator, graph, batch))
    for name, param in graph.named_parameters():
        value, grad = before[name]
        if not same(param.detach(), value):
            problems.append(f"drawing changed the value of parameter {name}")
        if param.grad is None or not same(param.grad, grad):
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
        return probe_draws(estimator, graph, batch, noise[:k],
                           initial_state(estimator, graph, batch), method="loop")

    with torch.random.fork_rng(devices=[]):
        first = _attempt(problems, "drawing (loop)", seeded, 0)
        second = _attempt(problems, "drawing (loop)", seeded, 1)
    if first is not None and second is not None:
        differ = [n for n in first if not same(first[n], second[n])]
        if differ:
            problems.append(f"the draws of {differ} change with torch.manual_seed: the surrogate "
                            f"reads the global RNG (all randomness must come from the noise)")
    if problems:
        raise CheckFailed(_join(problems))
    paths = [path for path, _ in _state_tensors(initial)]
    return CheckResult(
        "no_leaks", True,
        f"parameters and .grad untouched, unused parameter gets exact zeros, {len(paths)} state "
        f"tensors detached and read-only, independent of the global RNG",
        {"state_tensors": paths},
    )
