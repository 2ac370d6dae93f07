"""The validation battery for new estimator proposals (`estimator-lab validate TARGET`).

The names below are imported on first use (PEP 562), so `estimator-lab validate --help`, which
imports `estimator_lab.validation.command`, does not import torch.
"""

import importlib

_EXPORTS = {
    "ValidationResult": "battery", "validate": "battery", "write_report_card": "battery",
    "BUDGETS": "budget", "Budget": "budget", "Target": "target", "resolve_target": "target",
    "Verdict": "verdict",
}
"""Public name -> the submodule that defines it."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
