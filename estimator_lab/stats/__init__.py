"""Statistics of gradient draws with honest error bars."""

from estimator_lab.stats.intervals import GroupMeanResult, RatioResult, group_mean, paired_ratio
from estimator_lab.stats.summary import SUMMARY_COLUMNS, summary_frame
from estimator_lab.stats.unbiasedness import (
    UnbiasednessResult,
    detectable_bias,
    rounding_scale,
    zero_mean_test,
)
from estimator_lab.stats.variance import VarianceResult, variance_with_error

__all__ = [
    "SUMMARY_COLUMNS",
    "GroupMeanResult",
    "RatioResult",
    "UnbiasednessResult",
    "VarianceResult",
    "detectable_bias",
    "group_mean",
    "paired_ratio",
    "rounding_scale",
    "summary_frame",
    "variance_with_error",
    "zero_mean_test",
]
