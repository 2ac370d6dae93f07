"""A quantity against a swept variable (sparsity, temperature, training step), one line per hue."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from estimator_lab.plotting.intervals import require_columns
from estimator_lab.plotting.style import (
    appearance_order,
    estimator_palette,
    legend_beside,
    legend_height,
)


def _hue_colours(values: pd.Series, hue: str, order: list[str] | None) -> dict:
    if hue == "estimator":
        order = appearance_order(values, order)
        palette = estimator_palette(order)
    else:
        order = sorted(pd.unique(values))
        palette = dict(zip(order, sns.color_palette(n_colors=len(order)), strict=True))
    return {key: palette[key] for key in order}


def sweep_plot(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    low: str | None = None,
    high: str | None = None,
    hue: str | None = "estimator",
    log_x: bool = False,
    log_y: bool = False,
    order: list[str] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Lines of `y` against `x`, one per value of `hue`, with optional interval bands.

    The rows are plotted as given (one row per `hue` and `x`; nothing is averaged), sorted by
    `x`; with `low` and `high` a translucent band spans each line's intervals. Estimators keep
    the command's order (first appearance) and the catalogue's colours; any other `hue` is
    ordered by value. The legend sits beside the axes.

    Args:
        frame: tidy rows with columns `x`, `y`, `hue` and, if given, `low` and `high`.
        x: the swept variable's column.
        y: the plotted quantity's column.
        low: the column of the lower interval bounds (with `high`).
        high: the column of the upper interval bounds (with `low`).
        hue: the column naming each line (`None`: a single line).
        log_x: logarithmic x axis.
        log_y: logarithmic y axis.
        order: the estimators' order when `hue` is `estimator` (default: first appearance).
        ax: axes to draw on (default: a new figure, not registered with pyplot).

    Returns:
        the axes.

    Raises:
        ValueError: a column is missing, only one of `low`/`high` is given, or a `hue` value
            has several rows at one `x`, or `order` misses an estimator.
    """
    if (low is None) != (high is None):
        raise ValueError("sweep_plot needs both low and high, or neither")
    require_columns(frame, [x, y, hue, low, high], "sweep_plot")
    keys = [x] if hue is None else [hue, x]
    if frame.duplicated(keys).any():
        raise ValueError(f"sweep_plot needs one row per {' and '.join(keys)}; some have several")
    entries = 0 if hue is None else frame[hue].nunique()
    ax = ax or Figure(figsize=(8, max(4.0, legend_height(entries, title=True)))).subplots()
    colours = None if hue is None else _hue_colours(frame[hue], hue, order)  # before sorting
    frame = frame.sort_values(x)
    if hue is None:
        groups = {None: (frame, sns.color_palette()[0])}
    else:
        groups = {key: (frame[frame[hue] == key], colours[key]) for key in colours}
    for key, (part, colour) in groups.items():
        ax.plot(part[x], part[y], marker="o", markersize=4, color=colour, label=key)
        if low is not None:
            ax.fill_between(part[x], part[low], part[high], color=colour, alpha=0.2, linewidth=0)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    sns.despine(ax=ax)
    if hue is None:
        ax.figure.tight_layout()
    else:
        legend_beside(ax, title=hue)
    return ax
