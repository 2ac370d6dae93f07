"""The tidy per-estimator, per-parameter summary with a fixed column schema.

`SUMMARY_COLUMNS` documents every column; `summary_frame` fills them from the accumulators of
a run, a reference gradient (exact, or the local-expectation reference on the full network),
and the estimators' costs. Frames round-trip through CSV and parquet unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from estimator_lab.montecarlo.accumulators import MomentAccumulator
from estimator_lab.stats.intervals import (
    group_mean,
    paired_ratio,
    relative_bias_interval,
    snr_interval,
)

SUMMARY_COLUMNS = {
    "estimator": "registry name",
    "parameter": "tracked tensor: 'gate_logits' or a parameter name",
    "numel": "coordinates d",
    "draws": "draws N",
    "mean_variance": "tr(Sigma)/d, the mean per-coordinate variance of one draw",
    "total_variance": "tr(Sigma), the total variance of one draw",
    "total_variance_low": "95% interval of tr(Sigma), t interval over groups (batch means)",
    "total_variance_high": "upper end of that interval",
    "mean_norm": "||mean draw||, Monte Carlo noise included",
    "signal_norm": "sqrt(max(||mean||^2 - tr(Sigma)/N, 0)), an estimate of ||E g||",
    "snr": "signal_norm / sqrt(tr(Sigma)), signal-to-noise ratio of one draw",
    "reference_norm": "||r|| of the reference gradient r",
    "cosine": "cosine between the mean draw and r",
    "squared_bias": "||mean - r||^2 - tr(Sigma)/N, unbiased for ||E g - r||^2 (can be < 0)",
    "squared_bias_low": "95% interval of ||E g - r||^2, t interval over groups",
    "squared_bias_high": "upper end of that interval",
    "squared_bias_pvalue": "one-sided p-value of ||E g - r||^2 > 0 over groups",
    "relative_bias": "sqrt(max(squared_bias, 0)) / ||r||",
    "mse": "squared_bias + total_variance: mean squared error of one draw against r",
    "evaluations_per_draw": "loss evaluations per draw",
    "work_variance": "total_variance x evaluations_per_draw",
    "seconds_per_draw": "measured wall time per draw (noise and gradients, warm-up included)",
    "time_variance": "total_variance x seconds_per_draw",
    "relative_bias_low": "95% interval of ||E g - r|| / ||r||: the squared-bias interval "
                         "through sqrt(max(., 0)) / ||r|| (0: no bias detectable)",
    "relative_bias_high": "upper end of that interval",
    "snr_low": "95% interval of ||E g|| / sqrt(tr(Sigma)): a 97.5% ball around the mean draw "
               "with a 97.5% group interval of tr(Sigma) (0: signal not detectable; NaN "
               "without groups)",
    "snr_high": "upper end of that interval",
}


def _interval(groups, store: str, name: str, rounding: float = 0.0,
              confidence_level: float = 0.95) -> tuple[float, float, float]:
    values = getattr(groups, store, {}).get(name, {}) if groups is not None else {}
    if len(values) < 2:
        return np.nan, np.nan, np.nan
    result = group_mean(list(values.values()), rounding=rounding)
    low, high = result.confidence_interval(confidence_level)
    return low, high, result.pvalue


def summary_frame(
    accumulators: Mapping[str, MomentAccumulator],
    *,
    references: Mapping[str, torch.Tensor] | None = None,
    evaluations: Mapping[str, int] | None = None,
    differences: Mapping[str, MomentAccumulator] | None = None,
) -> pd.DataFrame:
    """One row per estimator and tracked tensor, with the columns of `SUMMARY_COLUMNS`.

    Args:
        accumulators: estimator name -> its run's accumulator (with groups for intervals).
        references: tensor name -> reference gradient `r` (bias columns are NaN without it).
        evaluations: estimator name -> loss evaluations per draw (NaN if absent).
        differences: estimator name -> accumulator of its draws minus paired draws of a
            noisy reference (`run_draws(..., paired_with=...)`); the bias columns then come
            from the differences, `||mean(g - r)||^2 - tr(Cov(g - r))/N`, which is unbiased
            for `||E g - E r||^2` whatever the reference's own noise.

    Returns:
        a DataFrame with exactly the columns of `SUMMARY_COLUMNS`, in that order.
    """
    references = dict(references or {})
    evaluations = dict(evaluations or {})
    rows = []
    for estimator, accumulator in accumulators.items():
        for name in accumulator.names():
            moments = accumulator[name]
            n, d = moments.count, moments.mean.numel()
            total = float(moments.variance.sum())
            mean_norm = float(moments.mean.norm())
            signal = max(mean_norm**2 - total / n, 0.0) ** 0.5
            row = {
                "estimator": estimator, "parameter": name, "numel": d, "draws": n,
                "mean_variance": total / d, "total_variance": total,
                "mean_norm": mean_norm, "signal_norm": signal,
                "snr": signal / total**0.5 if total > 0 else np.inf,
            }
            row["total_variance_low"], row["total_variance_high"], _ = _interval(
                accumulator.groups, "total_variance", name)
            variance_low, variance_high, _ = _interval(
                accumulator.groups, "total_variance", name, confidence_level=0.975)
            row["snr_low"], row["snr_high"] = snr_interval(mean_norm, n, variance_low,
                                                           variance_high)
            reference = references.get(name)
            if reference is not None:
                r = reference.reshape(-1).double().to(moments.mean.device)
                r_norm = float(r.norm())
                paired = (differences or {}).get(estimator)
                gap, spread, groups = (
                    (moments.mean - r, total, accumulator.groups) if paired is None else
                    (paired[name].mean, float(paired[name].variance.sum()), paired.groups)
                )
                squared_bias = float(gap.square().sum()) - spread / n
                # Rounding of float64 sums: 64 ulps of the largest norms involved.
                ulps = 64 * np.finfo(np.float64).eps
                rounding = (ulps * max(r_norm, mean_norm)) ** 2 + ulps * total
                low, high, pvalue = _interval(groups, "squared_bias", name, rounding)
                row |= {
                    "reference_norm": r_norm,
                    "cosine": float(moments.mean @ r) / (mean_norm * r_norm)
                    if mean_norm * r_norm > 0 else np.nan,
                    "squared_bias": squared_bias, "squared_bias_low": low,
                    "squared_bias_high": high, "squared_bias_pvalue": pvalue,
                    "relative_bias": max(squared_bias, 0.0) ** 0.5 / r_norm
                    if r_norm > 0 else np.nan,
                    "mse": max(squared_bias, 0.0) + total,
                }
                row["relative_bias_low"], row["relative_bias_high"] = (
                    relative_bias_interval(low, high, r_norm) if r_norm > 0 else (np.nan, np.nan))
            per_draw = accumulator.elapsed_s / n if accumulator.elapsed_s else np.nan
            cost = evaluations.get(estimator, np.nan)
            row |= {"evaluations_per_draw": cost, "work_variance": total * cost,
                    "seconds_per_draw": per_draw, "time_variance": total * per_draw}
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=list(SUMMARY_COLUMNS))


RATIO_COLUMNS = ["estimator", "baseline", "parameter", "variance_ratio", "ratio_low",
                 "ratio_high", "bootstrap_low", "bootstrap_high", "groups"]


def variance_ratio_frame(
    accumulators: Mapping[str, MomentAccumulator], baseline: str
) -> pd.DataFrame:
    """Total-variance ratios of every estimator to `baseline`, paired group by group.

    Draws with the same index share their noise (common random numbers), so the batch-means
    group values of two estimators are paired; `paired_ratio` turns them into a ratio with a
    delta-method interval and a paired bootstrap interval (95%).

    Args:
        accumulators: estimator name -> accumulator with batch-means groups.
        baseline: the estimator in the denominator.

    Returns:
        rows with the columns of `RATIO_COLUMNS` (one per other estimator and tracked tensor
        with at least two complete groups and positive variances).
    """
    reference = accumulators[baseline].groups
    if reference is None:
        raise ValueError("variance ratios need accumulators with groups (group_size=...)")
    rows = []
    for name, accumulator in accumulators.items():
        if name == baseline or accumulator.groups is None:
            continue
        for tensor, values in accumulator.groups.total_variance.items():
            theirs = reference.total_variance.get(tensor, {})
            shared = sorted(values.keys() & theirs.keys())
            a = np.array([values[g] for g in shared])
            b = np.array([theirs[g] for g in shared])
            if len(shared) < 2 or a.mean() <= 0 or b.mean() <= 0:
                continue
            ratio = paired_ratio(a, b)
            low, high = ratio.confidence_interval(0.95)
            boot_low, boot_high = ratio.bootstrap_interval(0.95)
            rows.append({"estimator": name, "baseline": baseline, "parameter": tensor,
                         "variance_ratio": ratio.estimate, "ratio_low": low, "ratio_high": high,
                         "bootstrap_low": boot_low, "bootstrap_high": boot_high,
                         "groups": ratio.groups})
    return pd.DataFrame(rows, columns=RATIO_COLUMNS)


def with_interval_columns(summary: pd.DataFrame) -> pd.DataFrame:
    """`summary` with any of the interval columns it lacks appended (tables of older runs).

    `relative_bias_low`/`_high` are derived from the squared-bias interval and
    `reference_norm`, exactly as `summary_frame` computes them; `snr_low`/`_high` need the
    run's groups and are NaN when missing.

    Args:
        summary: rows with at least the `squared_bias_low`, `squared_bias_high` and
            `reference_norm` columns of `SUMMARY_COLUMNS`.

    Returns:
        a copy with `relative_bias_low`, `relative_bias_high`, `snr_low` and `snr_high`.
    """
    summary = summary.copy()
    if not {"relative_bias_low", "relative_bias_high"} <= set(summary.columns):
        norm = summary["reference_norm"].where(summary["reference_norm"] > 0)
        summary["relative_bias_low"], summary["relative_bias_high"] = relative_bias_interval(
            summary["squared_bias_low"].to_numpy(float), summary["squared_bias_high"].to_numpy(
                float), norm.to_numpy(float))
    for column in ("snr_low", "snr_high"):
        if column not in summary.columns:
            summary[column] = np.nan
    return summary
