"""Statistics of gradient draws with honest error bars."""

from estimator_lab.stats.unbiasedness import UnbiasednessResult, zero_mean_test

__all__ = ["UnbiasednessResult", "zero_mean_test"]
