"""Tools for testing gradient estimators: the contract check, a pytest helper, and small seeded
problems (`testing.problems`)."""

from estimator_lab.testing.contract import (
    CHECKS,
    CheckResult,
    ContractReport,
    ContractViolation,
    check_estimator,
    parametrize_estimators,
)
from estimator_lab.testing.problems import build_problem, conditional_problem, paper_problem

__all__ = [
    "CHECKS",
    "CheckResult",
    "ContractReport",
    "ContractViolation",
    "build_problem",
    "check_estimator",
    "conditional_problem",
    "paper_problem",
    "parametrize_estimators",
]
