"""Tools for testing gradient estimators: the contract check and a pytest helper."""

from estimator_lab.testing.contract import (
    CHECKS,
    CheckResult,
    ContractReport,
    ContractViolation,
    check_estimator,
    parametrize_estimators,
)

__all__ = [
    "CHECKS",
    "CheckResult",
    "ContractReport",
    "ContractViolation",
    "check_estimator",
    "parametrize_estimators",
]
