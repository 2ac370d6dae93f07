"""`validate`: the whole battery on one estimator, and its report card.

Checks, in order (each a `Verdict`):

1. `contract`: `check_estimator` (shapes, dtypes, devices, determinism, no leaks, unbiasedness
   on its own graphs).
2. `unbiasedness`: the mean against the exact gradient on the small-graph suite
   (`small_graphs`); for an estimator that declares itself biased, the size of its bias.
3. `variance`: work-normalised variance against REINFORCE with the optimal baseline, RLOO,
   DisARM and ST on the same graphs, exact where the estimator's noise allows.
4. `full network`: variance and paired bias against `local-expectation` on the paper network.
5. `training`: a short training run of the paper network against ST and REINFORCE.
6. `binary vae` (budget `thorough` only): the linear binary VAE on MNIST trained with the
   target, DisARM and RLOO at equal loss evaluations, and the paired encoder-gradient variance
   ratio to DisARM at initialisation (`binary_vae_check`).

A target for categorical gates (`Target.gates == "categorical"`) gets the categorical suite:
`contract` is `check_categorical_estimator`; `unbiasedness` and `variance` run the same tests on
categorical graphs (`CATEGORICAL_BUDGETS`: cat-toys, exact gradient by enumeration of the `K^N`
configurations) against categorical REINFORCE, RLOO and IndeCateR (`CATEGORICAL_REFERENCES`);
checks 4 to 6 need Bernoulli gates (the paper network and the binary VAE have them) and are
skipped, saying so.

A correct estimator fails a statistical check with probability at most `budget.alpha` per check
(`contract`, `unbiasedness`, `full network`; at most `3 alpha` in all), as each check controls
its family-wise error; the seeds are fixed, so a report card is reproducible.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from estimator_lab.device import describe_device, resolve_device
from estimator_lab.reporting import atomic_write_text, run_manifest, staged_directory
from estimator_lab.testing.categorical_contract import check_categorical_estimator
from estimator_lab.testing.contract import check_estimator
from estimator_lab.validation.binary_vae_check import binary_vae_check
from estimator_lab.validation.budget import Budget
from estimator_lab.validation.network import network_check
from estimator_lab.validation.small_graphs import (
    REFERENCES,
    GraphResult,
    check_suite,
    measure_graph,
    unbiasedness_verdict,
    variance_verdict,
)
from estimator_lab.validation.target import Target, resolve_target
from estimator_lab.validation.training import training_check
from estimator_lab.validation.verdict import Verdict


@dataclass(frozen=True)
class ValidationResult:
    """What `validate` found.

    Attributes:
        target: the estimator validated.
        verdicts: one per check, in order.
        graphs: the small-graph measurements.
        network: the full-network summary rows (None when skipped).
        curves: the training curves (None when skipped).
        binary_vae: the binary-VAE rows per estimator (None when skipped).
        contract: the contract's rows (check, passed, message).
        wall_time_s: seconds the battery took.
    """

    target: Target
    verdicts: tuple[Verdict, ...]
    graphs: tuple[GraphResult, ...]
    network: pd.DataFrame | None
    curves: pd.DataFrame | None
    contract: pd.DataFrame
    wall_time_s: float
    binary_vae: pd.DataFrame | None = None

    @property
    def passed(self) -> bool:
        """Whether no check failed."""
        return not any(v.failed for v in self.verdicts)

    def __getitem__(self, check: str) -> Verdict:
        for verdict in self.verdicts:
            if verdict.check == check:
                return verdict
        raise KeyError(f"no check {check!r} (ran {[v.check for v in self.verdicts]})")

    def summary(self) -> str:
        """One verdict line per check."""
        return "\n".join(str(v) for v in self.verdicts)


BERNOULLI_ONLY = {
    "full network": "the paper network's 2,000 gates are Bernoulli",
    "training": "it trains the paper network, whose gates are Bernoulli",
    "binary vae": "the binary VAE's 200 latents are Bernoulli",
}
"""The checks a categorical target skips, and why."""


def contract_check(target: Target, budget: Budget, *, seed: int,
                   device: torch.device) -> tuple[Verdict, pd.DataFrame]:
    """`check_estimator` on the target (`check_categorical_estimator`, on the CPU, for a
    categorical one); the verdict names every failed check and why."""
    if target.gates == "categorical":
        report = check_categorical_estimator(target.probe(), num_draws=budget.contract_draws,
                                             alpha=budget.alpha, seed=seed)
    else:
        devices = ["cpu"] + ([device] if device.type != "cpu" else [])
        report = check_estimator(target.factory, devices=devices,
                                 num_draws=budget.contract_draws, alpha=budget.alpha, seed=seed)
    rows = pd.DataFrame([{"check": r.name, "passed": r.passed, "message": r.message}
                         for r in report])
    if report.passed:
        return Verdict("contract", "pass", f"all {len(rows)} checks pass "
                       f"({', '.join(rows['check'])})"), rows
    failures = "; ".join(f"{r.name}: {r.message}" for r in report.failures)
    return Verdict("contract", "fail", f"{len(report.failures)} of {len(rows)} checks fail: "
                   f"{failures}"), rows


def validate(
    target: str | Target,
    budget: Budget,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> ValidationResult:
    """Runs the battery (module docstring) on `target`.

    Args:
        target: a `Target` or TARGET as `resolve_target` reads it.
        budget: the work per check (`BUDGETS`; `CATEGORICAL_BUDGETS` for a categorical
            target).
        seed: seeds the graphs, the noise and the training run.
        device: `"auto"`, `"cpu"`, `"cuda"`, ...
        progress: show progress bars.

    Raises:
        ValueError: when a graph of `budget` does not have the target's gates.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    target = resolve_target(target) if isinstance(target, str) else target
    check_suite(budget.graphs, target.gates)
    device = resolve_device(device)
    probe = target.probe()
    options = {"seed": seed, "device": device}
    contract, contract_rows = contract_check(target, budget, **options)
    verdicts = [contract]
    alpha = budget.alpha / len(budget.graphs)  # Bonferroni across graphs, Holm within one
    try:
        graphs = tuple(
            measure_graph(target, spec, budget, alpha=alpha, **options)
            for spec in tqdm(budget.graphs, desc="small graphs", disable=not progress)
        )
        verdicts += [unbiasedness_verdict(probe, list(graphs)),
                     variance_verdict(target.label, list(graphs))]
    except Exception as error:  # a crash is a failed check, with the reason
        graphs = ()
        verdicts += [_crashed("unbiasedness", error), _crashed("variance", error)]
    if target.gates == "categorical":
        network = curves = vae = None
        verdicts += [Verdict(check, "skip", f"not run for a categorical target: {why}")
                     for check, why in BERNOULLI_ONLY.items()]
    else:
        network_verdict, network = _guarded("full network", network_check, target, budget,
                                            progress=progress, **options)
        training_verdict, curves = _guarded("training", training_check, target, budget,
                                            progress=progress, **options)
        vae_verdict, vae = _guarded("binary vae", binary_vae_check, target, budget,
                                    progress=progress, **options)
        verdicts += [network_verdict, training_verdict, vae_verdict]
    return ValidationResult(target, tuple(verdicts), graphs, network, curves, contract_rows,
                            time.perf_counter() - started, vae)


def _crashed(check: str, error: Exception) -> Verdict:
    return Verdict(check, "fail", f"raised {type(error).__name__}: {error}")


def _guarded(check: str, run, *args, **kwargs) -> tuple[Verdict, pd.DataFrame | None]:
    """`run(*args, **kwargs)`, or a failed verdict saying what it raised."""
    try:
        return run(*args, **kwargs)
    except Exception as error:
        return _crashed(check, error), None


def write_report_card(result: ValidationResult, budget: Budget, out: str | Path, *,
                      seed: int, device: str, command: str) -> Path:
    """Writes the report card (`report.md`, `report.html`, figures, `verdicts.json`) to `out`,
    replaced whole.

    Returns:
        the path of `report.md`.
    """
    from estimator_lab.validation.card import report_card

    manifest = run_manifest(
        seed=seed, device=describe_device(resolve_device(device)),
        wall_time_s=result.wall_time_s, study="validate", target=result.target.label,
        target_class=f"{result.target.cls.__module__}.{result.target.cls.__qualname__}",
        budget=asdict(budget),
    )
    verdicts = [asdict(v) for v in result.verdicts]
    with staged_directory(out) as stage:
        report_card(result, budget, manifest, command).write(stage)
        atomic_write_text(stage / "verdicts.json",
                          json.dumps(verdicts, indent=2, default=str) + "\n")
    return Path(out) / "report.md"


__all__ = ["BERNOULLI_ONLY", "REFERENCES", "ValidationResult", "contract_check", "validate",
           "write_report_card"]
