"""Point estimates with confidence intervals, one dodged series per estimator."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats

from estimator_lab.plotting.style import (
    appearance_order,
    estimator_palette,
    legend_beside,
    legend_height,
)

DODGE = 0.8  # the width the estimators share around each category (as seaborn's `dodge`)


def require_columns(frame: pd.DataFrame, columns: Iterable[str | None], function: str) -> None:
    """Raises a one-line `ValueError` naming the columns `function` needs that `frame` lacks."""
    missing = [c for c in columns if c is not None and c not in frame.columns]
    if missing:
        raise ValueError(
            f"{function} needs column(s) {', '.join(map(repr, missing))}; the frame has "
            f"{', '.join(map(repr, frame.columns))}"
        )


def dodge_offsets(count: int) -> np.ndarray:
    """The x offsets of `count` series dodged side by side within `DODGE` of each category."""
    return (np.arange(count) - (count - 1) / 2) * DODGE / count


def category_order(values: pd.Series) -> list:
    """The categories along an axis: numbers in increasing order, anything else in order of
    first appearance."""
    unique = pd.unique(values)
    return sorted(unique) if pd.api.types.is_numeric_dtype(values) else list(unique)


def variance_interval_plot(
    frame: pd.DataFrame,
    *,
    value: str = "variance",
    low: str = "variance_low",
    high: str = "variance_high",
    by: str = "parameter",
    order: list[str] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Variance estimates with their confidence intervals per category and estimator, log scale.

    One point with an asymmetric error bar `[low, high]` per row; categories (`by`) along the x
    axis in order of first appearance, estimators dodged side by side in the command's order
    (first appearance) and the catalogue's colours, the legend beside the axes. Rows with a
    missing (NaN) bound are drawn without a bar.

    Args:
        frame: tidy rows with columns `estimator`, `by`, `value`, `low` and `high` (e.g. the
            fourth-moment intervals of `Moments`, which are positive for positive variances).
        value: the column of the point estimates.
        low: the column of the lower confidence bounds.
        high: the column of the upper confidence bounds.
        by: the categorical column along the x axis (e.g. `parameter`).
        order: the estimators' order (default: first appearance in `frame`).
        ax: axes to draw on (default: a new figure, not registered with pyplot).

    Returns:
        the axes.

    Raises:
        ValueError: a column is missing, an interval does not contain its estimate, or
            `order` misses an estimator.
    """
    require_columns(frame, ["estimator", by, value, low, high], "variance_interval_plot")
    lower = np.array(frame[value] - frame[low], dtype=float)
    upper = np.array(frame[high] - frame[value], dtype=float)
    if (lower < 0).any() or (upper < 0).any():
        raise ValueError(f"every interval [{low}, {high}] must contain its {value}")
    missing = np.isnan(lower) | np.isnan(upper)
    lower[missing] = upper[missing] = np.nan  # no half bars
    categories = category_order(frame[by])
    position = {category: i for i, category in enumerate(categories)}
    order = appearance_order(frame["estimator"], order)
    palette = estimator_palette(order)
    ax = ax or Figure(figsize=(max(6.0, 1.0 + 0.8 * len(categories)) + 2.0,
                               max(4.0, legend_height(len(order))))).subplots()
    for offset, name in zip(dodge_offsets(len(order)), order, strict=True):
        rows = (frame["estimator"] == name).to_numpy()
        part = frame[rows]
        ax.errorbar(
            part[by].map(position) + offset, part[value], yerr=[lower[rows], upper[rows]],
            fmt="o", color=palette[name], label=name, markersize=4, capsize=2,
        )
    ax.set_yscale("log")
    ax.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=30, ha="right")
    ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(by.replace("_", " "))
    ax.set_ylabel(f"{value.replace('_', ' ')} (confidence interval)")
    sns.despine(ax=ax)
    legend_beside(ax)
    return ax


def bias_interval_plot(
    frame: pd.DataFrame,
    *,
    estimate: str = "mean",
    exact: str = "exact",
    stderr: str = "stderr",
    by: str = "index",
    confidence_level: float = 0.95,
    max_rows: int = 16,
    order: list[str] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Monte Carlo mean minus the exact value with normal confidence intervals, per estimator.

    Each row is drawn at `estimate − exact` with the interval `± z · stderr`, where
    `z = Φ⁻¹((1 + confidence_level) / 2)` (1.96 at 95%); a vertical line marks zero, so an
    interval that misses it flags a bias at that coordinate (before any multiplicity correction).
    Rows (`by`: coordinates in increasing order, or categories in order of appearance) run down
    the y axis, estimators dodged in the command's order (first appearance) and the catalogue's
    colours, the legend beside the axes.

    Args:
        frame: tidy rows with columns `estimator`, `by`, `estimate`, `exact` and `stderr`
            (e.g. the bias study's `results.csv`, one parameter's rows).
        estimate: the column of the Monte Carlo means.
        exact: the column of the exact values.
        stderr: the column of the standard errors of the means.
        by: the column naming each row (a coordinate `index`, or e.g. `parameter`).
        confidence_level: the intervals' coverage.
        max_rows: draw only the first `max_rows` values of `by`.
        order: the estimators' order (default: first appearance in `frame`).
        ax: axes to draw on (default: a new figure, not registered with pyplot).

    Returns:
        the axes.

    Raises:
        ValueError: a column is missing, `confidence_level` is not in (0, 1), or `order`
            misses an estimator.
    """
    require_columns(frame, ["estimator", by, estimate, exact, stderr], "bias_interval_plot")
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level}")
    categories = category_order(frame[by])[:max_rows]
    position = {category: i for i, category in enumerate(categories)}
    frame = frame[frame[by].isin(categories)]
    z = stats.norm.ppf(0.5 + confidence_level / 2)
    order = appearance_order(frame["estimator"], order)
    palette = estimator_palette(order)
    height = max(3.0, 1.0 + 0.12 * len(order) * len(categories), legend_height(len(order)))
    ax = ax or Figure(figsize=(10, height)).subplots()
    for offset, name in zip(dodge_offsets(len(order)), order, strict=True):
        part = frame[frame["estimator"] == name]
        ax.errorbar(
            part[estimate] - part[exact], part[by].map(position) + offset,
            xerr=z * part[stderr], fmt="o", color=palette[name], label=name, markersize=3,
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(categories)), [str(c) for c in categories])
    ax.set_ylim(len(categories) - 0.5, -0.5)  # first row on top
    ax.set_xlabel(f"{estimate} − {exact} ({confidence_level:.0%} interval)")
    ax.set_ylabel(by.replace("_", " "))
    sns.despine(ax=ax)
    legend_beside(ax)
    return ax
