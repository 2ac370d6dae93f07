"""The bias study: estimators on a small graph against its exact gradient.

`estimator-lab bias --graph SPEC --estimators a,b --draws N --seed S --out DIR` draws `N`
gradient estimates per estimator (common random numbers), computes the exact gradient by
enumeration and, where the estimator's noise allows, its exact mean and variance, and writes
`results.csv` (one tidy row per estimator and coordinate), `summary.csv`, `graph.pt` (the
state dict and batch, to recompute anything) and the report (`report.md`, `report.html`,
`tables.tex`, the figure as PNG and PDF, `manifest.json`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from estimator_lab.device import describe_device, resolve_device
from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.estimators.prepare import prepare_estimator
from estimator_lab.exact import EnumerationTooLarge, NotComputable

# Dispatching on the graph's gates (`exact.categorical.gate_law`): Bernoulli graphs get
# `estimator_lab.exact.exact_gradient` and `exact_moments` as before, categorical and top-k
# graphs the same sweeps over the configurations of their gates' law.
from estimator_lab.exact.categorical import exact_gradient_for as exact_gradient
from estimator_lab.exact.categorical import exact_moments_for as exact_moments
from estimator_lab.graphs.categorical import gate_distribution
from estimator_lab.graphs.specs import build_problem
from estimator_lab.montecarlo import GATE_LOGITS, run_draws
from estimator_lab.montecarlo.accumulators import Moments
from estimator_lab.plotting import bias_interval_plot
from estimator_lab.reporting import Report, run_manifest
from estimator_lab.stats import rounding_scale, zero_mean_test
from estimator_lab.studies.protocol import STUDIES
from estimator_lab.studies.rebuild import (
    BIAS_TEST_NUMERIC,
    check_blocks,
    check_columns,
    check_draws,
    graph_layout,
    mismatch,
)

RESULT_COLUMNS = [
    "graph", "estimator", "parameter", "index", "exact", "mean", "stderr", "variance",
    "exact_mean", "exact_variance", "pvalue", "pvalue_adjusted",
]
"""The columns of `results.csv`, one row per estimator and coordinate."""

SUMMARY_NUMERIC = [*BIAS_TEST_NUMERIC, "exact_bias_norm", "relative_exact_bias", "mean_variance",
                   "exact_mean_variance"]
"""The numeric columns of `summary.csv`."""


@dataclass(frozen=True)
class BiasConfig:
    """Settings of a bias study.

    Attributes:
        graph: a graph spec (`toy:n=4,t=0.45`, `sbn:4-4-4`, `tiny-conditional:gates=12`,
            `cat-toy:n=3,k=4,t=0.45`, `topk-toy:n=2,classes=4,k=2`, `moe:experts=4,k=2`, ...:
            `graphs.specs.build_problem`).
        estimators: registry names (of the categorical registry for a categorical graph, of
            the top-k one for a top-k graph: `estimator_for`).
        draws: Monte Carlo draws per estimator.
        seed: seeds the graph and the noise.
        alpha: family-wise level (Holm over every coordinate of one estimator).
        device: `"auto"`, `"cpu"`, `"cuda"`, ...
        chunk_size: draws held in memory at once.
        warmup_steps: `update` calls on separate noise before an adaptive estimator's state
            is frozen for the measurement (`prepare_estimator`).
    """

    graph: str = "toy:n=4,t=0.45"
    estimators: tuple[str, ...] = ("reinforce", "st")
    draws: int = 10_000
    seed: int = 0
    alpha: float = 0.01
    device: str = "auto"
    chunk_size: int = 1000
    warmup_steps: int = 200

    def __post_init__(self) -> None:
        if self.draws < 2:
            raise ValueError(f"draws must be >= 2, got {self.draws}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not self.estimators:
            raise ValueError("estimators must name at least one estimator")


def _flat(tensors: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([tensors[n].reshape(-1).double().cpu() for n in names])


def estimator_rows(config: BiasConfig, name: str, names: list[str], exact: dict, moments,
                   shapes: dict, estimator: GradientEstimator) -> tuple[pd.DataFrame, dict]:
    """Tidy per-coordinate rows and a summary row for one estimator (`estimator`, measured
    under `name`: its `is_unbiased` flag goes in the summary)."""
    mean = torch.cat([moments[n].mean.cpu() for n in names])
    m2 = torch.cat([moments[n].m2.cpu() for n in names])
    truth = _flat(exact["gradient"], names)
    test = zero_mean_test(
        Moments(moments[names[0]].count, mean - truth, m2), alpha=config.alpha,
        rounding=rounding_scale(mean.numpy(), truth.numpy()),
    )
    exact_est = exact["moments"].get(name)
    frame = pd.DataFrame({
        "graph": config.graph,
        "estimator": name,
        "parameter": np.concatenate([[n] * int(np.prod(shapes[n])) for n in names]),
        "index": np.concatenate([np.arange(int(np.prod(shapes[n]))) for n in names]),
        "exact": truth.numpy(),
        "mean": mean.numpy(),
        "stderr": test.standard_error,
        "variance": torch.cat([moments[n].variance.cpu() for n in names]).numpy(),
        "exact_mean": _flat(exact_est.mean, names).numpy() if exact_est else np.nan,
        "exact_variance": _flat(exact_est.variance, names).numpy() if exact_est else np.nan,
        "pvalue": test.pvalues,
        "pvalue_adjusted": test.pvalues_adjusted,
    })
    bias_norm = float(np.linalg.norm(frame["exact_mean"] - frame["exact"])) if exact_est else np.nan
    summary = {
        "estimator": name,
        "claims_unbiased": estimator.is_unbiased,
        "draws": test.count,
        "coordinates": len(frame),
        "max_abs_z": test.statistic,
        "holm_pvalue": test.pvalue,
        "coordinates_flagged": int(test.rejected.sum()),
        "verdict": "biased" if test.pvalue < config.alpha else "not flagged",
        "exact_bias_norm": bias_norm,
        "relative_exact_bias": bias_norm / float(np.linalg.norm(frame["exact"])),
        "mean_variance": float(frame["variance"].mean()),
        "exact_mean_variance": float(frame["exact_variance"].mean()) if exact_est else np.nan,
        "exact_method": exact["methods"].get(name, "not computable"),
    }
    return frame, summary


def run_bias(config: BiasConfig, out: str | Path, *, progress: bool = False) -> Path:
    """Runs the bias study and writes its report folder (replaced whole on success).

    Returns:
        the path of `report.md`.
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    problem = build_problem(config.graph, seed=config.seed)
    graph = problem.graph.to(device)
    batch = tuple(t.to(device) for t in problem.batch)
    prepared = {name: prepare_estimator(name, graph, batch, warmup_steps=config.warmup_steps,
                                        seed=config.seed) for name in config.estimators}
    estimators = {name: estimator for name, (estimator, _) in prepared.items()}
    states = {name: state for name, (_, state) in prepared.items()}
    value, gradient = exact_gradient(graph, batch)
    exact = {"gradient": gradient, "moments": {}, "methods": {}}
    for name, estimator in estimators.items():
        try:
            exact["moments"][name] = exact_moments(graph, estimator, batch, state=states[name])
            exact["methods"][name] = exact["moments"][name].method
        except (NotComputable, EnumerationTooLarge) as reason:  # e.g. rloo's K copies
            exact["methods"][name] = f"not computable: {reason}"
    moments = run_draws(graph, estimators, batch, num_draws=config.draws, seed=config.seed,
                        chunk_size=config.chunk_size, progress=progress, states=states)
    names = [GATE_LOGITS] + [n for n, _ in graph.named_parameters()]
    shapes = {n: tuple(t.shape) for n, t in gradient.items()}
    frames, summaries = zip(*[
        estimator_rows(config, name, names, exact, moments[name], shapes, estimator)
        for name, estimator in estimators.items()
    ], strict=True)
    results = pd.concat(frames, ignore_index=True)[RESULT_COLUMNS]
    summary = pd.DataFrame(summaries)
    manifest = run_manifest(
        seed=config.seed, device=describe_device(device),
        wall_time_s=time.perf_counter() - started, study="bias", config=asdict(config),
        expected_loss=float(value), num_gates=graph.num_gates, **_gate_sizes(graph),
    )

    def save_graph(stage: Path) -> None:
        torch.save({"spec": config.graph, "seed": config.seed,
                    "state_dict": {k: v.cpu() for k, v in graph.state_dict().items()},
                    "batch": [t.cpu() for t in batch]}, stage / "graph.pt")

    tables = {"results": results, "summary": summary}
    return STUDIES["bias"].write(out, config, tables, manifest, files=save_graph)


def _gate_sizes(graph) -> dict[str, int]:
    """The manifest's sizes of categorical gates (`num_classes`) and top-k gates (`num_classes`
    and `num_chosen`); none for Bernoulli gates."""
    distribution = gate_distribution(graph)
    if distribution == "categorical":
        return {"num_classes": graph.num_classes}
    if distribution == "topk":
        return {"num_classes": graph.num_classes, "num_chosen": graph.num_chosen}
    return {}


def bias_report(
    config: BiasConfig, results: pd.DataFrame, summary: pd.DataFrame, manifest: dict
) -> Report:
    """The report of a bias study from its saved tables and manifest (the figure drawn from them).

    `studies.rebuild.rebuild_report` calls it with the tables read back from the run's folder.
    """
    columns = ["estimator", "claims_unbiased", "verdict", "holm_pvalue", "coordinates_flagged",
               "coordinates", "relative_exact_bias", "mean_variance", "exact_mean_variance",
               "exact_method"]
    ax = bias_interval_plot(results[results["parameter"] == GATE_LOGITS])
    ax.set_ylabel("gate logit coordinate")
    report = Report(f"Bias against the exact gradient: `{config.graph}`", manifest)
    gates, classes = manifest["num_gates"], manifest.get("num_classes")
    chosen = manifest.get("num_chosen")
    if classes is None:
        configurations = f"all 2^{gates} gate\nconfigurations"
    elif chosen is None:
        configurations = (f"all {classes}^{gates} configurations of its\n{gates} categorical "
                          f"gates of {classes} classes")
    else:
        configurations = (f"all C({classes},{chosen})^{gates} configurations of its\n{gates} "
                          f"top-{chosen} gates of {classes} classes")
    report.add_text(f"""
**Question.** Which estimators are biased on `{config.graph}`, measured against the exact
gradient of the expected loss (enumeration of {configurations}, float64)?

**Setup.** {config.draws:,} draws per estimator, seed {config.seed}, common random numbers;
per-coordinate z-tests of `mean − exact` with Holm's correction over every coordinate of an
estimator, family-wise level {config.alpha}, with floating-point rounding (64 ulps) added to
each standard error so exact agreements are not flagged. Where an estimator's noise is
discrete (or low dimensional), its exact mean and variance are computed too (`exact_method`):
`relative_exact_bias` is then `‖E[ĝ] − ∇‖ / ‖∇‖` without Monte Carlo error.
Device {manifest["device"]}; wall time {manifest["wall_time_s"]:.1f} s; E[L] =
{manifest["expected_loss"]:.6g}.""")
    report.add_table(summary[columns], "Verdict, exact bias and variance per estimator",
                     label="tab:bias-summary")
    report.add_figure(ax.figure, "Mean draw minus exact gradient with 95% intervals, first gate "
                      "logit coordinates", name="bias")
    report.add_text(f"""
Per-coordinate rows: `results.csv`; the graph's parameters and batch: `graph.pt`.

```
estimator-lab bias --graph '{config.graph}' --estimators {",".join(config.estimators)} \\
    --draws {config.draws} --seed {config.seed} --alpha {config.alpha} --out DIR
```""")
    return report


def check_tables(folder: Path, config: BiasConfig, tables: dict[str, pd.DataFrame],
                 manifest: dict) -> None:
    """Checks a saved bias study before its report is rebuilt (`studies.rebuild`): the graph
    spec builds, the tables' columns hold numbers where numbers belong, and their rows are the
    configured estimators times the graph's coordinates, each with the configured draws.

    Raises:
        ReportError: the first thing that does not match, in one line.
    """
    results, summary = tables["results"], tables["summary"]
    layout = graph_layout(config.graph, config.seed, folder)
    text = ["graph", "estimator", "parameter"]
    path = folder / "results.csv"
    check_columns(results, path, numeric=[c for c in RESULT_COLUMNS if c not in text],
                  text=text)
    if results["graph"].ne(config.graph).any():
        raise mismatch(path, f"rows of another graph than {config.graph!r}")
    coordinates = int(layout["numel"].sum())
    sizes = check_blocks(results, path, config.estimators)
    parameters = np.repeat(layout["parameter"].to_numpy(), layout["numel"].to_numpy())
    index = np.concatenate([np.arange(n) for n in layout["numel"]])
    for name, block in results.groupby("estimator", sort=False):
        if (sizes[name] != coordinates or (block["parameter"].to_numpy() != parameters).any()
                or (block["index"].to_numpy() != index).any()):
            raise mismatch(path, f"{name} has {sizes[name]} rows, not the {coordinates} "
                                 f"coordinates of {config.graph!r} in order")
    path = folder / "summary.csv"
    check_columns(summary, path, numeric=SUMMARY_NUMERIC, text=["estimator"])
    check_blocks(summary, path, config.estimators)
    if summary["coordinates"].ne(coordinates).any():
        raise mismatch(path, f"coordinates other than the graph's {coordinates}")
    check_draws(summary, path, dict.fromkeys(config.estimators, config.draws))
