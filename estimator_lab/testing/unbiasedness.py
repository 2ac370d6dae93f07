"""The statistical check of the estimator contract: `unbiasedness`.

The Monte Carlo mean of `num_draws` draws against the exact gradient (enumeration) on the
enumerable `reference_problems`, with Holm-corrected per-coordinate z-tests over every
coordinate of every graph; its false-failure rate and power are in `testing.contract`'s
Note [Randomized statistical tests].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as scipy_stats

from estimator_lab.exact.enumeration import exact_gradient
from estimator_lab.montecarlo.accumulators import MomentAccumulator, Moments
from estimator_lab.montecarlo.engine import GATE_LOGITS
from estimator_lab.stats.unbiasedness import rounding_scale, zero_mean_test
from estimator_lab.testing.drawing import probe_draws, probe_noise
from estimator_lab.testing.probes import conditional_probe, reference_problems
from estimator_lab.testing.results import CheckFailed, CheckResult
from estimator_lab.testing.subject import Settings, Subject

DEFAULT_NUM_DRAWS = 2000  # see `testing.contract`'s Note for the power this buys
DEFAULT_ALPHA = 1e-3
POWER = 0.999  # the detection probability the stated detectable bias refers to
CHUNK_SIZE = 1000  # draws held in memory at once by the unbiasedness check
NUM_STATE_UPDATES = 8  # `update` calls before the unbiasedness check freezes the state


def updated_state(estimator, graph, batch, seed: int, start: int):
    """The state after `NUM_STATE_UPDATES` updates on noise the measured draws do not use
    (float64 draws `start, start + 1, ...`); the check then freezes it."""
    with torch.no_grad():
        prepared = graph.prepare(batch)
    state = estimator.init(graph, prepared)
    for row in probe_noise(estimator, graph, batch, NUM_STATE_UPDATES, seed, torch.float64,
                           start):
        state = estimator.update(state, graph, prepared, row)
    return state


@dataclass(frozen=True)
class _GraphDraws:
    label: str
    names: list[str]
    shapes: list[tuple[int, ...]]
    exact: torch.Tensor  # d
    moments: Moments  # of draw - exact
    covariance: torch.Tensor  # d x d, of one draw


def _measure(subject: Subject, settings: Settings, label, graph, batch) -> _GraphDraws:
    """Draws minus the exact gradient on one graph: moments and covariance, streamed."""
    _, exact = exact_gradient(graph, batch)
    names = [GATE_LOGITS] + [n for n, _ in graph.named_parameters()]
    exact_flat = torch.cat([exact[n].reshape(-1) for n in names])
    estimator = subject.build(graph, batch)
    n = settings.num_draws
    state = updated_state(estimator, graph, batch, settings.seed, start=n)
    accumulator = MomentAccumulator()
    shift = gram = None
    for start in range(0, n, CHUNK_SIZE):
        size = min(CHUNK_SIZE, n - start)
        noise = probe_noise(estimator, graph, batch, size, settings.seed, torch.float64, start)
        draws = probe_draws(estimator, graph, batch, noise, state)
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


def coordinate_name(names, shapes, index: int) -> str:
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


def check_unbiasedness(subject: Subject, settings: Settings) -> CheckResult:
    probe = subject.build(*conditional_probe(4, 2, torch.float64))
    if probe.distribution != "bernoulli":
        return CheckResult(
            "unbiasedness", True,
            f"not checked: no exact reference for distribution {probe.distribution!r} "
            f"(enumeration gives the gradient under Bernoulli gates only)",
            {"checked": False},
        )
    measured = [
        _measure(subject, settings, label, graph, batch)
        for label, graph, batch in reference_problems(probe.multilayer)
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
                f"coordinate {coordinate_name(m.names, m.shapes, worst)}: mean {mean_draw:.3g} ± "
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
        raise CheckFailed(
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

