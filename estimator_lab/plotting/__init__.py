"""Seaborn figure functions over tidy frames (no pyplot state: figures are `Figure` objects)."""

from estimator_lab.plotting.style import estimator_order, estimator_palette
from estimator_lab.plotting.variance import group_variance_plot

__all__ = ["estimator_order", "estimator_palette", "group_variance_plot"]
