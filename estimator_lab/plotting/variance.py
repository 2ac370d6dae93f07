"""Figures of gradient variance per parameter group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from estimator_lab.plotting.intervals import (
    DODGE,
    category_order,
    dodge_offsets,
    require_columns,
)
from estimator_lab.plotting.style import (
    appearance_order,
    estimator_palette,
    legend_beside,
    legend_height,
)

LOG_MARGIN = 0.05  # of the decades shown, left free below the lowest and above the highest end


def _bounds(frame: pd.DataFrame, value: str, low: str | None, high: str | None):
    """The `[low, high]` arrays of the error bars, or `None` where the frame has no interval."""
    if (low is None) != (high is None):
        raise ValueError("group_variance_plot needs both low and high, or neither")
    if low is not None:
        require_columns(frame, [low, high], "group_variance_plot")
        return frame[low].to_numpy(float), frame[high].to_numpy(float)
    if {f"{value}_low", f"{value}_high"} <= set(frame.columns):
        return frame[f"{value}_low"].to_numpy(float), frame[f"{value}_high"].to_numpy(float)
    if value == "mean_variance" and {"total_variance_low", "total_variance_high",
                                     "numel"} <= set(frame.columns):
        numel = frame["numel"].to_numpy(float)
        return (frame["total_variance_low"].to_numpy(float) / numel,
                frame["total_variance_high"].to_numpy(float) / numel)
    return None


def log_limits(values: np.ndarray) -> tuple[float, float]:
    """y limits of a log axis showing every positive finite one of `values`, with margins.

    Raises:
        ValueError: no value is positive and finite.
    """
    shown = values[np.isfinite(values) & (values > 0)]
    if shown.size == 0:
        raise ValueError("a log axis needs at least one positive finite value")
    bottom, top = np.log10(shown.min()), np.log10(shown.max())
    margin = max(LOG_MARGIN * (top - bottom), 0.1)
    return 10 ** (bottom - margin), 10 ** (top + margin)


def group_variance_plot(
    frame: pd.DataFrame,
    *,
    value: str = "mean_variance",
    low: str | None = None,
    high: str | None = None,
    order: list[str] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Bar chart of a per-group variance figure, one bar per estimator, log scale, with intervals.

    Parameter groups run along the x axis in order of first appearance, estimators are dodged
    in the command's order (first appearance) and the catalogue's colours, and the legend sits
    beside the axes. Error bars span `[low, high]`: by default the frame's `<value>_low` and
    `<value>_high` columns or, for `mean_variance` (`total_variance / numel`), the
    `total_variance_low`/`_high` interval over `numel`, where the frame has them; rows with a
    NaN bound get none. The y limits show every bar and every positive end of an error bar
    (a lower end `<= 0`, possible for a t interval over few groups, runs to the axis bottom).
    A value `<= 0` cannot be drawn on a log axis: it is written as `0` at the axis bottom.

    Args:
        frame: tidy rows with columns `estimator`, `parameter` and `value` (one row per pair).
        value: the column to plot (e.g. `mean_variance`, `total_variance`).
        low: the column of the lower interval ends (with `high`; default: see above).
        high: the column of the upper interval ends.
        order: the estimators' order (default: first appearance in `frame`).
        ax: axes to draw on (default: a new figure, not registered with pyplot).

    Returns:
        the axes.

    Raises:
        ValueError: a column is missing, only one of `low`/`high` is given, `order` misses an
            estimator, or no value is positive.
    """
    require_columns(frame, ["estimator", "parameter", value], "group_variance_plot")
    bounds = _bounds(frame, value, low, high)
    values = frame[value].to_numpy(float)
    bottom, top = log_limits(np.concatenate([values] + ([] if bounds is None else list(bounds))))
    categories = category_order(frame["parameter"])
    position = {category: i for i, category in enumerate(categories)}
    order = appearance_order(frame["estimator"], order)
    palette = estimator_palette(order)
    ax = ax or Figure(figsize=(max(6.0, 1.0 + 0.9 * len(categories)) + 2.0,
                               max(4.0, legend_height(len(order), title=True)))).subplots()
    width = DODGE / len(order)
    for offset, name in zip(dodge_offsets(len(order)), order, strict=True):
        rows = (frame["estimator"] == name).to_numpy()
        x = frame.loc[rows, "parameter"].map(position).to_numpy(float) + offset
        heights = values[rows]
        drawn = np.isfinite(heights) & (heights > 0)
        ax.bar(x[drawn], heights[drawn] - bottom, width=width, bottom=bottom,
               color=palette[name], label=name)
        for at in x[np.isfinite(heights) & (heights <= 0)]:
            ax.text(at, bottom, "0", ha="center", va="bottom", fontsize="x-small")
        if bounds is not None:
            lows, highs = bounds[0][rows], bounds[1][rows]
            shown = np.isfinite(lows) & np.isfinite(highs)
            ax.vlines(x[shown], np.maximum(lows[shown], bottom), highs[shown], color="black",
                      linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    ax.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=30, ha="right")
    ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel("parameter group")
    ax.set_ylabel(value.replace("_", " ") + ("" if bounds is None else " (95% interval)"))
    sns.despine(ax=ax)
    legend_beside(ax, title="estimator")
    return ax
