"""Interval figures: the drawn points and bars are the frame's numbers, in the house colours."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from scipy import stats

from estimator_lab.plotting import bias_interval_plot, estimator_palette, variance_interval_plot

VARIANCE = pd.DataFrame({
    "estimator": ["st", "reinforce"] * 3,
    "parameter": ["gate_logits", "gate_logits", "expert.weight", "expert.weight", "bias", "bias"],
    "variance": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    "variance_low": [0.5, 1.0, 2.0, 3.0, np.nan, 5.0],
    "variance_high": [2.0, 3.0, 4.0, 5.0, 7.0, 8.0],
})


def bars(container):
    """The (x, y) points and the error bar segments of one `errorbar` call."""
    points = container.lines[0].get_xydata()
    segments = container.lines[2][0].get_segments()
    return points, segments


def test_variance_points_and_intervals_per_estimator():
    figures_before = plt.get_fignums()
    ax = variance_interval_plot(VARIANCE)
    assert plt.get_fignums() == figures_before  # nothing registered with pyplot
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gate_logits", "expert.weight", "bias"]
    st, reinforce = ax.containers  # the frame's (the command's) order: st before reinforce
    assert ax.get_legend_handles_labels()[1] == ["st", "reinforce"]
    palette = estimator_palette(["reinforce", "st"])
    for container, name, dodge in [(st, "st", -0.2), (reinforce, "reinforce", 0.2)]:
        rows = VARIANCE[VARIANCE["estimator"] == name]
        points, segments = bars(container)
        np.testing.assert_allclose(points[:, 0], np.arange(3) + dodge)
        np.testing.assert_allclose(points[:, 1], rows["variance"])
        assert to_rgb(container.lines[0].get_color()) == pytest.approx(palette[name])
        for segment, x, lo, hi in zip(segments, points[:, 0], rows["variance_low"],
                                      rows["variance_high"], strict=True):
            if np.isnan(lo):  # a missing bound: no bar at all (not half of one)
                assert segment.size == 0
            else:
                np.testing.assert_allclose(segment, [[x, lo], [x, hi]])
    assert bars(st)[1][2].size == 0  # the one missing bound


def test_variance_plot_draws_on_given_axes():
    ax = Figure().subplots()
    assert variance_interval_plot(VARIANCE, ax=ax) is ax


@pytest.mark.parametrize(
    ("change", "message"),
    [({"variance_low": [3.0] * 6}, "must contain its variance"),
     ({"variance_high": [0.1] * 6}, "must contain its variance")],
)
def test_variance_plot_rejects_intervals_missing_the_estimate(change, message):
    with pytest.raises(ValueError, match=message):
        variance_interval_plot(VARIANCE.assign(**change))


def test_missing_columns_are_named():
    message = r"variance_interval_plot needs column\(s\) 'variance_high'; the frame has 'estim"
    with pytest.raises(ValueError, match=message):
        variance_interval_plot(VARIANCE.drop(columns="variance_high"))
    with pytest.raises(ValueError, match=r"needs column\(s\) 'index', 'mean', 'exact', 'stderr';"):
        bias_interval_plot(VARIANCE)


def bias_frame(rows: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "estimator": ["st"] * rows + ["reinforce"] * rows,
        "index": list(range(rows)) * 2,
        "mean": rng.normal(size=2 * rows),
        "exact": rng.normal(size=2 * rows),
        "stderr": rng.uniform(0.1, 1.0, size=2 * rows),
    })
    return frame.sample(frac=1.0, random_state=0)  # row order must not matter


@pytest.mark.parametrize("level", [0.95, 0.5])
def test_bias_differences_and_normal_intervals(level):
    frame = bias_frame()
    ax = bias_interval_plot(frame, confidence_level=level, max_rows=16)
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(i) for i in range(16)]
    z = stats.norm.ppf(0.5 + level / 2)
    order = list(dict.fromkeys(frame["estimator"]))  # first appearance in the shuffled rows
    assert ax.get_legend_handles_labels()[1] == order
    for container, name, dodge in zip(ax.containers, order, [-0.2, 0.2], strict=True):
        rows = frame[(frame["estimator"] == name) & (frame["index"] < 16)].sort_values("index")
        points, segments = bars(container)
        order = np.argsort(points[:, 1])
        np.testing.assert_allclose(points[order, 1], np.arange(16) + dodge)
        np.testing.assert_allclose(points[order, 0], rows["mean"] - rows["exact"])
        half = np.array([(s[1, 0] - s[0, 0]) / 2 for s in segments])[order]
        np.testing.assert_allclose(half, z * rows["stderr"])
    assert ax.get_xlabel() == f"mean − exact ({level:.0%} interval)"


def test_bias_plot_by_category():
    frame = pd.DataFrame({"estimator": ["st", "st"], "parameter": ["w", "b"],
                          "mean": [1.0, 2.0], "exact": [0.5, 0.5], "stderr": [0.1, 0.1]})
    ax = bias_interval_plot(frame, by="parameter")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["w", "b"]  # order of appearance
    np.testing.assert_allclose(bars(ax.containers[0])[0], [[0.5, 0.0], [1.5, 1.0]])
    with pytest.raises(ValueError, match="confidence_level must be in"):
        bias_interval_plot(frame, by="parameter", confidence_level=1.0)
