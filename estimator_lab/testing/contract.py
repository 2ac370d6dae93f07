"""`check_estimator`: the contract every gradient estimator, built-in or plugin, must pass.

Modelled on scikit-learn's `check_estimator`: one call runs a battery of checks on an estimator
instance and returns a `ContractReport` that says, check by check and in plain words, what holds
and what does not. The checks:

1. `flags`: the capability flags have the right types; `evaluations(graph)` is a positive int.
2. `shapes`: per-draw gradients are `K x param.shape` (gate logits `K x B x G_0`) and finite on
   small conditional networks (`B` in {1, 3}, `G` in {1, 5}); the surrogate is a finite 0-dim
   tensor; on a two-layer sigmoid belief net a `multilayer` estimator works and a single-layer
   one raises `ValueError`.
3. `dtypes`: float32 and float64 both work, the outputs have the graph's dtype, and the two
   agree to float32 precision under the same noise.
4. `devices`: the draws on each device (CUDA when available) equal the CPU draws to rounding.
5. `determinism`: the same noise gives bitwise-identical draws twice; `vmap` and the loop agree.
6. `no_leaks`: drawing leaves the graph's parameters and `.grad` alone; state tensors never
   require grad, `surrogate` does not write into them or leak gradients into them, and `update`
   returns a new state rather than editing its input; an unused parameter gets an exactly zero
   gradient; the draws do not depend on the global RNG.
7. `unbiasedness`: for Bernoulli-gate estimators, the Monte Carlo mean of `num_draws` draws
   against the exact gradient (enumeration) on a conditional network with 4 gates and, for
   multi-layer estimators, a two-layer sigmoid belief net, with Holm-corrected per-coordinate
   z-tests over every coordinate of every graph (gate logits and all parameters). An estimator
   that claims `is_unbiased` fails when any coordinate is flagged; for one that does not, the
   measured relative bias is reported (the check passes).

The driver is here; the checks are in `testing.checks` (the deterministic six) and
`testing.unbiasedness`, the graphs they probe in `testing.probes`, the noise and draws in
`testing.drawing`, and the result types in `testing.results`.

Note [Randomized statistical tests]: only `unbiasedness` is random, and its seed is fixed, so a
report is deterministic. Its false-failure rate, the probability over seeds that a correct
unbiased estimator fails, is at most `alpha` (Holm controls the family-wise error over all
coordinates of all graphs; up to the normal approximation of a mean of `num_draws` bounded
draws). Power: a coordinate whose bias exceeds `(z_{alpha / 2d} + z_{0.999}) sigma / sqrt(N)`
(`sigma` the per-draw standard deviation, `d` coordinates, `N` draws) is flagged with probability
at least 0.999. With the defaults (`N = 2000`, `d = 122` for a multi-layer estimator,
`alpha = 1e-3`) that threshold is `(4.46 + 3.09) / sqrt(2000) = 0.17 sigma`. REINFORCE, the
noisiest unbiased estimator here, has `|g_i| / sigma_i` up to 0.32 on the conditional graph's
gate logits (0.11 on the belief net's second-layer weights), so a sign flip (bias
`2 |g_i| = 0.64 sigma_i`, expected `z = 28`) is caught with a wide margin. So is a baseline
that depends on the sampled gate: `c_i = L(b) b_i` has bias `-p_i (1 - p_i) E[L | b_i = 1] / B`
on the logit of example `j`'s gate `i`, while the gradient is
`p_i (1 - p_i) (E[L | b_i = 1] - E[L | b_i = 0]) / B`, typically smaller for a positive loss.
Doubling `num_draws` doubles the check's time (about a second per estimator at the default on
two CPU cores) and divides the detectable bias by `sqrt(2)`.

References:
    scikit-learn, `sklearn.utils.estimator_checks.check_estimator`;
    PyTorch, `torch/testing/_internal/common_utils.py`, Note [Randomized statistical tests];
    Holm (1979), "A simple sequentially rejective multiple test procedure".
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Sequence

import torch

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.registry import available, get_estimator
from estimator_lab.testing.checks import (
    check_determinism,
    check_devices,
    check_dtypes,
    check_flags,
    check_no_leaks,
    check_shapes,
)
from estimator_lab.testing.drawing import (
    DRAWS_PER_SHAPE_CHECK,
    FLOAT32_TOLERANCE,
    FLOAT64_TOLERANCE,
)
from estimator_lab.testing.results import (
    CheckFailed,
    CheckResult,
    ContractReport,
    ContractViolation,
)
from estimator_lab.testing.subject import Batch, EstimatorFactory, Settings, Subject
from estimator_lab.testing.unbiasedness import (
    CHUNK_SIZE,
    DEFAULT_ALPHA,
    DEFAULT_NUM_DRAWS,
    NUM_STATE_UPDATES,
    POWER,
    check_unbiasedness,
)

__all__ = [
    "CHECKS",
    "CHUNK_SIZE",
    "DEFAULT_ALPHA",
    "DEFAULT_NUM_DRAWS",
    "DRAWS_PER_SHAPE_CHECK",
    "FLOAT32_TOLERANCE",
    "FLOAT64_TOLERANCE",
    "NUM_STATE_UPDATES",
    "POWER",
    "Batch",
    "CheckResult",
    "ContractReport",
    "ContractViolation",
    "EstimatorFactory",
    "check_estimator",
    "parametrize_estimators",
]

CHECKS = ("flags", "shapes", "dtypes", "devices", "determinism", "no_leaks", "unbiasedness")


def check_estimator(
    estimator: GradientEstimator | EstimatorFactory,
    *,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    devices: Sequence[torch.device | str] | None = None,
    num_draws: int = DEFAULT_NUM_DRAWS,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    checks: Sequence[str] | None = None,
) -> ContractReport:
    """Runs the estimator contract (module docstring) and reports every check.

    The graphs are small and fixed (seeded constructions, the same for every call); `seed`
    only chooses the noise. A check that raises fails with the exception as its message.
    Call `report.raise_if_failed()` in a test to turn failures into a `ContractViolation`.

    Args:
        estimator: a `GradientEstimator` instance (its state is `init(graph, prepared)` on
            each probe's batch), or a factory `(graph, batch) -> estimator` for estimators
            whose hyper-parameters are built for a graph and batch (e.g. `reinforce-oracle`
            with the per-example Eq. 10 values of that batch).
        dtypes: floating dtypes that must work (the first two are compared).
        devices: devices that must give the CPU's draws (default: CPU, and CUDA if available).
        num_draws: Monte Carlo draws per graph in the unbiasedness check (see the module
            docstring for the bias it detects).
        alpha: the unbiasedness check's false-failure rate (family-wise, Holm).
        seed: the noise seed of the draws.
        checks: names of the checks to run (default: all of `CHECKS`).

    Returns:
        a `ContractReport`.

    Example:
        >>> from estimator_lab.estimators import get_estimator
        >>> report = check_estimator(get_estimator("reinforce"), checks=["flags", "shapes"])
        >>> report.passed
        True
        >>> print(report.summary().splitlines()[0][:60])
        PASS flags: is_unbiased=True, multilayer=True, supports_vmap
    """
    selected = CHECKS if checks is None else tuple(checks)
    unknown = [name for name in selected if name not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; the checks are {list(CHECKS)}")
    dtypes = tuple(dtypes)
    if not dtypes or any(not d.is_floating_point for d in dtypes):
        raise ValueError(f"dtypes must be floating dtypes, got {dtypes}")
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if num_draws < 2 or not 0 < alpha < 1 or seed < 0:
        raise ValueError(
            f"need num_draws >= 2, 0 < alpha < 1 and seed >= 0, got {num_draws}, {alpha}, {seed}"
        )
    settings = Settings(dtypes, tuple(torch.device(d) for d in devices), num_draws, alpha, seed)
    subject = Subject(estimator)
    runners = {
        "flags": check_flags,
        "shapes": check_shapes,
        "dtypes": check_dtypes,
        "devices": check_devices,
        "determinism": check_determinism,
        "no_leaks": check_no_leaks,
        "unbiasedness": check_unbiasedness,
    }
    results = tuple(_run(name, runners[name], subject, settings) for name in selected)
    return ContractReport(subject.label(), results)


def parametrize_estimators(names: Sequence[str] | None = None):
    """`pytest.mark.parametrize("estimator", ...)` over registry entries, ids by name.

    Args:
        names: registry names (default: every name in `available()` at collection time).

    Example:
        >>> marker = parametrize_estimators(["reinforce", "st"])
        >>> marker.args[0], [e.name for e in marker.args[1]]
        ('estimator', ['reinforce', 'st'])
    """
    import pytest

    names = list(available() if names is None else names)
    return pytest.mark.parametrize("estimator", [get_estimator(n) for n in names], ids=names)


def _run(name: str, runner, subject: Subject, settings: Settings) -> CheckResult:
    started = time.perf_counter()
    try:
        result = runner(subject, settings)
    except CheckFailed as failure:
        result = CheckResult(name, False, str(failure), failure.details)
    except Exception as error:  # a check that crashes is a failed check, with the reason
        result = CheckResult(
            name, False, f"raised {type(error).__name__}: {error}",
            {"traceback": traceback.format_exc()},
        )
    details = dict(result.details) | {"seconds": time.perf_counter() - started}
    return dataclasses.replace(result, name=name, details=details)
