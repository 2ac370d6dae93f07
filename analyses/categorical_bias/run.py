"""Every categorical estimator on cat-toy against exact truth, across temperatures and K.

On `cat-toy:n=3,k=K,t=0.45` (three categorical gates of `K` classes, seeded logits), the exact
gradient `∇` of the expected loss comes from enumerating the `K^3` configurations (float64; it
is checked against the closed form). For every registered categorical estimator, and for the
temperature ones (`gumbel`, `st-gumbel`, `gumbel-rao`, `reinmax`, `gst`) at every temperature
of the grid, on the gradient of the logits `theta` (`3 x K` coordinates):

- exact mean and variance of a draw where the estimator's noise is discrete
  (`categorical_exact_moments`: enumeration of its gate samples), so relative bias, variance,
  MSE and cosine carry no Monte Carlo error;
- Monte Carlo draws for every estimator (common seed): relative bias, `tr Σ` and cosine with
  95% batch-means intervals (`summary_frame`), used where no exact moments exist and as a
  check of the exact ones elsewhere;
- MSE `= ‖E ĝ − ∇‖² + tr Σ` and work-normalised variance `= tr Σ ×` loss evaluations per draw.

Then the ReinMax paper's gradient analysis (Liu et al. 2023) on a small categorical VAE
(`cat-vae:latents=4,classes=8,batch=4,data=mnist`, 8^4 configurations per example): the same
estimators and temperatures on the gradient of the encoder's gate logits, against its exact
gradient by enumeration: relative bias `‖E ĝ − ∇‖ / ‖∇‖`, relative std `√tr Σ / ‖∇‖` and
`cos(E ĝ, ∇)`, exact where the estimator's gate samples can be enumerated.

Writes `results.csv` (cat-toy: one row per K, estimator and temperature), `vae.csv` (the VAE:
one row per estimator and temperature), `graphs.csv` (one row per graph) and the report
(`report.md`, `report.html`, `tables.tex`, figures as PNG and PDF, `manifest.json`).

    python analyses/categorical_bias/run.py [--quick] [--out reports/categorical_bias]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from estimator_lab.estimators.base import TemperatureEstimator
from estimator_lab.estimators.categorical import (
    available_categorical,
    get_categorical_estimator,
)
from estimator_lab.estimators.prepare import prepare_estimator
from estimator_lab.exact import EnumerationTooLarge
from estimator_lab.exact.categorical import categorical_exact_gradient, categorical_exact_moments
from estimator_lab.graphs.specs import build_problem
from estimator_lab.montecarlo import GATE_LOGITS, run_draws
from estimator_lab.reporting import Report, run_manifest, write_report_folder
from estimator_lab.stats import summary_frame
from estimator_lab.studies.rebuild import config_from_dict

PARAMETER = "theta"
EXACT_BIAS_RESOLUTION = 1e-9
"""An exact relative bias above this is a bias (float64 rounding leaves ~1e-15)."""
FIGURE_FLOOR = 1e-16
"""Relative biases are drawn no lower than this on the log axis (exact zeros and rounding)."""


@dataclass(frozen=True)
class CategoricalBiasConfig:
    """Settings of the study.

    Attributes:
        classes: the values of `K`.
        gates: `N`, categorical gates of cat-toy.
        target: cat-toy's `t`.
        temperatures: the temperature grid of the temperature estimators.
        draws: Monte Carlo draws per estimator, temperature and `K`.
        groups: batch-means groups for the intervals.
        warmup_steps: `update` calls before an adaptive state is frozen (`reinforce-optimal`).
        seed: seeds the logits, the warm-ups and the noise.
        chunk_size: draws held in memory at once.
        vae: the small categorical VAE of the gradient analysis (`build_problem` spec).
        vae_draws: Monte Carlo draws per estimator and temperature on the VAE.
    """

    classes: tuple[int, ...] = (2, 3, 4, 8)
    gates: int = 3
    target: float = 0.45
    temperatures: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0)
    draws: int = 20_000
    groups: int = 50
    warmup_steps: int = 200
    seed: int = 0
    chunk_size: int = 1000
    vae: str = "cat-vae:latents=4,classes=8,batch=4,data=mnist"
    vae_draws: int = 20_000

    def spec(self, k: int) -> str:
        """The graph spec for `K = k`."""
        return f"cat-toy:n={self.gates},k={k},t={self.target}"


FULL = CategoricalBiasConfig()
QUICK = replace(FULL, classes=(2, 3), temperatures=(0.5, 1.0), draws=400, groups=10,
                warmup_steps=20, chunk_size=200,
                vae="cat-vae:latents=2,classes=4,batch=2,data=synthetic", vae_draws=400)


def estimator_grid(config: CategoricalBiasConfig) -> list[tuple[str, float | None]]:
    """`(name, temperature)` for every categorical estimator; temperature `None` for those
    without one, every temperature of the grid for the others."""
    grid = []
    for name in available_categorical():
        if isinstance(get_categorical_estimator(name), TemperatureEstimator) or name == "gst":
            grid += [(name, tau) for tau in config.temperatures]
        else:
            grid.append((name, None))
    return grid


def _label(name: str, temperature: float | None) -> str:
    return name if temperature is None else f"{name} (tau={temperature:g})"


def measure(config: CategoricalBiasConfig, k: int) -> tuple[pd.DataFrame, dict]:
    """Every estimator of the grid on cat-toy with `K = k`: rows of results, and the graph's row."""
    started = time.perf_counter()
    spec = config.spec(k)
    problem = build_problem(spec, seed=config.seed)
    graph, batch = problem.graph, problem.batch
    value, gradient = categorical_exact_gradient(graph, batch, parameters=[PARAMETER])
    closed = graph.true_gradient()[PARAMETER]
    closed_error = float((gradient[PARAMETER] - closed).abs().max())
    rows = measure_estimators(config, graph, batch, gradient, PARAMETER, draws=config.draws)
    for row in rows:
        row |= {"K": k, "graph": spec}
    graph_row = {"part": "cat-toy", "K": k, "graph": spec,
                 "configurations": graph.num_configurations,
                 "gradient_norm": float(gradient[PARAMETER].norm()),
                 "zero_draw_mse": float(gradient[PARAMETER].norm()) ** 2,
                 "expected_loss": float(value), "exact_vs_closed_form": closed_error,
                 "seconds": time.perf_counter() - started}
    return pd.DataFrame(rows), graph_row


def measure_vae(config: CategoricalBiasConfig) -> tuple[pd.DataFrame, dict]:
    """ReinMax's gradient analysis on the small categorical VAE: every estimator of the grid
    on the gradient of the encoder's gate logits (`B x L x K`), against the exact gradient.

    Returns:
        rows of results (with `relative_std`), and the graph's row.
    """
    started = time.perf_counter()
    problem = build_problem(config.vae, seed=config.seed)
    graph, batch = problem.graph, problem.batch
    value, gradient = categorical_exact_gradient(graph, batch, parameters=[])
    rows = measure_estimators(config, graph, batch, gradient, GATE_LOGITS,
                              draws=config.vae_draws)
    classes = graph.num_classes
    for row in rows:
        row |= {"K": classes, "graph": config.vae}
    norm = float(gradient[GATE_LOGITS].norm())
    graph_row = {"part": "vae", "K": classes, "graph": config.vae,
                 "configurations": graph.num_configurations, "gradient_norm": norm,
                 "zero_draw_mse": norm**2, "expected_loss": float(value),
                 "exact_vs_closed_form": np.nan, "seconds": time.perf_counter() - started}
    return pd.DataFrame(rows), graph_row


def measure_estimators(config: CategoricalBiasConfig, graph, batch: tuple[torch.Tensor, ...],
                       gradient: dict[str, torch.Tensor], parameter: str, *,
                       draws: int) -> list[dict]:
    """Every estimator of the grid on `graph`, on the gradient of the tensor `parameter`.

    Exact moments where the estimator's noise is discrete and its gate samples can be
    enumerated; Monte Carlo (`draws` draws, seed `config.seed`) for every estimator.

    Args:
        gradient: the exact gradient by tensor name (`parameter` among them).
        parameter: the tensor measured, a graph parameter or `GATE_LOGITS`.

    Returns:
        one row per estimator and temperature (see the module docstring for the columns).
    """
    truth = gradient[parameter].reshape(-1)
    norm = float(truth.norm())
    logits = parameter == GATE_LOGITS
    tracked = [] if logits else [parameter]
    estimators, states, exact, meta = {}, {}, {}, {}
    for name, tau in estimator_grid(config):
        label = _label(name, tau)
        hyper = {} if tau is None else {"temperature": tau}
        estimators[label], states[label] = prepare_estimator(
            name, graph, batch, warmup_steps=config.warmup_steps, seed=config.seed, **hyper)
        meta[label] = (name, tau)
        if estimators[label].discrete_noise:
            try:
                exact[label] = categorical_exact_moments(graph, estimators[label], batch,
                                                         state=states[label],
                                                         parameters=tracked)
            except EnumerationTooLarge:  # several gate samples per draw (rloo on the VAE)
                pass
    accumulators = run_draws(
        graph, estimators, batch, num_draws=draws, seed=config.seed,
        chunk_size=config.chunk_size, states=states, parameters=tracked,
        include_logits=logits, group_size=draws // config.groups, references=gradient,
    )
    evaluations = {label: e.evaluations(graph) for label, e in estimators.items()}
    mc = summary_frame(accumulators, references=gradient, evaluations=evaluations)
    mc = mc[mc["parameter"] == parameter].set_index("estimator")
    rows = []
    for label, estimator in estimators.items():
        name, tau = meta[label]
        m = mc.loc[label]
        row = {
            "estimator": name, "temperature": tau, "label": label,
            "claims_unbiased": estimator.is_unbiased, "evaluations": evaluations[label],
            "mc_relative_bias": m["relative_bias"], "mc_relative_bias_low":
                m["relative_bias_low"], "mc_relative_bias_high": m["relative_bias_high"],
            "mc_variance": m["total_variance"], "mc_variance_low": m["total_variance_low"],
            "mc_variance_high": m["total_variance_high"], "mc_cosine": m["cosine"],
            "draws": int(m["draws"]),
        }
        if label in exact:
            mean = exact[label].mean[parameter].reshape(-1)
            variance = float(exact[label].variance[parameter].sum())
            bias = float((mean - truth).norm()) / norm
            row |= {"moments": "exact (enumeration)", "relative_bias": bias,
                    "relative_bias_low": np.nan, "relative_bias_high": np.nan,
                    "variance": variance, "variance_low": np.nan, "variance_high": np.nan,
                    "cosine": float(mean @ truth) / (float(mean.norm()) * norm),
                    "biased": "yes" if bias > EXACT_BIAS_RESOLUTION else "no"}
        else:
            flagged = m["squared_bias_pvalue"] < 0.01
            row |= {"moments": "Monte Carlo", "relative_bias": m["relative_bias"],
                    "relative_bias_low": m["relative_bias_low"],
                    "relative_bias_high": m["relative_bias_high"],
                    "variance": m["total_variance"], "variance_low": m["total_variance_low"],
                    "variance_high": m["total_variance_high"], "cosine": m["cosine"],
                    "biased": "yes" if flagged else "not detected"}
        row["mse"] = (row["relative_bias"] * norm) ** 2 + row["variance"]
        for key in ("", "_low", "_high"):
            row[f"work_variance{key}"] = row[f"variance{key}"] * row["evaluations"]
            row[f"relative_std{key}"] = row[f"variance{key}"] ** 0.5 / norm
        rows.append(row)
    return rows


def _curves(results: pd.DataFrame, value: str, ylabel: str, floor: float):
    """`value` against temperature, one panel per K: lines for the temperature estimators
    (with the 95% interval as error bars where the value is Monte Carlo), dashed horizontal
    lines for the others; log axes, values below `floor` drawn at it."""
    ks = sorted(results["K"].unique())
    figure = Figure(figsize=(4 * len(ks) + 2.5, 3.8))
    axes = figure.subplots(1, len(ks), sharey=True, squeeze=False)[0]
    names = sorted(results["estimator"].unique())
    colours = {name: _colour(i) for i, name in enumerate(names)}
    for ax, k in zip(axes, ks, strict=True):
        frame = results[results["K"] == k]
        for name, rows in frame.groupby("estimator", sort=True):
            y = rows[value].clip(lower=floor)
            if rows["temperature"].isna().all():
                ax.axhline(float(y.iloc[0]), ls="--", lw=1, color=colours[name], label=name)
                continue
            low, high = f"{value}_low", f"{value}_high"
            if low in rows and rows[low].notna().any():
                spread = [y - rows[low].fillna(rows[value]).clip(lower=floor),
                          rows[high].fillna(rows[value]).clip(lower=floor) - y]
                ax.errorbar(rows["temperature"], y, yerr=spread, marker="o", ms=4, capsize=2,
                            color=colours[name], label=name)
            else:
                ax.plot(rows["temperature"], y, marker="s", ms=4, color=colours[name],
                        label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("temperature τ")
        ax.set_title(f"K = {k}")
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    figure.tight_layout()
    return figure


def _colour(index: int) -> tuple[float, ...]:
    """The `index`-th colour of matplotlib's 20-colour qualitative map (distinct for 20)."""
    from matplotlib import colormaps

    return colormaps["tab20"](index % 20)


TABLE_COLUMNS = ["K", "label", "moments", "biased", "relative_bias", "relative_bias_low",
                 "relative_bias_high", "variance", "mse", "evaluations", "work_variance",
                 "cosine"]


def build_report(config: CategoricalBiasConfig, results: pd.DataFrame, vae: pd.DataFrame,
                 graphs: pd.DataFrame, manifest: dict) -> Report:
    """The study's report from its tables (`results`: cat-toy, `vae`: the gradient analysis,
    `graphs`: one row per graph) and manifest."""
    report = Report("Categorical estimators on cat-toy against exact truth", manifest)
    report.add_text(f"""
**Question.** On `cat-toy:n={config.gates},k=K,t={config.target}` (K in
{", ".join(map(str, config.classes))}), where the gradient of the expected loss is exact, how
biased is every categorical estimator, how large are its variance, MSE and work-normalised
variance, and how do the relaxation estimators change with the temperature τ
({", ".join(f"{t:g}" for t in config.temperatures)})?

**Setup.** The gradient of the logits θ ({config.gates} × K coordinates), exact by enumeration
of K^{config.gates} configurations (float64; its largest distance from the closed form is in
the graphs table). Exact mean and variance of a draw for every estimator whose noise acts only
through its gate samples (`moments` = exact; `biased` = relative bias >
{EXACT_BIAS_RESOLUTION:g}); otherwise {config.draws:,} Monte Carlo draws (seed {config.seed})
with 95% intervals from {config.groups} batch-means groups, `biased` = the one-sided
squared-bias test at level 0.01 (`not detected` is no proof of unbiasedness). Every estimator
also has Monte Carlo figures (`mc_*` in `results.csv`), a check of the exact ones. MSE
`= ‖E ĝ − ∇‖² + tr Σ`; work-normalised variance `= tr Σ ×` loss evaluations per draw.
`reinforce-optimal` is measured after {config.warmup_steps} warm-up updates of its averages.
Wall time {manifest["wall_time_s"]:.0f} s on {manifest["device"]}.""")
    report.add_table(graphs, "The graphs: configurations, ‖∇‖, the MSE ‖∇‖² of a zero draw, "
                     "E[L], exact against closed form, seconds", label="tab:graphs")
    exact = results[results["moments"].str.startswith("exact")]
    agree = exact["biased"].eq("yes") == exact["mc_relative_bias_low"].gt(0)
    unbiased = sorted(set(results.loc[results["claims_unbiased"], "estimator"]))
    wrong = results[results["claims_unbiased"] & results["biased"].eq("yes")]
    single = results[results["evaluations"] == 1]
    best_single = single.loc[single.groupby("K")["mse"].idxmin()]
    relaxed = results[results["temperature"].notna()]
    best_tau = relaxed.loc[relaxed.groupby(["estimator", "K"])["mse"].idxmin()]
    taus = best_tau.groupby("estimator")["temperature"].agg(
        lambda t: "/".join(f"{v:g}" for v in t))
    exact_zero = results[results["moments"].str.startswith("exact")
                         & (results["variance"] < 1e-20)]
    lines = [
        f"The estimators that claim to be unbiased ({', '.join(f'`{n}`' for n in unbiased)}) "
        + ("have exact bias below the resolution on every K." if wrong.empty else
           "are biased on " + ", ".join(f"`{r.label}` (K={r.K})" for r in wrong.itertuples())
           + "."),
        "Exact with zero variance (up to rounding) on every K: "
        + ", ".join(f"`{n}`" for n in sorted(set(exact_zero["estimator"])))
        + " (cat-toy's loss is a sum over gates, so the sum over one gate's classes is that "
        "gate's whole expectation), at N K loss evaluations per draw.",
        "Lowest MSE among the estimators with one loss evaluation per draw: " + ", ".join(
            f"K={r.K} `{r.label}` ({r.mse:.3g}; biased: {r.biased})"
            for r in best_single.itertuples()) + " (a draw of zero has MSE ‖∇‖², "
        + ", ".join(f"{v:.3g}" for v in graphs.loc[graphs["part"] == "cat-toy",
                                                   "zero_draw_mse"]) + ": with a gradient this "
        "small, a biased estimator that shrinks towards zero can win on MSE; `cosine` says "
        "which ones still point the right way).",
        "The temperature of lowest MSE per K (K = " + ", ".join(map(str, config.classes))
        + "): " + "; ".join(f"`{n}` {t}" for n, t in taus.items()) + ".",
        "`reinmax` is exact at τ = 1 on every K (this loss is quadratic in each gate's one-hot) "
        "and biased at every other τ of the grid." if set(results.loc[
            (results["estimator"] == "reinmax") & (results["biased"] == "no"),
            "temperature"]) == {1.0} else "",
        f"Where moments are exact, the Monte Carlo bias interval excludes zero exactly where "
        f"the exact bias is above the resolution in {int(agree.sum())} of {len(exact)} rows "
        "(a disagreement is a bias too small for the draws to resolve, or a 95% interval "
        "missing zero by chance).",
    ]
    report.add_section("Headline", " ".join(line for line in lines if line))
    report.add_table(results[TABLE_COLUMNS], "Bias, variance, MSE, work-normalised variance "
                     "and cosine per K, estimator and temperature", label="tab:results")
    report.add_figure(_curves(results, "relative_bias", "relative bias ‖E ĝ − ∇‖ / ‖∇‖",
                              FIGURE_FLOOR),
                      f"Relative bias against τ per K (squares: exact; dots with bars: Monte "
                      f"Carlo with its 95% interval; values below {FIGURE_FLOOR:g}, exact zeros "
                      "up to rounding or a Monte Carlo estimate of zero, drawn at it); dashed: "
                      "estimators without a temperature", name="relative_bias")
    report.add_figure(_curves(results, "work_variance", "tr Σ × evaluations per draw", 1e-30),
                      "Work-normalised variance against τ per K (squares: exact; dots with bars: "
                      "Monte Carlo with its 95% interval); dashed: estimators without a "
                      "temperature (IndeCateR and local expectation have zero variance on this "
                      "separable loss: drawn at 1e-30)", name="work_variance")
    report.add_figure(_curves(results, "mse", "MSE ‖E ĝ − ∇‖² + tr Σ", 1e-30),
                      "MSE of one draw against τ per K (values below 1e-30 drawn at it)",
                      name="mse")
    add_vae_section(report, config, vae, graphs[graphs["part"] == "vae"].iloc[0])
    report.add_text(f"""
Files: `results.csv` (cat-toy) and `vae.csv` (the VAE; every column, Monte Carlo checks
included), `graphs.csv`.

```
{manifest["command"]}
```""")
    return report


VAE_COLUMNS = ["label", "moments", "biased", "relative_bias", "relative_bias_low",
               "relative_bias_high", "relative_std", "relative_std_low", "relative_std_high",
               "cosine", "evaluations"]


def add_vae_section(report: Report, config: CategoricalBiasConfig, vae: pd.DataFrame,
                    graph: pd.Series) -> None:
    """The gradient analysis of the ReinMax paper on the small categorical VAE: a section with
    its setup, headline, table and figures."""
    report.add_section("Gradient analysis on a small categorical VAE", f"""
**Question.** On `{config.vae}` ({graph["configurations"]:,} configurations of its latents per
example, so the gradient is exact), what are the relative bias `‖E ĝ − ∇‖ / ‖∇‖`, the relative
standard deviation `√tr Σ / ‖∇‖` and the cosine `cos(E ĝ, ∇)` of every categorical estimator,
across the temperatures of the grid? This is the gradient-analysis protocol of the ReinMax paper
(Liu et al. 2023: the three measures against the exact gradient of a small VAE, across
temperatures), on the gradient of the encoder's gate logits (`B × L × K` coordinates; the
gradient of an encoder parameter is this one mapped by the encoder's Jacobian, the same map for
every estimator). Exact moments where the estimator's noise is discrete and its gate samples
can be enumerated (`rloo` draws two samples per draw, `K^(2L)` configurations, and falls back
to Monte Carlo past the limit); otherwise {config.vae_draws:,} Monte Carlo draws with 95%
intervals from {config.groups} batch-means groups. `cos(E ĝ, ∇)` is the cosine of the mean
draw, not the mean cosine of single draws (that one falls with the variance too). ‖∇‖ =
{graph["gradient_norm"]:.4g}, E[L] = {graph["expected_loss"]:.4g}; {graph["seconds"]:.0f} s.""")
    report.add_text(" ".join(_vae_headline(vae)))
    report.add_table(vae[VAE_COLUMNS], "Relative bias, relative std and cosine on the VAE per "
                     "estimator and temperature", label="tab:vae")
    report.add_figure(_curves(vae, "relative_bias", "relative bias ‖E ĝ − ∇‖ / ‖∇‖",
                              FIGURE_FLOOR),
                      f"VAE: relative bias against τ (squares: exact; dots with bars: Monte "
                      f"Carlo with its 95% interval; values below {FIGURE_FLOOR:g} drawn at it); "
                      "dashed: estimators without a temperature", name="vae_relative_bias")
    report.add_figure(_curves(vae, "relative_std", "relative std √tr Σ / ‖∇‖", 1e-30),
                      "VAE: relative standard deviation of one draw against τ (squares: exact; "
                      "dots with bars: Monte Carlo with its 95% interval); dashed: estimators "
                      "without a temperature", name="vae_relative_std")


def _vae_headline(vae: pd.DataFrame) -> list[str]:
    """The headline of the VAE section, read off its table."""
    claims = vae[vae["claims_unbiased"]]
    wrong = claims[claims["biased"].eq("yes")]
    biased = vae[vae["biased"].eq("yes")]
    best = biased.loc[biased["relative_bias"].idxmin()]
    unresolved = vae[~vae["claims_unbiased"] & vae["biased"].eq("not detected")]
    per_tau = biased[biased["temperature"].notna()].pivot_table(
        index="temperature", columns="estimator", values="relative_bias")
    lines = [
        "**Headline.** The estimators that claim to be unbiased ("
        + ", ".join(f"`{n}`" for n in dict.fromkeys(claims["estimator"])) + ") "
        + ("show no bias (exact below the resolution, or not detected by Monte Carlo)."
           if wrong.empty else "are biased: " + ", ".join(f"`{r}`" for r in wrong["label"])
           + "."),
        f"The least biased of the estimators shown to be biased is `{best['label']}` "
        f"(relative bias {best['relative_bias']:.3g}, relative std {best['relative_std']:.3g}, "
        f"cosine {best['cosine']:.4f}).",
    ]
    if len(unresolved):
        lines.append("Biased in principle but not resolved by the Monte Carlo draws: "
                     + ", ".join(f"`{r}`" for r in unresolved["label"])
                     + f" (relative bias below {unresolved['relative_bias_high'].max():.2g}, "
                     "the largest upper end of their 95% intervals).")
    if {"reinmax", "st-gumbel"} <= set(per_tau):
        below = per_tau["reinmax"] < per_tau["st-gumbel"]
        lines.append(f"`reinmax` (exact) is less biased than `st-gumbel` (Monte Carlo point "
                     f"estimates) at {int(below.sum())} of "
                     f"{len(below)} temperatures"
                     + (f" (not at τ = {', '.join(f'{t:g}' for t in below.index[~below])})."
                        if not below.all() else "."))
    spread = vae.set_index("label")["relative_std"]
    lines.append(f"Relative std of one draw: from {spread.min():.3g} (`{spread.idxmin()}`) to "
                 f"{spread.max():.3g} (`{spread.idxmax()}`).")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="K in (2, 3), two temperatures, 400 draws, a 4^2 synthetic VAE "
                             "(smoke test, seconds)")
    parser.add_argument("--out", default="reports/categorical_bias", help="output folder")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing; rewrite the report of --out from its tables")
    args = parser.parse_args(argv)
    if args.report_only:
        write_report_only(Path(args.out))
        print(f"report rewritten in {args.out}")
        return 0
    config = QUICK if args.quick else FULL
    started = time.perf_counter()
    measured = []
    for k in config.classes:
        measured.append(measure(config, k))
        print(f"{config.spec(k)}: {measured[-1][1]['seconds']:.0f} s", flush=True)
    results = pd.concat([frame for frame, _ in measured], ignore_index=True)
    vae, vae_graph = measure_vae(config)
    print(f"{config.vae}: {vae_graph['seconds']:.0f} s", flush=True)
    graphs = pd.DataFrame([row for _, row in measured] + [vae_graph])
    command = "python analyses/categorical_bias/run.py" + (" --quick" if args.quick else "")
    manifest = run_manifest(seed=config.seed, device="cpu",
                            wall_time_s=time.perf_counter() - started, study="categorical_bias",
                            command=command, config=asdict(config),
                            threads=torch.get_num_threads())
    write_report_folder(args.out, {"results": results, "vae": vae, "graphs": graphs},
                        build_report(config, results, vae, graphs, manifest))
    print(f"report written to {args.out}/report.md in {manifest['wall_time_s']:.1f} s")
    return 0


def write_report_only(out: Path) -> None:
    """Rewrites the report of the study's folder `out` from its tables and manifest (the
    tables and manifest stay as they are; the folder is replaced whole, as by a run)."""
    manifest = json.loads((out / "manifest.json").read_text())
    config = config_from_dict(CategoricalBiasConfig, manifest["config"])
    tables = {name: pd.read_csv(out / f"{name}.csv") for name in ("results", "vae", "graphs")}
    write_report_folder(out, tables, build_report(config, *tables.values(), manifest))


if __name__ == "__main__":
    sys.exit(main())
