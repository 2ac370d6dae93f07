"""The `bias_small_graphs` study: every estimator on a suite of small graphs against exact truth.

`estimator-lab run bias_small_graphs [--quick] [--out DIR]`. For each graph of the suite (toys
at several targets and logit scales, sigmoid belief nets of several shapes, tiny conditional
networks) and each registered estimator, measured on the gradient of every graph parameter:

- the exact gradient `∇` of the expected loss (enumeration, float64);
- the exact mean and total variance `tr Σ` of one draw where `exact_moments` computes them
  (enumeration or quadrature), so the bias `‖E ĝ − ∇‖` carries no Monte Carlo error;
- Monte Carlo draws for every estimator that runs on the graph (common random numbers): the
  per-coordinate Holm test of the bias study (`studies.bias.estimator_rows`), intervals of the
  total variance and squared bias from batch means (`GroupSummaries`: per-coordinate moments
  cannot give the error of a sum over coordinates), per-coordinate variances with
  fourth-moment intervals (`variance_with_error`), and the measured seconds per draw;
- MSE `= ‖bias‖² + tr Σ` and work-normalised variance `= tr Σ × evaluations per draw`.

Estimators that cannot run on a graph (single-layer estimators on a multi-layer net) get a
row saying why; estimators that need prepared state (the oracle baseline's Eq. 10 values,
warmed-up adaptive baselines) are built by `prepare_estimator`, as in every study.

Writes `summary.csv` (one row per graph and estimator), `tensors.csv` (`summary_frame`, one
row per graph, estimator and tracked tensor), `coordinates.csv` (per-coordinate rows for the
graphs with at most `coordinate_rows_limit` parameter coordinates), `graphs.csv` and the
report (`report.md`, `report.html`, `tables.tex`, figures as PNG and PDF, `manifest.json`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from estimator_lab.device import describe_device, resolve_device
from estimator_lab.estimators import available, get_estimator
from estimator_lab.estimators.base import require_single_layer
from estimator_lab.estimators.prepare import prepare_estimator
from estimator_lab.exact import EnumerationTooLarge, NotComputable, exact_gradient, exact_moments
from estimator_lab.graphs.specs import build_problem
from estimator_lab.montecarlo import run_draws
from estimator_lab.plotting import estimator_order, variance_interval_plot
from estimator_lab.reporting import Report, run_manifest
from estimator_lab.stats import group_mean, summary_frame, variance_with_error
from estimator_lab.studies.bias import BiasConfig, estimator_rows
from estimator_lab.studies.protocol import STUDIES

EXACT_BIAS_RESOLUTION = 1e-9
"""An exact relative bias above this is a bias: float64 rounding leaves ~1e-15 (a million
times smaller), and every biased estimator of the suite is biased by far more."""

BIAS_FIGURE_FLOOR = 1e-16
"""Relative biases are drawn no lower than this on the log axis (exact zeros and rounding)."""

VARIANCE_FIGURE_FLOOR = 1e-8
"""Work-normalised variances are drawn no lower than this (zero variance up to rounding)."""


@dataclass(frozen=True)
class SmallGraphsConfig:
    """Settings of the `bias_small_graphs` study.

    Attributes:
        graphs: graph specs (`build_problem`).
        estimators: registry names; empty means every registered estimator.
        draws: Monte Carlo draws per estimator and graph.
        groups: batch-means groups the draws are split into (intervals of sums over
            coordinates: total variance, squared bias).
        seed: seeds the graphs, the warm-ups and the noise.
        alpha: family-wise level of each (graph, estimator) bias test (Holm over coordinates).
        warmup_steps: `update` calls before an adaptive estimator's state is frozen.
        chunk_size: draws held in memory at once.
        max_exact_atoms: the most noise atoms (gate configurations of every gate-sample copy)
            `exact_moments` may enumerate per example; beyond it, Monte Carlo only (two-copy
            estimators on 10+ gates would take minutes each).
        coordinate_rows_limit: graphs with more parameter coordinates get no per-coordinate
            rows in `coordinates.csv` (their per-tensor rows are in `tensors.csv`).
        device: `"auto"`, `"cpu"`, `"cuda"`, ...
    """

    graphs: tuple[str, ...] = ("toy:n=4,t=0.45", "sbn:3-3-3")
    estimators: tuple[str, ...] = ()
    draws: int = 10_000
    groups: int = 50
    seed: int = 0
    alpha: float = 1e-3
    warmup_steps: int = 200
    chunk_size: int = 500
    max_exact_atoms: int = 2**14
    coordinate_rows_limit: int = 1000
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.graphs:
            raise ValueError("graphs must name at least one graph spec")
        if self.groups < 2 or self.draws < 2 * self.groups:
            raise ValueError(f"need groups >= 2 and draws >= 2 x groups, got draws={self.draws}, "
                             f"groups={self.groups}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def estimator_names(self) -> tuple[str, ...]:
        """The estimators measured: `estimators`, or every registered one."""
        return self.estimators or tuple(available())


FULL = SmallGraphsConfig(
    graphs=(
        "toy:n=4,t=0.45", "toy:n=4,t=0.2",
        # The same four logits at three times the scale (near-deterministic gates).
        "toy:logits=4.62/-0.88/-6.54/1.71,t=0.45", "toy:logits=4.62/-0.88/-6.54/1.71,t=0.2",
        "sbn:6", "sbn:4-4", "sbn:3-3-3",
        "tiny-conditional:gates=10", "tiny-conditional:gates=12",
    ),
    draws=10_000,
)
"""The committed run (`reports/bias_small_graphs`)."""

QUICK = SmallGraphsConfig(
    graphs=("toy:n=4,t=0.45", "sbn:3-3-3", "tiny-conditional:gates=6"), draws=2000, groups=20,
)
"""`--quick`: one graph of each kind, fewer draws (about a minute on a 2-core CPU)."""

SUMMARY_TABLE_COLUMNS = {
    "graph": "graph spec",
    "estimator": "registry name",
    "moments": "'exact (enumeration|quadrature)', 'Monte Carlo', or 'not run'",
    "biased": "exact: relative bias > EXACT_BIAS_RESOLUTION; Monte Carlo: the Holm test",
    "relative_bias": "‖E ĝ − ∇‖ / ‖∇‖ (exact where `moments` is exact)",
    "relative_bias_low": "95% interval of the Monte Carlo relative bias (exact: none)",
    "relative_bias_high": "upper end of that interval",
    "variance": "tr Σ of one draw over every parameter coordinate",
    "variance_low": "95% interval of tr Σ (Monte Carlo, batch means; exact: none)",
    "variance_high": "upper end of that interval",
    "mse": "‖E ĝ − ∇‖² + tr Σ",
    "evaluations": "loss evaluations per draw on this graph",
    "work_variance": "tr Σ × evaluations",
    "work_variance_low": "95% interval of the work-normalised variance",
    "work_variance_high": "upper end of that interval",
}
"""The columns of the report's summary table (all are in `summary.csv`, with more)."""


def run_small_graphs(config: SmallGraphsConfig, out: str | Path, *, progress: bool = False) -> Path:
    """Runs the study and writes its report folder (replaced whole on success).

    Returns:
        the path of `report.md`.
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    names = config.estimator_names()
    for name in names:  # an unknown name fails before any work
        get_estimator(name)
    results = [
        measure_graph(spec, config, names, device, progress=progress)
        for spec in tqdm(config.graphs, desc="graphs", disable=not progress)
    ]
    summary = pd.concat([r["summary"] for r in results], ignore_index=True)
    tensors = pd.concat([r["tensors"] for r in results], ignore_index=True)
    coordinates = pd.concat([r["coordinates"] for r in results], ignore_index=True)
    graphs = pd.DataFrame([r["graph"] for r in results])
    manifest = run_manifest(
        seed=config.seed, device=describe_device(device),
        wall_time_s=time.perf_counter() - started, study="bias_small_graphs",
        config=asdict(config) | {"estimators": list(names)},
    )
    tables = {"summary": summary, "tensors": tensors, "coordinates": coordinates,
              "graphs": graphs}
    return STUDIES["bias_small_graphs"].write(out, config, tables, manifest)


def _not_run_row(spec: str, name: str, reason: str) -> dict:
    return {"graph": spec, "estimator": name, "moments": "not run", "reason": reason}


def measure_graph(
    spec: str, config: SmallGraphsConfig, names: tuple[str, ...], device: torch.device, *,
    progress: bool = False,
) -> dict:
    """Every estimator on one graph.

    Returns:
        a dict with `summary` (one row per estimator), `tensors` (`summary_frame` rows),
        `coordinates` (per-coordinate rows, empty above `coordinate_rows_limit`) and `graph`
        (one row describing the graph: gates, parameters, ‖∇‖, E[L], seconds).
    """
    started = time.perf_counter()
    problem = build_problem(spec, seed=config.seed)
    graph = problem.graph.to(device)
    batch = tuple(t.to(device) for t in problem.batch)
    value, gradient = exact_gradient(graph, batch)
    parameters = [n for n, _ in graph.named_parameters()]
    truth = torch.cat([gradient[n].reshape(-1).cpu() for n in parameters])
    rows, estimators, states, exact = [], {}, {}, {"gradient": gradient, "moments": {},
                                                   "methods": {}}
    for name in names:
        try:
            require_single_layer(graph, get_estimator(name))
        except ValueError as reason:
            rows.append(_not_run_row(spec, name, str(reason)))
            continue
        estimators[name], states[name] = prepare_estimator(
            name, graph, batch, warmup_steps=config.warmup_steps, seed=config.seed)
        try:
            exact["moments"][name] = exact_moments(graph, estimators[name], batch,
                                                   state=states[name], parameters=parameters,
                                                   max_configurations=config.max_exact_atoms)
            exact["methods"][name] = exact["moments"][name].method
        except (NotComputable, EnumerationTooLarge) as reason:
            exact["methods"][name] = f"not computable: {reason}"
    group_size = config.draws // config.groups
    accumulators = run_draws(
        graph, estimators, batch, num_draws=config.draws, seed=config.seed,
        chunk_size=config.chunk_size, states=states, include_logits=False,
        higher_moments=True, group_size=group_size, references=gradient, progress=progress,
    )
    evaluations = {name: est.evaluations(graph) for name, est in estimators.items()}
    bias_config = BiasConfig(graph=spec, estimators=tuple(estimators) or names,
                             draws=config.draws, seed=config.seed, alpha=config.alpha)
    shapes = {n: tuple(gradient[n].shape) for n in parameters}
    frames = []
    for name, estimator in estimators.items():
        frame, verdict = estimator_rows(bias_config, name, parameters, exact,
                                        accumulators[name], shapes, estimator)
        frames.append(_with_variance_intervals(frame, accumulators[name], parameters))
        rows.append(_summary_row(spec, name, estimator, exact, accumulators[name], verdict,
                                 truth, parameters, evaluations[name]))
    tensors = summary_frame(accumulators, references=gradient, evaluations=evaluations)
    coordinates = (pd.concat(frames, ignore_index=True)
                   if frames and truth.numel() <= config.coordinate_rows_limit else pd.DataFrame())
    order = {name: i for i, name in enumerate(estimator_order(names))}
    summary = pd.DataFrame(rows).sort_values("estimator", key=lambda s: s.map(order))
    return {
        "summary": summary.reset_index(drop=True),
        "tensors": tensors.assign(graph=spec)[["graph", *tensors.columns]],
        "coordinates": coordinates,
        "graph": {"graph": spec, "gate_layers": "-".join(map(str, graph.layer_sizes)),
                  "gates": graph.num_gates, "batch": int(batch[0].shape[0]),
                  "parameters": truth.numel(), "gradient_norm": float(truth.norm()),
                  "expected_loss": float(value), "estimators_run": len(estimators),
                  "seconds": time.perf_counter() - started},
    }


def _with_variance_intervals(frame: pd.DataFrame, accumulator, parameters: list[str]):
    """`frame` (the bias study's per-coordinate rows) with fourth-moment variance intervals."""
    results = [variance_with_error(accumulator[n]) for n in parameters]
    intervals = [r.confidence_interval(0.95) for r in results]
    return frame.assign(
        variance_se=np.concatenate([r.standard_error for r in results]),
        variance_low=np.concatenate([low for low, _ in intervals]),
        variance_high=np.concatenate([high for _, high in intervals]),
    )


def _group_interval(accumulator, store: str, parameters: list[str], point: float):
    """A 95% t interval around `point` with the batch-means standard error of a group summary
    (`store`) summed over the parameters; conservative, as the groups' mean is no more precise
    than the full-sample `point`."""
    per_name = [getattr(accumulator.groups, store)[n] for n in parameters]
    groups = sorted(set.intersection(*[set(values) for values in per_name]))
    result = group_mean([sum(values[g] for values in per_name) for g in groups])
    return replace(result, estimate=point).confidence_interval(0.95)


def _summary_row(spec, name, estimator, exact, accumulator, verdict, truth, parameters,
                 evaluations) -> dict:
    """One estimator's row: exact figures where computable, Monte Carlo ones with intervals."""
    norm = float(truth.norm())
    n = accumulator[parameters[0]].count
    mc_mean = torch.cat([accumulator[p].mean.cpu() for p in parameters])
    mc_variance = float(sum(accumulator[p].variance.sum() for p in parameters))
    squared_bias = float((mc_mean - truth).square().sum()) - mc_variance / n  # unbiased
    variance_low, variance_high = _group_interval(accumulator, "total_variance", parameters,
                                                  mc_variance)
    bias_low, bias_high = _group_interval(accumulator, "squared_bias", parameters, squared_bias)
    row = {
        "graph": spec, "estimator": name, "claims_unbiased": estimator.is_unbiased,
        "distribution": estimator.distribution,
        "mc_relative_bias": max(squared_bias, 0.0) ** 0.5 / norm,
        "mc_relative_bias_low": max(bias_low, 0.0) ** 0.5 / norm,
        "mc_relative_bias_high": max(bias_high, 0.0) ** 0.5 / norm,
        "mc_variance": mc_variance, "mc_variance_low": max(variance_low, 0.0),
        "mc_variance_high": variance_high,
        "holm_pvalue": verdict["holm_pvalue"], "coordinates_flagged":
            verdict["coordinates_flagged"], "mc_verdict": verdict["verdict"], "draws": n,
        "evaluations": evaluations, "seconds_per_draw": accumulator.elapsed_s / n,
    }
    moments = exact["moments"].get(name)
    if moments is not None:
        mean = torch.cat([moments.mean[p].reshape(-1).cpu() for p in parameters])
        variance = float(sum(moments.variance[p].sum() for p in parameters))
        relative_bias = float((mean - truth).norm()) / norm
        row |= {"moments": f"exact ({moments.method})",
                "biased": "yes" if relative_bias > EXACT_BIAS_RESOLUTION else "no",
                "relative_bias": relative_bias, "relative_bias_low": np.nan,
                "relative_bias_high": np.nan, "variance": variance, "variance_low": np.nan,
                "variance_high": np.nan}
    else:
        row |= {"moments": "Monte Carlo",
                "biased": "yes" if verdict["verdict"] == "biased" else "not flagged",
                "relative_bias": row["mc_relative_bias"],
                "relative_bias_low": row["mc_relative_bias_low"],
                "relative_bias_high": row["mc_relative_bias_high"], "variance": mc_variance,
                "variance_low": row["mc_variance_low"], "variance_high": variance_high}
    row["mse"] = (row["relative_bias"] * norm) ** 2 + row["variance"]
    for key in ("", "_low", "_high"):
        row[f"work_variance{key}"] = row[f"variance{key}"] * evaluations
    reasons = [exact["methods"][name]] if moments is None else []
    if estimator.distribution != "bernoulli":
        reasons.append(f"targets the {estimator.distribution} objective; bias is against the "
                       "Bernoulli gradient")
    if estimator.batch_state:
        reasons.append("prepared: Eq. 10 oracle values of the batch (prepare_estimator)")
    row["reason"] = "; ".join(reasons)
    return row


def work_variance_ranks(summary: pd.DataFrame) -> pd.DataFrame:
    """Per estimator: graphs run, mean rank of work-normalised variance and of MSE per
    evaluation among the estimators run on each graph (1 = lowest), and whether it was biased."""
    ran = summary[summary["moments"] != "not run"].copy()
    ran["work_mse"] = ran["mse"] * ran["evaluations"]
    ran["variance_rank"] = ran.groupby("graph")["work_variance"].rank()
    ran["mse_rank"] = ran.groupby("graph")["work_mse"].rank()
    ranks = ran.groupby("estimator").agg(
        graphs=("graph", "size"), mean_work_variance_rank=("variance_rank", "mean"),
        mean_work_mse_rank=("mse_rank", "mean"),
        biased_on=("biased", lambda b: int((b == "yes").sum())),
    )
    return ranks.sort_values("mean_work_variance_rank").reset_index()


def _reasons(summary: pd.DataFrame) -> pd.DataFrame:
    """Each distinct (estimator, reason) with the graphs it applies to."""
    noted = summary[summary["reason"].fillna("") != ""]
    return (noted.groupby(["estimator", "reason"], sort=False)["graph"]
            .agg(lambda graphs: ", ".join(f"`{g}`" for g in graphs)).reset_index()
            [["estimator", "graph", "reason"]].rename(columns={"graph": "graphs"}))


def _floored(summary: pd.DataFrame, value: str, floor: float) -> pd.DataFrame:
    """`summary` with `value` and its interval clipped below at `floor`, for a log axis."""
    return summary.assign(**{column: summary[column].clip(lower=floor)
                             for column in (value, f"{value}_low", f"{value}_high")})


def _interval_figure(summary: pd.DataFrame, value: str, low: str, high: str, ylabel: str):
    """`value` per estimator across graphs with 95% intervals, log scale, legend outside."""
    from matplotlib.figure import Figure

    ran = summary[summary["moments"] != "not run"]
    ax = Figure(figsize=(13, 5)).subplots()
    variance_interval_plot(ran, value=value, low=low, high=high, by="graph", ax=ax)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax.figure.tight_layout()
    return ax.figure


def small_graphs_report(
    config: SmallGraphsConfig, summary: pd.DataFrame, graphs: pd.DataFrame, manifest: dict
) -> Report:
    """The study's report from its saved tables and manifest (figures drawn from them)."""
    names = manifest["config"]["estimators"]
    biased = summary[summary["biased"] == "yes"]
    bernoulli = biased[biased["distribution"] == "bernoulli"]
    worst = bernoulli.loc[bernoulli["relative_bias"].idxmax()] if len(bernoulli) else None
    ranks = work_variance_ranks(summary)
    report = Report("Every estimator on small graphs, against exact truth", manifest)
    report.add_text(f"""
**Question.** On small graphs where the expected loss and its gradient `∇` are exact
(enumeration of every gate configuration, float64), which of the {len(names)} registered
estimators are biased, by how much, and how large are their variance, MSE and
work-normalised variance?

**Setup.** {len(config.graphs)} graphs; per graph and estimator, the gradient of every graph
parameter (gate logits are not a parameter and not counted). Exact mean and variance of a draw
where `exact_moments` computes them (`moments` = exact: relative bias and variance without Monte
Carlo error, `biased` = relative bias > {EXACT_BIAS_RESOLUTION:g}); otherwise
{config.draws:,} Monte Carlo draws (seed {config.seed}, common random numbers), `biased` from
per-coordinate z-tests with Holm's correction at family-wise level {config.alpha:g} per graph
and estimator (`not flagged` is not a proof of unbiasedness), and 95% intervals of `tr Σ` and
of the squared bias from {config.groups} batch-means groups (the per-coordinate variances,
with fourth-moment intervals, are in `coordinates.csv`). Every estimator also gets the Monte
Carlo figures (`mc_*` columns of `summary.csv`), a check of the exact ones. MSE
`= ‖E ĝ − ∇‖² + tr Σ`; work-normalised variance `= tr Σ ×` loss evaluations per draw.
Adaptive estimators are measured after {config.warmup_steps} warm-up updates
(`prepare_estimator`). Device {manifest["device"]}; wall time {manifest["wall_time_s"]:.0f} s.""")
    report.add_table(graphs, "The graphs: gate layers, parameters, ‖∇‖, E[L], seconds",
                     label="tab:graphs")
    headline = [f"{len(biased)} of {int((summary['moments'] != 'not run').sum())} (graph, "
                f"estimator) pairs are biased: "
                + ", ".join(f"`{e}` ({n})" for e, n in biased["estimator"].value_counts()
                            .items()) + "."]
    if worst is not None:
        headline.append(f"The largest relative bias of an estimator of the Bernoulli gradient "
                        f"is `{worst['estimator']}` on `{worst['graph']}`: "
                        f"{worst['relative_bias']:.3g} (`sts` and `noisy-rectifier` change the "
                        "gate and target their own objectives).")
    unbiased = ranks[ranks["biased_on"] == 0]
    headline.append("Lowest mean rank of work-normalised variance among the estimators biased "
                    "nowhere: " + ", ".join(
                        f"`{r.estimator}` ({r.mean_work_variance_rank:.1f} over {r.graphs} "
                        "graphs)" for r in unbiased.head(5).itertuples()) + ".")
    exact = summary[summary["moments"].str.startswith("exact")]
    disagree = exact[(exact["biased"] == "yes") != (exact["mc_verdict"] == "biased")]
    headline.append("Where the moments are exact, the Monte Carlo test agrees with them "
                    + ("everywhere." if disagree.empty else "except on " + ", ".join(
                        f"`{r.estimator}` on `{r.graph}` (exact relative bias "
                        f"{r.relative_bias:.2g}, Holm p = {r.holm_pvalue:.2g})"
                        for r in disagree.itertuples()) + "."))
    report.add_section("Headline", " ".join(headline))
    report.add_table(summary[list(SUMMARY_TABLE_COLUMNS)],
                     "Bias, variance, MSE and work-normalised variance per graph and estimator",
                     label="tab:small-graphs-summary")
    report.add_table(ranks, "Mean rank (1 = lowest) of work-normalised variance and of MSE × "
                     "evaluations among the estimators run on each graph (single-layer "
                     "estimators run on fewer graphs: `graphs`), and on how many graphs each is "
                     "biased", label="tab:ranks")
    report.add_table(_reasons(summary), "Estimators not run, without exact moments, or needing "
                     "a note, and why", label="tab:reasons")
    report.add_figure(
        _interval_figure(_floored(summary, "relative_bias", BIAS_FIGURE_FLOOR), "relative_bias",
                         "relative_bias_low", "relative_bias_high",
                         "relative bias ‖E ĝ − ∇‖ / ‖∇‖"),
        f"Relative bias per estimator and graph (exact: a point; Monte Carlo: 95% interval); "
        f"values below {BIAS_FIGURE_FLOOR:g} (rounding, or a Monte Carlo estimate of zero) are "
        "drawn at it", name="relative_bias")
    report.add_figure(
        _interval_figure(_floored(summary, "work_variance", VARIANCE_FIGURE_FLOOR),
                         "work_variance", "work_variance_low", "work_variance_high",
                         "tr Σ × evaluations per draw"),
        "Work-normalised variance per estimator and graph (exact: a point; Monte Carlo: 95% "
        f"interval); values below {VARIANCE_FIGURE_FLOOR:g} (zero variance up to rounding) are "
        "drawn at it", name="work_variance")
    report.add_text("""
Files: `summary.csv` (every column, with the Monte Carlo check of the exact figures),
`tensors.csv` (`summary_frame` per tracked tensor), `coordinates.csv` (per-coordinate rows),
`graphs.csv`.

```
estimator-lab run bias_small_graphs --out reports/bias_small_graphs
```""")
    return report
