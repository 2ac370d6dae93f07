"""Training loops for stochastic graphs with any estimator.

The names below are imported on first use (PEP 562), so `estimator-lab train --help`, which
imports `estimator_lab.train.command`, does not import torch.
"""

import importlib

_EXPORTS = {"SGDConfig": "loop", "TrainStep": "loop", "train_steps": "loop"}
"""Public name -> the submodule that defines it."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
