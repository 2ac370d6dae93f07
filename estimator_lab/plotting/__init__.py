"""Seaborn figure functions over tidy frames (no pyplot state: figures are `Figure` objects)."""

from estimator_lab.plotting.intervals import bias_interval_plot, variance_interval_plot
from estimator_lab.plotting.style import estimator_order, estimator_palette
from estimator_lab.plotting.sweep import sweep_plot
from estimator_lab.plotting.variance import group_variance_plot

__all__ = [
    "bias_interval_plot",
    "estimator_order",
    "estimator_palette",
    "group_variance_plot",
    "sweep_plot",
    "variance_interval_plot",
]
