"""Exact expectations and gradients of small stochastic graphs."""

from estimator_lab.configurations import EnumerationTooLarge, check_enumerable, configurations
from estimator_lab.exact.enumeration import exact_gradient, log_prob_and_loss
from estimator_lab.exact.moments import ExactMoments, NotComputable, exact_moments
from estimator_lab.exact.own_objective import noisy_rectifier_exact_gradient, sts_exact_gradient

__all__ = [
    "EnumerationTooLarge",
    "ExactMoments",
    "NotComputable",
    "exact_moments",
    "check_enumerable",
    "configurations",
    "exact_gradient",
    "log_prob_and_loss",
    "noisy_rectifier_exact_gradient",
    "sts_exact_gradient",
]
