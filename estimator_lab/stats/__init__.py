"""Statistics of gradient draws with honest error bars."""

from estimator_lab.stats.unbiasedness import UnbiasednessResult, rounding_scale, zero_mean_test

__all__ = ["UnbiasednessResult", "rounding_scale", "zero_mean_test"]
