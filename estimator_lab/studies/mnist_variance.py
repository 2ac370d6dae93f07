"""The `mnist_variance` study: every estimator on the full paper network through training.

`estimator-lab run mnist_variance [--quick]` measures, at parameter snapshots of one seeded
training run (`studies.checkpoints`), the variance, the bias against the local-expectation
reference, the SNR and the cosine of every registered estimator per parameter group (gate
logits, `gater_hidden`, `gater_out`, `expert`, `output`) on one seeded minibatch of 32
validation images; then, at the last snapshot, the variance against gate sparsity (the gater's
output bias shifted so the mean gate probability hits each target) and against the temperature
of the relaxed estimators.

Draws come from the fast path (`fast_moments`) in batch-means groups of consecutive draw
indices (`measure_grouped`): the estimators share their noise (common random numbers), so
their group variances are paired for the ratios; the reference is drawn from a separate noise
stream, so each group's squared bias `||mean_g(e) - mean_g(r)||^2 - (W_e + W_r) / m` is unbiased
for `||E e - E r||^2` and the groups are i.i.d.

Writes `summary.csv` (the `SUMMARY_COLUMNS` per epoch, estimator and parameter group),
`ratios.csv` (paired total-variance ratios to `reinforce`), `sparsity.csv`, `temperature.csv`,
`training.csv`, `manifest.json` and the report.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.paper import PAPER_REFERENCE, paper_problem
from estimator_lab.montecarlo.accumulators import Moments
from estimator_lab.montecarlo.fastpath import FastAccumulator
from estimator_lab.montecarlo.groups import GroupSummaries
from estimator_lab.montecarlo.runner import fast_moments
from estimator_lab.studies.checkpoints import CheckpointConfig

REFERENCE = PAPER_REFERENCE
REFERENCE_SEED_OFFSET = 7_919
"""The reference's noise uses `seed + REFERENCE_SEED_OFFSET`: a stream apart from the
estimators' (which share theirs), so reference and estimator groups are independent."""

ORACLE_SEED_OFFSET = 104_729
"""The oracle baseline's Monte Carlo pilot uses `seed + ORACLE_SEED_OFFSET`, a stream apart
from the measured draws, so its values do not depend on them."""

PARAMETER_GROUPS = {
    "gate_logits": ("gate_logits",),
    "gater_hidden": ("gater_hidden.weight", "gater_hidden.bias"),
    "gater_out": ("gater_out.weight", "gater_out.bias"),
    "expert": ("expert.weight", "expert.bias"),
    "output": ("output.weight", "output.bias"),
}
"""Parameter group -> the tracked tensors it concatenates (weight first)."""

TEMPERATURE_ESTIMATORS = ("gumbel", "st-gumbel", "rebar", "reinmax")


@dataclass(frozen=True)
class GroupedRun:
    """Moments of one estimator's draws per parameter group, with batch-means groups.

    Reads like a `MomentAccumulator` for `summary_frame` and `variance_ratio_frame`.

    Attributes:
        moments: parameter group -> `Moments` of the concatenated tensors.
        groups: the batch means: `total_variance` (and `squared_bias` for differences) per
            parameter group and group index.
        elapsed_s: seconds spent drawing.
        group_means: per group index, parameter group -> the mean draw of that group (kept
            for a reference only, `None` otherwise).
    """

    moments: dict[str, Moments]
    groups: GroupSummaries
    elapsed_s: float
    group_means: list[dict[str, torch.Tensor]] | None = None

    def names(self) -> list[str]:
        """The parameter groups, in order."""
        return list(self.moments)

    def __getitem__(self, name: str) -> Moments:
        return self.moments[name]


def _tensor_reads(acc: FastAccumulator) -> dict[str, tuple[float, torch.Tensor]]:
    """`(tr(Sigma), mean)` of every tracked tensor of a group's accumulator, cheaply.

    The weights of shared-input layers are read from their Gram sums without forming their
    per-coordinate variances: `tr(Sigma_W) = (sum_o <gram_o, H H^T> - ||total^T H||^2 / n)
    / (n - 1)` and `mean = (S + total / n)^T H` (see `fastpath.weight_moments`).
    """
    reads = {}
    for name in acc.names():
        layer = name.removesuffix(".weight")
        if name.endswith(".weight") and layer in acc.grams:
            sums, h = acc.grams[layer], acc.inputs[layer]
            n = sums.count
            quad = float(torch.einsum("obc,bc->", sums.gram, h @ h.T))
            offset = float((sums.total.T @ h).square().sum())
            mean = ((sums.shift + sums.total / n).T @ h).reshape(-1)
            reads[name] = ((quad - offset / n) / (n - 1), mean)
        else:
            moments = acc.dense[name]
            reads[name] = (float(moments.variance.sum()), moments.mean)
    return reads


def _by_group(reads: Mapping[str, Any], combine) -> dict[str, Any]:
    return {group: combine([reads[t] for t in tensors])
            for group, tensors in PARAMETER_GROUPS.items()}


def _concatenated(moments: Mapping[str, Moments]) -> dict[str, Moments]:
    def cat(parts: list[Moments]) -> Moments:
        return Moments(parts[0].count, torch.cat([m.mean.reshape(-1) for m in parts]),
                       torch.cat([m.m2.reshape(-1) for m in parts]))
    return _by_group(moments, cat)


def measure_grouped(
    graph: StochasticGraph,
    estimators: Mapping[str, Any],
    batch: tuple[torch.Tensor, ...],
    *,
    groups: int,
    group_size: int,
    seed: int,
    states: Mapping[str, Any] | None = None,
    reference: GroupedRun | None = None,
    keep_group_means: bool = False,
    chunk_size: int = 32,
    progress: bool = False,
) -> tuple[dict[str, GroupedRun], dict[str, GroupedRun]]:
    """Fast-path moments per parameter group of the paper network, in batch-means groups.

    Group `g` holds draws `g * m .. (g + 1) * m - 1` (`m = group_size`) of the noise stream
    `seed`, shared by every estimator (common random numbers). Against a `reference` drawn from
    an independent stream with the same `groups` and `group_size` (e.g. `local-expectation`
    with `keep_group_means=True`), each estimator also gets a difference run whose moments are
    `mean_e - mean_r` with `M2_e + M2_r` (the variance of the difference of independent means
    times `n`) and whose groups hold `||mean_g(e) - mean_g(r)||^2 - (W_e,g + W_r,g) / m`,
    unbiased for `||E e - E r||^2` (the `differences` of `summary_frame`).

    Args:
        graph: a graph with the paper network's parameter names (`PARAMETER_GROUPS`).
        estimators: estimators by name (fast-path compatible).
        batch: the fixed minibatch.
        groups: number of groups `G`.
        group_size: draws per group `m`.
        seed: the noise stream.
        states: frozen estimator states by name.
        reference: the reference's run (with `group_means`) for the difference runs.
        keep_group_means: keep every group's mean draw (for use as a reference).
        chunk_size: draws differentiated at once.
        progress: show a progress bar over estimators and groups.

    Returns:
        `(runs, differences)`: a `GroupedRun` per estimator, and per estimator its difference
        run against the reference (empty without one).
    """
    from tqdm.auto import tqdm

    if groups < 2 or group_size < 2:
        raise ValueError(f"need at least 2 groups of at least 2 draws, got {groups} x "
                         f"{group_size}")
    if reference is not None and (reference.group_means is None
                                  or len(reference.group_means) != groups):
        raise ValueError(f"the reference must keep the means of its {groups} groups")
    states = dict(states or {})
    runs, differences = {}, {}
    bar = tqdm(total=groups * len(estimators), disable=not progress, unit="group",
               desc="groups")
    with bar:
        for name, estimator in estimators.items():
            total: FastAccumulator | None = None
            summaries = GroupSummaries(group_size)
            gaps = GroupSummaries(group_size)
            means = [] if keep_group_means else None
            for g in range(groups):
                acc = fast_moments(graph, {name: estimator}, batch, num_draws=group_size,
                                   seed=seed, first_draw=g * group_size, chunk_size=chunk_size,
                                   states={name: states[name]} if name in states else None)[name]
                reads = _tensor_reads(acc)
                variances = _by_group(reads, lambda parts: sum(v for v, _ in parts))
                group_mean = _by_group(reads, lambda parts: torch.cat([m for _, m in parts]))
                for group, value in variances.items():
                    summaries.total_variance.setdefault(group, {})[g] = value
                if means is not None:
                    means.append(group_mean)
                if reference is not None:
                    for group, value in variances.items():
                        theirs = reference.groups.total_variance[group][g]
                        gap = group_mean[group] - reference.group_means[g][group]
                        gaps.squared_bias.setdefault(group, {})[g] = (
                            float(gap.square().sum()) - (value + theirs) / group_size)
                        gaps.total_variance.setdefault(group, {})[g] = value + theirs
                if total is None:
                    total = acc
                else:
                    total.merge(acc)
                bar.update(1)
            moments = _concatenated(total.compute())
            runs[name] = GroupedRun(moments, summaries, total.elapsed_s, means)
            if reference is not None:
                differences[name] = GroupedRun(
                    {group: Moments(m.count, m.mean - reference[group].mean,
                                    m.m2 + reference[group].m2) for group, m in moments.items()},
                    gaps, 0.0)
    return runs, differences


@dataclass(frozen=True)
class MnistVarianceConfig:
    """Settings of the `mnist_variance` study.

    Attributes:
        checkpoints: the shared training run and its snapshot epochs.
        estimators: registry names (default: every registered estimator but the reference).
        groups: batch-means groups per estimator and snapshot.
        group_size: draws per group.
        seed: seeds the measurement minibatch, the noise and the warm-ups.
        batch_size: validation images in the measurement minibatch.
        warmup_steps: `update` calls on the measurement batch before an adaptive estimator's
            state is frozen (`prepare_estimator`).
        oracle_pilot_draws: Monte Carlo draws of the oracle baseline's pilot.
        sparsity_targets: mean gate probabilities of the sparsity sweep.
        sparsity_estimators: estimators of the sparsity sweep.
        temperatures: temperatures of the temperature sweep.
        temperature_estimators: estimators of the temperature sweep (relaxed, with a
            `temperature` hyper-parameter).
    """

    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    estimators: tuple[str, ...] | None = None
    groups: int = 20
    group_size: int = 20
    seed: int = 0
    batch_size: int = 32
    warmup_steps: int = 200
    oracle_pilot_draws: int = 5000
    sparsity_targets: tuple[float, ...] = (0.5, 0.1, 0.02)
    sparsity_estimators: tuple[str, ...] = ("reinforce", "reinforce-optimal", "rloo", "disarm",
                                            "muprop", "st", "gumbel")
    temperatures: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    temperature_estimators: tuple[str, ...] = TEMPERATURE_ESTIMATORS

    def __post_init__(self) -> None:
        if self.groups < 2 or self.group_size < 2:
            raise ValueError(f"need at least 2 groups of at least 2 draws, got {self.groups} x "
                             f"{self.group_size}")
        if not all(0 < s < 1 for s in self.sparsity_targets):
            raise ValueError(f"sparsity targets must be in (0, 1), got {self.sparsity_targets}")
        if not all(t > 0 for t in self.temperatures):
            raise ValueError(f"temperatures must be > 0, got {self.temperatures}")


QUICK = MnistVarianceConfig(
    checkpoints=CheckpointConfig(epochs=(0, 1), train_size=3200),
    estimators=("reinforce", "reinforce-optimal", "rloo", "disarm", "st", "gumbel", "sts"),
    groups=5, group_size=10, warmup_steps=50, oracle_pilot_draws=500,
    sparsity_estimators=("reinforce", "st"), temperatures=(0.3, 1.0),
    temperature_estimators=("gumbel", "st-gumbel"),
)
"""The `--quick` configuration: minutes on a 2-core CPU."""

FULL = MnistVarianceConfig()
"""The committed run (`reports/mnist_variance`)."""


def measurement_problem(parameters_file: str | Path | None, *, seed: int, batch_size: int,
                        data_path: str | None = None):
    """The paper network with the parameters of `parameters_file` (default: the seeded
    initialisation) and the seeded minibatch of validation images (`paper_problem`), on the
    CPU."""
    return paper_problem(
        seed=seed, batch_size=batch_size, data_path=data_path,
        parameters_file=None if parameters_file is None else str(parameters_file))


def prepared_estimators(names, graph, batch, *, seed: int, warmup_steps: int,
                        oracle_pilot_draws: int, **hyper):
    """Estimators by name with their warmed-up states; `reinforce-oracle` from a pilot on its
    own noise stream (`ORACLE_SEED_OFFSET`), pooled over the batch."""
    from estimator_lab.estimators.baselines import oracle_baseline_values
    from estimator_lab.estimators.prepare import prepare_estimator

    estimators, states = {}, {}
    for name in names:
        extra = dict(hyper)
        if name == "reinforce-oracle":
            extra = {"values": oracle_baseline_values(
                graph, batch, method="pilot", num_pilot_draws=oracle_pilot_draws,
                seed=seed + ORACLE_SEED_OFFSET, chunk_size=250), "pooled": True}
        estimators[name], states[name] = prepare_estimator(
            name, graph, batch, warmup_steps=warmup_steps, seed=seed, **extra)
    return estimators, states


def measure_snapshot(config: MnistVarianceConfig, graph, batch, names, *, reference=None,
                     progress: bool = False, **hyper) -> tuple[pd.DataFrame, dict, GroupedRun]:
    """Summary rows of `names` on one graph and batch, against the local-expectation reference.

    Returns:
        the `summary_frame` rows (reference included unless one is given), the runs, and the
        reference's run (measured here unless given).
    """
    from estimator_lab.stats import summary_frame

    options = dict(groups=config.groups, group_size=config.group_size, progress=progress)
    own_reference = reference is None
    if own_reference:
        ref_estimators, ref_states = prepared_estimators(
            [REFERENCE], graph, batch, seed=config.seed, warmup_steps=0, oracle_pilot_draws=0)
        reference = measure_grouped(graph, ref_estimators, batch, states=ref_states,
                                    seed=config.seed + REFERENCE_SEED_OFFSET,
                                    keep_group_means=True, **options)[0][REFERENCE]
    estimators, states = prepared_estimators(
        names, graph, batch, seed=config.seed, warmup_steps=config.warmup_steps,
        oracle_pilot_draws=config.oracle_pilot_draws, **hyper)
    runs, differences = measure_grouped(graph, estimators, batch, states=states,
                                        seed=config.seed, reference=reference, **options)
    everything = runs | ({REFERENCE: reference} if own_reference else {})
    evaluations = {n: e.evaluations(graph) for n, e in estimators.items()}
    if own_reference:
        evaluations[REFERENCE] = ref_estimators[REFERENCE].evaluations(graph)
    references = {group: moments.mean for group, moments in reference.moments.items()}
    summary = summary_frame(everything, references=references, evaluations=evaluations,
                            differences=differences)
    summary.insert(2, "target", [_target(n, estimators) for n in summary["estimator"]])
    return summary, everything, reference


def _target(name: str, estimators: Mapping[str, Any]) -> str:
    """The gate distribution whose expected loss the estimator targets."""
    return estimators[name].distribution if name in estimators else "bernoulli"


def shift_to_activity(graph, batch, target: float) -> float:
    """The shift `delta` of the gater's output bias making the mean `sigmoid(a + delta)` over
    the batch's gates equal `target` (bisection; the mean is increasing in `delta`)."""
    with torch.no_grad():
        logits = graph.logits(batch).double()
    low, high = -50.0, 50.0
    for _ in range(80):
        middle = (low + high) / 2
        if torch.sigmoid(logits + middle).mean() < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def run_mnist_variance(config: MnistVarianceConfig, out: str | Path, *,
                       progress: bool = False) -> Path:
    """Runs the study and writes its report folder (replaced whole on success).

    Returns:
        the path of `report.md`.
    """
    from estimator_lab.estimators import available
    from estimator_lab.reporting import run_manifest
    from estimator_lab.stats.summary import variance_ratio_frame
    from estimator_lab.studies.checkpoints import training_checkpoints
    from estimator_lab.studies.protocol import STUDIES

    started = time.perf_counter()
    names = list(config.estimators or [n for n in available() if n != REFERENCE])
    checkpoints = training_checkpoints(config.checkpoints, progress=progress)
    frames, ratios, seconds = [], [], {}
    for epoch, file in checkpoints.files.items():
        began = time.perf_counter()
        graph, batch = _problem(config, file)
        summary, runs, reference = measure_snapshot(config, graph, batch, names,
                                                    progress=progress)
        frames.append(summary.assign(epoch=epoch))
        ratios.append(variance_ratio_frame(runs, "reinforce" if "reinforce" in runs else names[0])
                      .assign(epoch=epoch))
        seconds[f"epoch {epoch}"] = round(time.perf_counter() - began, 1)
    last = max(checkpoints.files)
    graph, batch = _problem(config, checkpoints.files[last])
    began = time.perf_counter()
    sparsity = _sparsity_sweep(config, graph, batch, progress)
    seconds["sparsity sweep"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    temperature = pd.concat([
        measure_snapshot(config, graph, batch, list(config.temperature_estimators),
                         reference=reference, progress=progress, temperature=tau)[0]
        .assign(temperature=tau) for tau in config.temperatures], ignore_index=True)
    seconds["temperature sweep"] = round(time.perf_counter() - began, 1)
    summary = pd.concat(frames, ignore_index=True)
    summary.insert(0, "epoch", summary.pop("epoch"))
    ratios = pd.concat(ratios, ignore_index=True)
    training = pd.DataFrame(checkpoints.log)
    manifest = run_manifest(
        seed=config.seed, device="cpu", wall_time_s=time.perf_counter() - started,
        study="mnist_variance", config=asdict(config), estimators=names,
        checkpoint_folder=str(checkpoints.folder), trained_now=checkpoints.trained,
        seconds=seconds, reference=f"mean of {REFERENCE} draws (independent noise stream)",
    )
    tables = {"summary": summary, "ratios": ratios, "sparsity": sparsity,
              "temperature": temperature, "training": training}
    return STUDIES["mnist_variance"].write(out, config, tables, manifest)


def _problem(config: MnistVarianceConfig, file: Path):
    return measurement_problem(file, seed=config.seed, batch_size=config.batch_size,
                               data_path=config.checkpoints.data_path)


def _sparsity_sweep(config: MnistVarianceConfig, graph, batch, progress: bool) -> pd.DataFrame:
    frames = []
    for target in config.sparsity_targets:
        shifted = _with_bias_shift(graph, shift_to_activity(graph, batch, target))
        with torch.no_grad():
            activity = float(torch.sigmoid(shifted.logits(batch)).mean())
        summary = measure_snapshot(config, shifted, batch, list(config.sparsity_estimators),
                                   progress=progress)[0]
        frames.append(summary.assign(activity_target=target, activity=activity))
    return pd.concat(frames, ignore_index=True)


def _with_bias_shift(graph, delta: float):
    import copy

    shifted = copy.deepcopy(graph)
    with torch.no_grad():
        shifted.gater_out.bias += delta
    return shifted


def _notes(config: MnistVarianceConfig, summary: pd.DataFrame) -> pd.DataFrame:
    """How each estimator was handled, one row per estimator."""
    adaptive = {"reinforce-ema", "reinforce-optimal", "relax"}
    rows = []
    for name, part in summary.groupby("estimator", sort=False):
        target = part["target"].iloc[0]
        if name == REFERENCE:
            note = "the reference (own noise stream); its bias is zero by construction"
        elif target != "bernoulli":
            note = (f"estimates the gradient of its own {target} gates: its bias against the "
                    "Bernoulli reference is the change of model, not an estimator bias")
        elif name == "reinforce-oracle":
            note = (f"Eq. 10 pooled over the batch from a pilot of {config.oracle_pilot_draws:,} "
                    "draws on its own noise stream")
        elif name in adaptive:
            note = f"state warmed up for {config.warmup_steps} updates on the batch, then frozen"
        else:
            note = ""
        rows.append({"estimator": name, "target": target,
                     "evaluations_per_draw": part["evaluations_per_draw"].iloc[0], "note": note})
    return pd.DataFrame(rows)


def ranking_table(summary: pd.DataFrame, parameter: str = "gate_logits") -> pd.DataFrame:
    """Estimators ranked by the MSE of one draw against the reference at each epoch (1 =
    smallest), Bernoulli-gate estimators only (the reference excluded), one column per epoch."""
    rows = summary[(summary["parameter"] == parameter) & (summary["target"] == "bernoulli")
                   & (summary["estimator"] != REFERENCE)]
    ranks = rows.assign(rank=rows.groupby("epoch")["mse"].rank(method="min").astype(int))
    table = ranks.pivot(index="estimator", columns="epoch", values="rank")
    table.columns = [f"epoch {c}" for c in table.columns]
    return table.sort_values(table.columns[-1]).reset_index()


def _legend_outside(ax):
    """Moves a sweep plot's legend beside the axes and drops minor log-scale tick labels (18
    estimators do not fit inside the axes)."""
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.figure.set_size_inches(8, 4.5)
    ax.legend(title=ax.get_legend().get_title().get_text(), loc="upper left",
              bbox_to_anchor=(1.02, 1), fontsize="small")
    ax.figure.tight_layout()
    return ax.figure


def mnist_variance_report(config: MnistVarianceConfig, summary: pd.DataFrame,
                          ratios: pd.DataFrame, sparsity: pd.DataFrame,
                          temperature: pd.DataFrame, training: pd.DataFrame, manifest: dict):
    """The report, from the saved tables and the manifest (figures redrawn)."""
    from estimator_lab.plotting import group_variance_plot, sweep_plot
    from estimator_lab.reporting import Report

    last = int(summary["epoch"].max())
    final = summary[summary["epoch"] == last]
    gates = summary[summary["parameter"] == "gate_logits"]
    checks = config.checkpoints
    report = Report("Every estimator on the paper network through training", manifest)
    report.add_text(f"""
**Question.** How large are the variance, the bias against the local-expectation reference, the
SNR and the cosine of every registered estimator on the full MNIST network, per parameter group,
as training proceeds; and how does the variance change with gate sparsity and, for the relaxed
estimators, with the temperature?

**Setup.** The paper network trained by `{checks.estimator}` at learning rate
{checks.learning_rate} (plain SGD, minibatch {checks.batch_size}, no sparsity penalty, seed
{checks.seed}); snapshots at epochs {", ".join(map(str, checks.epochs))}. One seeded minibatch
of {config.batch_size} validation images; per estimator {config.groups} batch-means groups of
{config.group_size} draws ({config.groups * config.group_size:,} draws, fast path, common random
numbers); the reference is the mean of as many `{REFERENCE}` draws on an independent noise
stream, and the squared bias of each group is `||mean_g(e) - mean_g(r)||^2 - (W_e + W_r) / m`,
unbiased for `||E e - E r||^2` (t interval and one-sided p-value over groups; the p-values
are per row, not corrected for the many rows). Wall time
{manifest["wall_time_s"]:.0f} s on {manifest["device"]}.""")
    report.add_table(_notes(config, final), "Estimators and how each is handled",
                     label="tab:mv-notes")
    report.add_table(training, "Training snapshots: mean training criterion over the epoch, "
                     "validation error (%) at sampled gates, mean gate probability",
                     label="tab:mv-training")
    report.add_section("Ranking", """
Rank of each Bernoulli-gate estimator by the mean squared error of one draw of the gate logits
against the reference (`mse` = squared bias + total variance), at each snapshot.""")
    report.add_table(ranking_table(summary), "Rank by gate-logit MSE (1 = best) at each epoch",
                     label="tab:mv-rank")
    columns = ["estimator", "parameter", "total_variance", "total_variance_low",
               "total_variance_high", "snr", "cosine", "relative_bias", "squared_bias_pvalue",
               "mse", "work_variance"]
    report.add_section(f"Every parameter group at epoch {last}")
    report.add_table(final[columns], f"Variance, SNR, cosine and bias per parameter group at "
                     f"epoch {last}", label="tab:mv-final")
    report.add_figure(group_variance_plot(final, value="total_variance").figure,
                      f"Total variance of one draw per parameter group at epoch {last}",
                      name="groups")
    report.add_section("Through training", """
Total variance of the gate logits (95% band) and relative bias against the reference at
each snapshot; every epoch's rows are in `summary.csv`, paired variance ratios to `reinforce`
in `ratios.csv`.""")
    report.add_figure(_legend_outside(sweep_plot(gates, x="epoch", y="total_variance",
                                                 low="total_variance_low",
                                                 high="total_variance_high", log_y=True)),
                      "Gate-logit total variance through training", name="training")
    bias = gates.assign(relative_bias=[
        f"{r.relative_bias:.3g} (p {r.squared_bias_pvalue:.2g})" if r.estimator != REFERENCE
        else "reference" for r in gates.itertuples()])
    for value, frame, caption in (
            ("total_variance", gates, "total variance of one draw"),
            ("relative_bias", bias, "relative bias `||E e - E r|| / ||E r||` (p-value of "
             "squared bias > 0: a large p-value means no bias is detectable at these draws)"),
            ("cosine", gates, "cosine between the mean draw and the reference")):
        table = frame.pivot(index="estimator", columns="epoch", values=value)
        table.columns = [f"epoch {c}" for c in table.columns]
        report.add_table(table.reset_index(), f"Gate logits through training: {caption}",
                         label=f"tab:mv-{value.replace('_', '-')}")
    report.add_section("Variance against gate sparsity", f"""
At epoch {last}, the gater's output bias is shifted so the mean gate probability over the batch
is each target; each level is measured against its own reference.""")
    sparse = sparsity[sparsity["parameter"] == "gate_logits"]
    report.add_figure(_legend_outside(sweep_plot(sparse, x="activity", y="total_variance",
                                                 low="total_variance_low",
                                                 high="total_variance_high", log_x=True,
                                                 log_y=True)),
                      "Gate-logit total variance against mean gate activity", name="sparsity")
    report.add_table(sparse[["activity_target", "activity", "estimator", "total_variance",
                             "snr", "cosine", "relative_bias", "mse"]],
                     "Gate logits against gate activity", label="tab:mv-sparsity")
    report.add_section("Variance against temperature", f"""
At epoch {last}, the relaxed estimators at each temperature, against the reference of that
snapshot.""")
    tempered = temperature[temperature["parameter"] == "gate_logits"]
    report.add_figure(_legend_outside(sweep_plot(tempered, x="temperature", y="mse",
                                                 log_x=True, log_y=True)),
                      "Gate-logit MSE (squared bias + variance) against temperature",
                      name="temperature")
    report.add_table(tempered[["temperature", "estimator", "total_variance", "snr", "cosine",
                               "relative_bias", "squared_bias_pvalue", "mse"]],
                     "Gate logits against temperature", label="tab:mv-temperature")
    report.add_section("Reproduce", """All rows: `summary.csv` (the summary schema per epoch,
estimator and parameter group), `ratios.csv`, `sparsity.csv`, `temperature.csv`,
`training.csv`.

```
estimator-lab run mnist_variance --out reports/mnist_variance
```""")
    return report
