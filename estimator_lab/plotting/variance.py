"""Figures of gradient variance per parameter group."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from estimator_lab.plotting.style import estimator_order, estimator_palette


def group_variance_plot(
    frame: pd.DataFrame, *, value: str = "mean_variance", ax: Axes | None = None
) -> Axes:
    """Bar chart of a per-group variance figure, one bar per estimator, log scale.

    Args:
        frame: tidy rows with columns `estimator`, `parameter` and `value`.
        value: the column to plot (e.g. `mean_variance`, `total_variance`).
        ax: axes to draw on (default: a new figure, not registered with pyplot).

    Returns:
        the axes.
    """
    ax = ax or Figure(figsize=(8, 4)).subplots()
    hue_order = estimator_order(frame["estimator"])
    sns.barplot(
        data=frame, x="parameter", y=value, hue="estimator", hue_order=hue_order,
        palette=estimator_palette(hue_order), ax=ax,
    )
    ax.set_yscale("log")
    ax.set_xlabel("parameter group")
    ax.set_ylabel(value.replace("_", " "))
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.figure.tight_layout()
    return ax
