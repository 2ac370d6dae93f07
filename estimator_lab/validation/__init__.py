"""The validation battery for new estimator proposals (`estimator-lab validate TARGET`)."""

from estimator_lab.validation.battery import ValidationResult, validate, write_report_card
from estimator_lab.validation.budget import BUDGETS, Budget
from estimator_lab.validation.target import Target, resolve_target
from estimator_lab.validation.verdict import Verdict

__all__ = ["BUDGETS", "Budget", "Target", "ValidationResult", "Verdict", "resolve_target",
           "validate", "write_report_card"]
