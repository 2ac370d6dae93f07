"""The one-page report card of a validation run: verdicts first, then evidence and figures."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from estimator_lab.plotting import group_variance_plot
from estimator_lab.reporting import Report
from estimator_lab.validation.small_graphs import REFERENCE_SETS

BIAS_COLUMNS = ["graph", "draws", "coordinates", "flagged", "holm_pvalue", "worst_coordinate",
                "worst_z", "relative_bias", "noise_floor", "exact_relative_bias", "exact_method"]


def report_card(result, budget, manifest: dict, command: str) -> Report:
    """The report card of a `ValidationResult` (see `battery.write_report_card`)."""
    label = result.target.label
    failed = [v.check for v in result.verdicts if v.failed]
    overall = (f"**FAIL** ({', '.join(failed)})" if failed
               else "**PASS**: no check found a broken claim")
    categorical = result.target.gates == "categorical"
    report = Report(f"Report card: `{label}`", manifest)
    report.add_text(f"""
{overall}. Budget `{budget.name}`, seed {manifest["seed"]}, {manifest["device"]}, wall time
{result.wall_time_s:.0f} s. Class `{manifest["target_class"]}`.""")
    if categorical:
        report.add_text(f"""
Distribution checked: **categorical** gates only. The full-network, training and binary-VAE
checks need Bernoulli gates and were not run (the verdicts say why). Graphs:
{', '.join(f'`{spec}`' for spec in budget.graphs)}.""")
    verdicts = pd.DataFrame([{"check": v.check, "verdict": v.status.upper(), "evidence": v.line}
                             for v in result.verdicts])
    report.add_table(verdicts, "Verdict per check", label="tab:verdicts")

    if categorical:
        report.add_section("Contract", "`check_categorical_estimator` on the CPU, "
                           f"{budget.contract_draws:,} draws on its cubic probe graph in its "
                           "unbiasedness check (and the exact mean where the noise allows).")
    else:
        report.add_section("Contract", "`check_estimator`, "
                           f"{budget.contract_draws:,} draws per graph in its unbiasedness "
                           "check.")
    report.add_table(result.contract, "Contract checks", label="tab:contract")

    checked = [g for g in result.graphs if g.checked]
    report.add_section("Bias on the small-graph suite", f"""
{budget.draws:,} draws per graph against the exact gradient of the estimator's own objective;
z-tests per coordinate, Holm within a graph at level {budget.alpha:g}/{len(budget.graphs)}
(Bonferroni across graphs); `exact_relative_bias` is `‖E[g] − ∇‖/‖∇‖` without Monte Carlo error
where the noise allows. Not checked: {', '.join(f'{g.spec} ({g.objective})' for g in
result.graphs if not g.checked) or 'none'}.""")
    if checked:
        bias = pd.DataFrame([{"graph": g.spec} | g.bias for g in checked])[BIAS_COLUMNS]
        report.add_table(bias, "Bias of the target per graph", label="tab:bias")

    frames = [g.variance.assign(graph=g.spec) for g in result.graphs if g.variance is not None]
    if frames:
        variance = pd.concat(frames, ignore_index=True)
        references = REFERENCE_SETS[result.target.gates]
        report.add_section("Variance against the reference set", f"""
References: {'; '.join(f'`{n}` {d}' for n, d in references.items())}. Gate-logit total variance
of one draw; `work_variance` multiplies it by the loss evaluations per draw; `ratio` is the
target's work-normalised variance over the row's, paired by draw index (common random numbers),
with a 95% delta-method interval over groups of {budget.group_size} draws.""")
        report.add_table(variance[["graph", "estimator", "unbiased", "evaluations",
                                   "total_variance", "exact_total_variance", "work_variance",
                                   "ratio", "ratio_low", "ratio_high"]],
                         "Gate-logit variance per graph and estimator", label="tab:variance")
        ax = group_variance_plot(variance.rename(columns={"graph": "parameter"}),
                                 value="work_variance")
        ax.set_xlabel("graph")
        report.add_figure(ax.figure, "Work-normalised gate-logit variance (log scale)",
                          name="variance")

    if result.network is not None:
        report.add_section("Full paper network", f"""
{budget.network_draws:,} draws per estimator at the seeded initialisation, paired with
`local-expectation` draws from the same noise; `relative_bias` from the paired differences.""")
        report.add_table(result.network, "Per parameter group on the paper network",
                         label="tab:network")

    if result.curves is not None:
        report.add_section("Training", f"{budget.training_steps} SGD steps (rate 0.1, minibatch "
                           "32) of the paper network from the same initialisation and batches.")
        report.add_figure(_curves(result.curves), "Training loss (running mean over 10% of "
                          "the steps)", name="training")

    if result.binary_vae is not None:
        report.add_section("Binary VAE", f"""
The linear Bernoulli VAE (200 latent bits, dynamically binarised MNIST, Adam 1e-3, batch 50)
trained with each estimator for {budget.binary_vae_evaluations:,} loss evaluations per example
(an estimator costing `c` evaluations a step takes 1/c of the steps).""")
        report.add_table(result.binary_vae, "Binary VAE at equal loss evaluations",
                         label="tab:binary-vae")

    report.add_section("Reproduce", f"""
```
{command}
```
The verdicts are also in `verdicts.json`; exit status 1 means a check failed.""")
    return report


def _curves(curves: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(7, 3.5))
    ax = figure.subplots()
    steps = int(curves["step"].max()) + 1
    for name, rows in curves.groupby("estimator", sort=False):
        ax.plot(rows["step"], rows["loss"].rolling(max(1, steps // 10)).mean(), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    figure.tight_layout()
    return figure
