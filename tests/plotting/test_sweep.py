"""Sweep figures: one line per hue through the given rows, sorted by x, with interval bands."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from estimator_lab.plotting import estimator_palette, sweep_plot

SWEEP = pd.DataFrame({
    "estimator": ["st", "st", "st", "arm", "arm", "arm"],
    "temperature": [1.0, 0.1, 0.5, 0.5, 1.0, 0.1],
    "variance": [1.0, 3.0, 2.0, 20.0, 10.0, 30.0],
    "low": [0.5, 2.0, 1.5, 15.0, 5.0, 25.0],
    "high": [1.5, 4.0, 2.5, 25.0, 15.0, 35.0],
})


def test_one_sorted_line_per_estimator_with_bands():
    figures_before = plt.get_fignums()
    ax = sweep_plot(SWEEP, x="temperature", y="variance", low="low", high="high", log_y=True)
    assert plt.get_fignums() == figures_before
    assert ax.get_yscale() == "log" and ax.get_xscale() == "linear"
    assert ax.get_legend_handles_labels()[1] == ["st", "arm"]  # the frame's (command's) order
    palette = estimator_palette(["arm", "st"])
    for line, band, name in zip(ax.lines, ax.collections, ["st", "arm"], strict=True):
        rows = SWEEP[SWEEP["estimator"] == name].sort_values("temperature")
        np.testing.assert_array_equal(line.get_xdata(), rows["temperature"])
        np.testing.assert_array_equal(line.get_ydata(), rows["variance"])
        assert to_rgb(line.get_color()) == pytest.approx(palette[name])
        vertices = band.get_paths()[0].vertices
        for x, lo, hi in rows[["temperature", "low", "high"]].itertuples(index=False):
            at_x = vertices[vertices[:, 0] == x, 1]
            assert {lo, hi} == set(at_x)


def test_other_hue_single_line_and_log_x():
    frame = SWEEP.assign(step=[10, 1, 100, 10, 1, 100])
    ax = sweep_plot(frame, x="step", y="variance", hue="temperature", log_x=True)
    assert ax.get_xscale() == "log" and not ax.collections
    assert ax.get_legend_handles_labels()[1] == ["0.1", "0.5", "1.0"]
    ax = sweep_plot(SWEEP[SWEEP["estimator"] == "st"], x="temperature", y="variance", hue=None)
    assert len(ax.lines) == 1 and ax.get_legend() is None
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [3.0, 2.0, 1.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"low": "low"}, "needs both low and high"),
     ({"hue": None}, "one row per temperature; some have several"),
     ({"y": "nope"}, "sweep_plot needs column\\(s\\) 'nope'")],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sweep_plot(SWEEP, **{"x": "temperature", "y": "variance", **kwargs})
