"""Exact expectations and gradients of small stochastic graphs."""

from estimator_lab.exact.enumeration import (
    EnumerationTooLarge,
    check_enumerable,
    configurations,
    exact_gradient,
    log_prob_and_loss,
)

__all__ = [
    "EnumerationTooLarge",
    "check_enumerable",
    "configurations",
    "exact_gradient",
    "log_prob_and_loss",
]
