"""Every figure: legend beside the axes and inside the figure, estimators in the given order."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from estimator_lab.plotting import (
    bias_interval_plot,
    group_variance_plot,
    sweep_plot,
    variance_interval_plot,
)
from estimator_lab.plotting.style import ESTIMATOR_ORDER, appearance_order

# All 18 catalogue estimators, listed backwards (not the catalogue's order, not alphabetical).
NAMES = list(reversed(ESTIMATOR_ORDER))
ROWS = pd.DataFrame({
    "estimator": np.repeat(NAMES, 3), "parameter": ["gate_logits", "expert", "output"] * 18,
    "index": [0, 1, 2] * 18, "step": [1, 2, 3] * 18,
    "value": np.geomspace(1e-9, 1e3, 54), "exact": 0.0, "stderr": 0.01,
})
ROWS = ROWS.assign(low=ROWS["value"] / 2, high=ROWS["value"] * 2)

FIGURES = {
    "group_variance_plot": lambda order: group_variance_plot(
        ROWS, value="value", low="low", high="high", order=order),
    "variance_interval_plot": lambda order: variance_interval_plot(
        ROWS, value="value", low="low", high="high", order=order),
    "bias_interval_plot": lambda order: bias_interval_plot(
        ROWS, estimate="value", order=order),
    "sweep_plot": lambda order: sweep_plot(ROWS, x="step", y="value", low="low", high="high",
                                           log_y=True, order=order),
}


@pytest.mark.parametrize("name", FIGURES)
def test_legend_beside_the_axes_inside_the_figure_in_the_commands_order(name):
    ax = FIGURES[name](None)
    renderer = FigureCanvasAgg(ax.figure).get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    axes = ax.get_window_extent(renderer)
    figure = ax.figure.bbox
    assert legend.x0 >= axes.x1  # beside the axes: it covers no bar, point or line
    assert (figure.x0 <= legend.x0 and legend.x1 <= figure.x1
            and figure.y0 <= legend.y0 and legend.y1 <= figure.y1)  # and not cut off
    assert ax.get_legend_handles_labels()[1] == NAMES
    given = sorted(NAMES)
    assert FIGURES[name](given).get_legend_handles_labels()[1] == given


def test_appearance_order():
    assert appearance_order(["st", "arm", "st", "rloo"]) == ["st", "arm", "rloo"]
    assert appearance_order(["st", "arm"], ["arm", "rloo", "st"]) == ["arm", "st"]
    with pytest.raises(ValueError, match="order lacks 'st'"):
        appearance_order(["st", "arm"], ["arm"])
