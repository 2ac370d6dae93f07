"""Variance bar charts: the bars and error bars are the frame's numbers, all inside the axes."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from estimator_lab.plotting import estimator_palette, group_variance_plot
from estimator_lab.plotting.variance import log_limits

# Rows in the command's order (st first) with wide ranges: the lowest bar sits 14 decades
# below the highest, and one interval's lower end is negative (a t interval over few groups).
SUMMARY = pd.DataFrame({
    "estimator": ["st", "st", "reinforce", "reinforce"],
    "parameter": ["gate_logits", "expert.weight", "gate_logits", "expert.weight"],
    "numel": [10, 100, 10, 100],
    "mean_variance": [1e-13, 2e-7, 1e-3, 2e-7],
    "total_variance": [1e-12, 2e-5, 1e-2, 2e-5],
    "total_variance_low": [0.9e-12, 1.9e-5, -1e-3, np.nan],
    "total_variance_high": [1.1e-12, 2.1e-5, 3e-2, np.nan],
})


def drawn(ax):
    """Per estimator (legend order): its bar rectangles (x centre, bottom, top)."""
    return {container.get_label(): [(p.get_x() + p.get_width() / 2, p.get_y(),
                                     p.get_y() + p.get_height()) for p in container]
            for container in ax.containers}


def test_bars_in_the_commands_order_with_the_interval_over_numel():
    ax = group_variance_plot(SUMMARY)
    assert ax.get_legend_handles_labels()[1] == ["st", "reinforce"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gate_logits", "expert.weight"]
    palette = estimator_palette(["st", "reinforce"])
    bottom, top = ax.get_ylim()
    for container, name, dodge in zip(ax.containers, ["st", "reinforce"], [-0.2, 0.2],
                                      strict=True):
        rows = SUMMARY[SUMMARY["estimator"] == name]
        bars = drawn(ax)[name]
        np.testing.assert_allclose([b[0] for b in bars], np.arange(2) + dodge)
        np.testing.assert_allclose([b[2] for b in bars], rows["mean_variance"], rtol=1e-12)
        assert all(b[1] == bottom for b in bars)
        assert to_rgb(container.patches[0].get_facecolor()) == pytest.approx(palette[name])
    segments = [s for c in ax.collections for s in c.get_segments()]
    # mean_variance = total_variance / numel; NaN bounds: no bar; a negative end: the bottom.
    expected = [[0.9e-13, 1.1e-13], [1.9e-7, 2.1e-7], [bottom, 3e-3]]
    np.testing.assert_allclose([s[:, 1] for s in segments], expected, rtol=1e-12)
    assert ax.get_ylabel() == "mean variance (95% interval)"


def test_every_bar_and_error_bar_lies_within_the_limits():
    for value in ["mean_variance", "total_variance"]:
        ax = group_variance_plot(SUMMARY.assign(total_variance_high=[1.1e-12, 2.1e-5, 3.0, 1]),
                                 value=value)
        bottom, top = ax.get_ylim()
        ends = [y for bars in drawn(ax).values() for _, low, high in bars for y in (low, high)]
        ends += [y for c in ax.collections for s in c.get_segments() for y in s[:, 1]]
        assert bottom <= min(ends) and max(ends) < top
        assert max(ends) == pytest.approx(3.0 if value == "total_variance" else 0.3)


def test_explicit_bounds_zero_values_and_no_interval():
    frame = SUMMARY.assign(mean_variance=[0.0, 2e-7, 1e-3, 2e-7], lo=SUMMARY["mean_variance"],
                           hi=SUMMARY["mean_variance"] * 2)
    ax = group_variance_plot(frame, low="lo", high="hi")
    assert len(drawn(ax)["st"]) == 1  # the zero cannot be drawn on a log axis ...
    assert [t.get_text() for t in ax.texts] == ["0"]  # ... and is written as 0 instead
    plain = group_variance_plot(SUMMARY.drop(columns=["total_variance_low",
                                                      "total_variance_high"]))
    assert not plain.collections and plain.get_ylabel() == "mean variance"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"low": "total_variance_low"}, "needs both low and high"),
    ({"value": "nope"}, r"group_variance_plot needs column\(s\) 'nope'"),
    ({"order": ["st"]}, "order lacks 'reinforce'"),
])
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        group_variance_plot(SUMMARY, **kwargs)


def test_log_limits():
    bottom, top = log_limits(np.array([1e-4, np.nan, 1.0, -1.0, np.inf]))
    assert bottom == pytest.approx(10 ** -4.2) and top == pytest.approx(10 ** 0.2)
    assert log_limits(np.array([1.0])) == pytest.approx((10 ** -0.1, 10 ** 0.1))
    with pytest.raises(ValueError, match="positive finite"):
        log_limits(np.array([0.0, np.nan]))
