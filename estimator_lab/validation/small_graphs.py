"""Unbiasedness and variance of an estimator on the small-graph suite, against exact truth.

On each graph of the suite the target and the reference set of its gates (`REFERENCES` for
Bernoulli graphs, `CATEGORICAL_REFERENCES` for categorical ones) draw `draws` estimates with
common random numbers (`run_draws`). Unbiasedness is judged against the exact gradient of the
estimator's own objective (enumeration in float64 for Bernoulli gates and, over the `K^N`
configurations, for categorical gates; the STS and noisy-rectifier objectives where
`estimator_lab.exact` covers them): per-coordinate z-tests
of `mean - exact`, Holm within a graph and Bonferroni across graphs, so a correct estimator is
flagged with probability at most `alpha` over the whole suite (up to the normal approximation).
Where the estimator's noise allows (`exact_moments_for`), its exact mean is compared too, without
Monte Carlo error (flagged above `EXACT_TOLERANCE` relative to the gradient's norm).
Variance: total variance of the gate-logit draws per estimator, work-normalised (times the loss
evaluations per draw), exact where `exact_moments_for` applies, and paired ratios to the reference
set with delta-method intervals over batch-means groups (`variance_ratio_frame`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.prepare import prepare_estimator
from estimator_lab.exact import (
    EnumerationTooLarge,
    NotComputable,
    exact_gradient,
    noisy_rectifier_exact_gradient,
    sts_exact_gradient,
)
from estimator_lab.exact.categorical import categorical_exact_gradient, exact_moments_for
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.categorical import gate_distribution
from estimator_lab.graphs.specs import build_problem
from estimator_lab.montecarlo import GATE_LOGITS, run_draws
from estimator_lab.montecarlo.accumulators import Moments
from estimator_lab.stats import rounding_scale, summary_frame, zero_mean_test
from estimator_lab.stats.summary import variance_ratio_frame
from estimator_lab.testing.unbiasedness import coordinate_name
from estimator_lab.validation.budget import Budget
from estimator_lab.validation.target import Target
from estimator_lab.validation.verdict import Verdict

REFERENCES = {
    "reinforce-oracle": "REINFORCE with the optimal baseline (Eq. 10, exact per batch)",
    "rloo": "RLOO (2 samples)",
    "disarm": "DisARM",
    "st": "straight-through (biased)",
}
"""The reference set on Bernoulli graphs: registry name -> description."""

CATEGORICAL_REFERENCES = {
    "reinforce": "categorical REINFORCE (no baseline)",
    "rloo": "categorical RLOO (2 samples)",
    "indecater": "IndeCateR (1 sample, N K loss evaluations)",
}
"""The reference set on categorical graphs: categorical registry name -> description."""

REFERENCE_SETS = {"bernoulli": REFERENCES, "categorical": CATEGORICAL_REFERENCES}
"""The reference set by the gates of the suite (`Target.gates`)."""

EXACT_TOLERANCE = 1e-6
"""Largest `||E[g] - grad|| / ||grad||` of an exact mean that counts as rounding: enumeration
and Gauss-Legendre quadrature in float64 agree with the exact gradient to about 1e-12."""

ZERO_VARIANCE = 1e-20
"""An exact total variance at most this fraction of the largest total variance on its graph is
zero up to float64 rounding (rounding leaves variances near 1e-32 of the draws' squared size):
IndeCateR's on a separable loss such as cat-toy's."""

CHUNK_SIZE = 500


@dataclass(frozen=True)
class GraphResult:
    """What the suite measured on one graph.

    Attributes:
        spec: the graph spec.
        objective: how the exact gradient was found, or why it was not (`checked` False).
        checked: whether the target's bias was tested here.
        bias: the target's bias test (empty when not checked).
        variance: one row per estimator: total and work-normalised gate-logit variance,
            exact variance where available, and the paired ratio to the target.
    """

    spec: str
    objective: str
    checked: bool
    bias: dict[str, Any] = field(default_factory=dict)
    variance: pd.DataFrame | None = None


def objective_gradient(
    graph: StochasticGraph, batch: tuple[torch.Tensor, ...], estimator: GradientEstimator
) -> tuple[dict[str, torch.Tensor], str]:
    """The exact gradient of the expected loss under the estimator's gate distribution.

    Raises:
        NotComputable: when no exact method covers the distribution on this graph.
    """
    single = len(graph.layer_sizes) == 1
    if estimator.distribution == "categorical":
        return (categorical_exact_gradient(graph, batch)[1],
                f"exact gradient (enumeration of {graph.num_classes}^{graph.num_gates} "
                f"configurations)")
    if estimator.distribution == "bernoulli":
        return exact_gradient(graph, batch)[1], "exact gradient (enumeration)"
    if estimator.distribution == "sts" and single:
        return sts_exact_gradient(graph, batch)[1], "exact STS gradient (enumeration)"
    if estimator.distribution == "noisy-rectifier" and single and graph.num_gates <= 2:
        gradient = noisy_rectifier_exact_gradient(
            graph, batch, noise=getattr(estimator, "noise", "gaussian"),
            sigma=getattr(estimator, "sigma", 1.0))[1]
        return gradient, "exact noisy-rectifier gradient (quadrature)"
    raise NotComputable(f"no exact gradient for distribution {estimator.distribution!r} on "
                        f"a graph with layers {graph.layer_sizes}")


def check_suite(specs: tuple[str, ...], gates: str) -> None:
    """Raises `ValueError` naming the specs whose graphs do not have `gates`
    (`"bernoulli"` or `"categorical"`, as `Target.gates`)."""
    wrong = [s for s in specs if gate_distribution(build_problem(s).graph) != gates]
    if wrong:
        raise ValueError(f"a target for {gates} gates needs graphs with {gates} gates; "
                         f"{', '.join(wrong)} {'has' if len(wrong) == 1 else 'have'} other "
                         f"gates")


def _flat(tensors: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([tensors[n].reshape(-1).double().cpu() for n in names])


def measure_graph(target: Target, spec: str, budget: Budget, *, alpha: float, seed: int,
                  device: torch.device) -> GraphResult:
    """The target and the reference set on one graph: bias test and variance table.

    Args:
        target: the estimator under validation.
        spec: a small-graph spec.
        budget: draws, group size and warm-up.
        alpha: this graph's share of the family-wise level.
        seed: seeds the graph and the noise.
        device: where the draws run.
    """
    problem = build_problem(spec, seed=seed)
    graph = problem.graph.to(device)
    batch = tuple(t.to(device) for t in problem.batch)
    multilayer = len(graph.layer_sizes) > 1
    if multilayer and not target.probe().multilayer:  # before a warm-up that would refuse
        return GraphResult(spec, f"skipped: single-layer estimator, layers {graph.layer_sizes}",
                           False)
    prepared = {target.label: target.build(graph, batch, warmup_steps=budget.warmup_steps,
                                           seed=seed)}
    estimator = prepared[target.label][0]
    for name in REFERENCE_SETS[target.gates]:
        if name != target.label:
            reference, state = prepare_estimator(name, graph, batch, seed=seed,
                                                 warmup_steps=budget.warmup_steps)
            if reference.multilayer or not multilayer:
                prepared[name] = (reference, state)
    estimators = {name: e for name, (e, _) in prepared.items()}
    states = {name: s for name, (_, s) in prepared.items()}
    try:
        gradient, objective = objective_gradient(graph, batch, estimator)
    except NotComputable as reason:
        gradient, objective = None, f"not checked: {reason}"
    method = "vmap" if all(e.supports_vmap for e in estimators.values()) else "loop"
    runs = run_draws(graph, estimators, batch, num_draws=budget.draws, seed=seed,
                     chunk_size=CHUNK_SIZE, states=states, group_size=budget.group_size,
                     method=method)
    exact = {}
    for name, e in estimators.items():
        try:
            exact[name] = exact_moments_for(graph, e, batch, state=states[name])
        except (NotComputable, EnumerationTooLarge):  # e.g. RLOO's 2 x 12 gates on sbn:4-4-4
            pass
    variance = _variance_rows(graph, target.label, estimators, runs, exact)
    if gradient is None:
        return GraphResult(spec, objective, False, variance=variance)
    names = [GATE_LOGITS] + [n for n, _ in graph.named_parameters()]
    bias = _bias_test(runs[target.label], gradient, names, alpha, exact.get(target.label))
    return GraphResult(spec, objective, True, bias, variance)


def _bias_test(accumulator, gradient, names, alpha, exact) -> dict[str, Any]:
    """Per-coordinate z-tests of `mean - exact gradient` (Holm) and the relative bias."""
    moments = {n: accumulator[n] for n in names}
    count = moments[names[0]].count
    mean = torch.cat([moments[n].mean.cpu() for n in names])
    m2 = torch.cat([moments[n].m2.cpu() for n in names])
    truth = _flat(gradient, names)
    test = zero_mean_test(Moments(count, mean - truth, m2), alpha=alpha,
                          rounding=rounding_scale(mean.numpy(), truth.numpy()))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.nan_to_num(test.estimate / test.standard_error)
    worst = int(np.argmax(np.abs(z)))
    shapes = [tuple(gradient[n].shape) for n in names]
    variance_sum = float(m2.sum()) / (count - 1)
    squared_bias = float((mean - truth).square().sum()) - variance_sum / count
    norm = float(truth.norm())
    result = {
        "draws": count, "coordinates": int(truth.numel()), "alpha": alpha,
        "holm_pvalue": test.pvalue, "flagged": int(test.rejected.sum()),
        "worst_coordinate": coordinate_name(names, shapes, worst), "worst_z": float(z[worst]),
        "worst_mean": float(mean[worst]), "worst_exact": float(truth[worst]),
        "relative_bias": math.sqrt(max(squared_bias, 0.0)) / norm if norm > 0 else math.nan,
        "noise_floor": math.sqrt(variance_sum / count) / norm if norm > 0 else math.nan,
        "exact_relative_bias": math.nan, "exact_method": "not computable",
    }
    if exact is not None:
        gap = float((_flat(exact.mean, names) - truth).norm())
        result |= {"exact_relative_bias": gap / norm if norm > 0 else gap,
                   "exact_method": exact.method}
    result["biased"] = bool(result["flagged"]) or result["exact_relative_bias"] > EXACT_TOLERANCE
    return result


def _variance_rows(graph, label, estimators, runs, exact) -> pd.DataFrame:
    """Gate-logit variance per estimator, work-normalised, with paired ratios to the target."""
    evaluations = {n: e.evaluations(graph) for n, e in estimators.items()}
    summary = summary_frame({n: runs[n] for n in estimators}, evaluations=evaluations)
    summary = summary[summary["parameter"] == GATE_LOGITS].set_index("estimator")
    rows = []
    for name, e in estimators.items():
        row = {
            "estimator": name, "unbiased": e.is_unbiased, "evaluations": evaluations[name],
            "total_variance": summary.at[name, "total_variance"],
            "exact_total_variance": float(exact[name].variance[GATE_LOGITS].sum())
            if name in exact else math.nan,
            "work_variance": summary.at[name, "work_variance"],
            "ratio": 1.0, "ratio_low": 1.0, "ratio_high": 1.0,
        }
        if name != label:
            ratios = variance_ratio_frame({label: runs[label], name: runs[name]}, name)
            ratios = ratios[ratios["parameter"] == GATE_LOGITS]
            cost = evaluations[label] / evaluations[name]
            if len(ratios):
                row |= {"ratio": float(ratios["variance_ratio"].iloc[0]) * cost,
                        "ratio_low": float(ratios["ratio_low"].iloc[0]) * cost,
                        "ratio_high": float(ratios["ratio_high"].iloc[0]) * cost}
            else:
                row |= {"ratio": math.nan, "ratio_low": math.nan, "ratio_high": math.nan}
        rows.append(row)
    return pd.DataFrame(rows)


def format_p(pvalue: float) -> str:
    """Two significant digits, or `<1e-300` where the p-value underflows to zero."""
    return f"{pvalue:.2g}" if pvalue > 0 else "<1e-300"


def unbiasedness_verdict(probe: GradientEstimator, results: list[GraphResult]) -> Verdict:
    """The verdict of the suite's bias tests, saying on which graph and how the mean is off."""
    checked = [r for r in results if r.checked]
    details = {r.spec: r.bias for r in checked} | {
        r.spec: {"objective": r.objective} for r in results if not r.checked}
    if not checked:
        reasons = "; ".join(f"{r.spec}: {r.objective}" for r in results)
        return Verdict("unbiasedness", "skip", f"no exact reference on any graph ({reasons})",
                       details)
    biased = [r for r in checked if r.bias["biased"]]
    found = [_finding(r) for r in biased]
    draws = checked[0].bias["draws"]
    if probe.is_unbiased and biased:
        return Verdict("unbiasedness", "fail",
                       "biased (claims is_unbiased=True): " + "; ".join(found), details)
    if probe.is_unbiased:
        smallest = min(r.bias["holm_pvalue"] for r in checked)
        exact = [r.spec for r in checked if r.bias["exact_method"] != "not computable"]
        also = f"; exact mean equals the gradient on {', '.join(exact)}" if exact else ""
        return Verdict("unbiasedness", "pass",
                       f"no bias on {len(checked)} graphs ({', '.join(r.spec for r in checked)}; "
                       f"{draws:,} draws each, smallest Holm p={format_p(smallest)}){also}",
                       details)
    if biased:
        return Verdict("unbiasedness", "biased",
                       "biased, as declared (is_unbiased=False): " + "; ".join(found), details)
    sizes = ", ".join(f"{r.spec} {r.bias['relative_bias']:.2g}" for r in checked)
    return Verdict("unbiasedness", "info",
                   f"declares is_unbiased=False, but no bias detected at {draws:,} draws "
                   f"(relative bias {sizes})", details)


def _finding(result: GraphResult) -> str:
    b = result.bias
    exact = (f", exact relative bias {b['exact_relative_bias']:.3g} ({b['exact_method']})"
             if b["exact_method"] != "not computable" else "")
    return (f"mean differs from the exact gradient on {result.spec} "
            f"(Holm p={format_p(b['holm_pvalue'])}, "
            f"{b['flagged']} of {b['coordinates']} coordinates flagged, worst coordinate "
            f"{b['worst_coordinate']} z={b['worst_z']:.1f}: mean {b['worst_mean']:.3g} vs exact "
            f"{b['worst_exact']:.3g}; relative bias {b['relative_bias']:.3g}{exact})")


def variance_verdict(label: str, results: list[GraphResult]) -> Verdict:
    """Work-normalised gate-logit variance against the best unbiased reference on each graph.

    A reference whose exact variance is zero (`ZERO_VARIANCE`) is named, not divided by: the
    target is compared with the best of the others and is not lower than the best reference.
    """
    parts, details, better, compared = [], {}, 0, 0
    for result in results:
        frame = result.variance
        if frame is None:
            continue
        references = frame[(frame["estimator"] != label) & frame["unbiased"]]
        zero = references[references["exact_total_variance"]
                          <= ZERO_VARIANCE * frame["total_variance"].max()]
        references = references.drop(zero.index)
        if references.empty or references["work_variance"].isna().all():
            continue
        best = references.loc[references["work_variance"].idxmin()]
        compared += 1
        better += bool(best["ratio_high"] < 1) and zero.empty
        exact_zero = (f" ({', '.join(zero['estimator'])}: zero variance, exact)"
                      if len(zero) else "")
        parts.append(f"{result.spec} {best['ratio']:.2g}x {best['estimator']} "
                     f"[{best['ratio_low']:.2g}, {best['ratio_high']:.2g}]{exact_zero}")
        details[result.spec] = frame.to_dict("records")
    if not compared:
        return Verdict("variance", "skip", "no graph with an unbiased reference", details)
    verdict = (f"lower than the best unbiased reference on {better} of {compared} graphs"
               if better else "not lower than the best unbiased reference on any graph")
    if not all(r.bias.get("biased") is False for r in results if r.checked):
        verdict += " (the target is biased: weigh its bias in the bias table too)"
    return Verdict("variance", "info",
                   f"{verdict}; work-normalised gate-logit variance over the best unbiased "
                   f"reference (95% interval): {'; '.join(parts)}", details)
