"""Per-coordinate variance with confidence intervals from the fourth moment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from estimator_lab.montecarlo.accumulators import Moments


@dataclass(frozen=True)
class VarianceResult:
    """The sample variance of each coordinate and its standard error (scipy.stats style).

    Attributes:
        estimate: a `d` array, the unbiased sample variances `s^2`.
        standard_error: a `d` array, the standard error of `s^2` from the fourth moment,
            `sqrt((m4 - s^4 (n - 3) / (n - 1)) / n)`, valid without normality (draws of
            gradient estimators are heavy-tailed; an F or chi-square interval is not).
        count: the number of draws `n`.
    """

    estimate: np.ndarray
    standard_error: np.ndarray
    count: int

    def confidence_interval(self, confidence_level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Per-coordinate interval, normal on the log scale (delta method), so it stays
        positive and follows the right skew of `s^2`: `s^2 exp(±z se / s^2)`."""
        z = scipy_stats.norm.ppf(0.5 + confidence_level / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = np.exp(z * self.standard_error / self.estimate)
        low, high = self.estimate / spread, self.estimate * spread
        zero = self.estimate == 0
        return np.where(zero, 0.0, low), np.where(zero, 0.0, high)

    def to_frame(self, confidence_level: float = 0.95) -> pd.DataFrame:
        """Tidy rows: index, variance, variance_se, variance_low, variance_high."""
        low, high = self.confidence_interval(confidence_level)
        return pd.DataFrame({
            "index": np.arange(self.estimate.size), "variance": self.estimate,
            "variance_se": self.standard_error, "variance_low": low, "variance_high": high,
        })


def variance_with_error(moments: Moments) -> VarianceResult:
    """Sample variances and their fourth-moment standard errors.

    Args:
        moments: moments of `n >= 4` draws tracked with `higher_moments=True`.

    Raises:
        ValueError: without `M4` or with fewer than four draws.
    """
    if not moments.has_higher:
        raise ValueError("variance errors need the fourth moment: accumulate with "
                         "higher_moments=True")
    n = moments.count
    if n < 4:
        raise ValueError(f"need at least 4 draws, got {n}")
    variance = (moments.m2 / (n - 1)).cpu().numpy()
    fourth = (moments.m4 / n).cpu().numpy()
    spread = np.clip(fourth - variance**2 * (n - 3) / (n - 1), 0.0, None)
    return VarianceResult(variance, np.sqrt(spread / n), n)
