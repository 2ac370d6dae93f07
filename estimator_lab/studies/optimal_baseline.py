"""The `optimal_baseline` study: how much does the paper's per-unit baseline (Eq. 10) help?

`estimator-lab run optimal_baseline [--quick]` compares REINFORCE centred by the running Eq. 10
baseline `c_i = E[(b_i - p_i)^2 L] / E[(b_i - p_i)^2]` (`OptimalBaseline`, moving averages of
numerator and denominator) with no baseline, a moving average of the loss (`EmaBaseline`), the
oracle (Eq. 10 from exact or pilot expectations, pooled over the batch) and RLOO (2 samples):

- exactly on small graphs (`exact_moments`: enumeration), the running estimates warmed up on
  the graph's batch from several seeds and then frozen;
- by Monte Carlo on the full paper network at snapshots of one training run
  (`studies.checkpoints`), with paired total-variance ratios under common random numbers and
  their 95% intervals, per parameter group.

How close the running estimate gets to the oracle is measured for several averaging rates
(decays), warmed up two ways: on the measured batch (as `prepare_estimator` does), and along a
stream of training minibatches at the snapshot's parameters (as in training, where the
averages mix minibatches). For the gate logits the excess variance of a baseline `c` over the
oracle `c*` is exact: gate `i`'s draws `(L_j - c_i)(b_ji - p_ji) / B` have variance
`Var_0 - 2 c_i N_ji + c_i^2 D_ji`, so over the batch the excess is
`sum_i (c_i - c*_i)^2 sum_j D_ji / B^2` with `D_ji = p_ji (1 - p_ji)`; the study reports it
next to the measured ratio.

Writes `exact.csv`, `ratios.csv`, `gaps.csv`, `summary.csv`, `training.csv`, `manifest.json`
and the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from estimator_lab.studies.checkpoints import CheckpointConfig

MAIN = "reinforce-optimal"
"""The running Eq. 10 baseline at the registry's default decay, warmed up on the batch: the
denominator of every variance-reduction factor."""

PER_EXAMPLE = "reinforce-oracle (per example)"
"""Eq. 10 from the pilot for each example's own gates (`OracleValues.per_example`): a baseline
for this batch only, which no running average shared by the examples can reach."""

HEADLINE = ("reinforce", "reinforce-ema", "reinforce-oracle", PER_EXAMPLE, "rloo")
"""The estimators of the headline table, each against `MAIN`."""

LARGE_EXCESS = 1e-4
"""A predicted excess (relative to the oracle's variance) from which a miss counts as large."""

STREAM_SEED_OFFSET = 15_485_863
"""The minibatch stream of the training-like warm-up uses `seed + STREAM_SEED_OFFSET`."""


@dataclass(frozen=True)
class OptimalBaselineConfig:
    """Settings of the `optimal_baseline` study.

    Attributes:
        graphs: small graph specs for the exact part.
        decays: averaging rates of the running Eq. 10 estimate.
        main_decay: the decay of `reinforce-optimal` (the registry's default).
        ema_decay: the decay of the moving-average baseline.
        warmup_steps: `update` calls before a running estimate is frozen.
        warmup_seeds: warm-up noise streams per running estimate on the small graphs.
        checkpoints: the shared training run and its snapshot epochs.
        groups: batch-means groups on the full network.
        group_size: draws per group.
        seed: seeds the measurement minibatch, the noise and the warm-ups.
        batch_size: validation images in the measurement minibatch.
        oracle_pilot_draws: Monte Carlo draws of the oracle's pilot on the full network.
    """

    graphs: tuple[str, ...] = ("toy:n=4,t=0.45", "sbn:3-3", "tiny-conditional:gates=6")
    decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    main_decay: float = 0.99
    ema_decay: float = 0.9
    warmup_steps: int = 1000
    warmup_seeds: int = 5
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    groups: int = 30
    group_size: int = 50
    seed: int = 0
    batch_size: int = 32
    oracle_pilot_draws: int = 5000

    def __post_init__(self) -> None:
        if self.main_decay not in self.decays:
            raise ValueError(f"main_decay {self.main_decay} must be one of decays {self.decays}")
        if self.warmup_steps < 1 or self.warmup_seeds < 1:
            raise ValueError("warmup_steps and warmup_seeds must be >= 1")
        if self.groups < 2 or self.group_size < 2:
            raise ValueError(f"need at least 2 groups of at least 2 draws, got {self.groups} x "
                             f"{self.group_size}")


QUICK = OptimalBaselineConfig(
    graphs=("toy:n=4,t=0.45",), warmup_steps=200, warmup_seeds=2,
    checkpoints=CheckpointConfig(epochs=(0, 1), train_size=3200), groups=5, group_size=20,
    oracle_pilot_draws=500,
)
"""The `--quick` configuration: minutes on a 2-core CPU."""

FULL = OptimalBaselineConfig()
"""The committed run (`reports/optimal_baseline`)."""


def warm_baselines(
    graph,
    batches: Callable[[int], tuple[torch.Tensor, ...]],
    baselines: Mapping[str, Any],
    *,
    steps: int,
    seed: int,
) -> dict[str, Any]:
    """States of several baselines after `steps` updates on one shared stream of draws.

    Step `t` samples hard gates on `batches(t)` from `uniform_noise(seed, [t], B x G)` and
    feeds the same losses and gates to every baseline's `update`, as
    `ReinforceWithBaseline.update` does (one trace per step for all of them).

    Args:
        graph: the model.
        batches: `step -> batch`.
        baselines: `Baseline` objects by name.
        steps: updates.
        seed: the noise stream.

    Returns:
        the state of each baseline, by name.
    """
    from estimator_lab.graphs.gates import hard_bernoulli
    from estimator_lab.noise import uniform_noise

    states = {name: b.init(graph) for name, b in baselines.items()}
    with torch.no_grad():
        for step in range(steps):
            prepared = graph.prepare(batches(step))
            noise = uniform_noise(seed, range(step, step + 1),
                                  (prepared.batch_size, graph.num_gates),
                                  dtype=prepared.logits.dtype)[0]
            trace = graph.sample(prepared, noise, hard_bernoulli)
            probs = torch.sigmoid(trace.all_logits)
            states = {name: baselines[name].update(states[name], trace.losses, trace.all_gates,
                                                   probs) for name in baselines}
    return states


def excess_gate_variance(values, baseline: torch.Tensor, probs: torch.Tensor) -> float:
    """Exact excess total variance of the gate-logit draws of a per-gate baseline over Eq. 10.

    Args:
        values: the `OracleValues` (their pooled Eq. 10 is `c*`).
        baseline: the `G` baseline values `c`.
        probs: the `B x G'` gate probabilities of the tracked gate logits (`G' <= G`: the
            first layer's gates on a multi-layer graph).

    Returns:
        `sum_i (c_i - c*_i)^2 sum_j p_ji (1 - p_ji) / B^2` over the tracked gates.
    """
    batch, tracked = probs.shape
    gap = (baseline - values.pooled)[:tracked].double()
    spread = (probs * (1 - probs)).double().sum(0)
    return float((gap.square() * spread).sum()) / batch**2


def gap_agreement(gaps: pd.DataFrame, large: float = LARGE_EXCESS) -> dict[str, Any]:
    """How the excess formula's prediction compares with the measured excess (`gaps.csv`).

    The formula uses the pilot's `c*_hat` for the exact `c*`. With the pilot's error
    `delta = c*_hat - c*` and the gap `Delta = c - c*_hat`, the exact excess of `c` over the
    pilot oracle is `sum_i S_i (Delta_i^2 + 2 Delta_i delta_i) / B^2` (`S_i = sum_j D_ji`):
    the formula drops the cross term, which is linear in the gap and so does not vanish next
    to the excess as the gap grows. The measured 95% interval covers the measurement's Monte
    Carlo error only.

    Args:
        gaps: rows with `epoch`, `warmup`, `decay`, `predicted_ratio`, `measured_ratio`,
            `measured_low` and `measured_high`.
        large: the predicted excess from which a miss counts as large.

    Returns:
        a dict: `rows`; `outside` (predictions outside the measured interval) and
        `outside_large` (of them, those with predicted excess >= `large`); `stream`, epoch ->
        (min, max) of `(measured - predicted) / predicted` over the stream warm-ups; and
        `converged`, (min, max) over epochs of `predicted - measured` at the largest decay
        warmed up on the batch.

    Example:
        >>> rows = pd.DataFrame({"epoch": [0, 0], "warmup": ["batch", "stream"],
        ...                      "decay": [0.9, 0.9], "predicted_ratio": [1.001, 1.1],
        ...                      "measured_ratio": [1.0005, 1.11], "measured_low": [1.0, 1.105],
        ...                      "measured_high": [1.001, 1.115]})
        >>> agreement = gap_agreement(rows)
        >>> agreement["outside"], agreement["outside_large"], agreement["stream"]
        (1, 1, {0: (0.1..., 0.1...)})
    """
    predicted = gaps["predicted_ratio"] - 1
    outside = (gaps["predicted_ratio"] < gaps["measured_low"]) | (
        gaps["predicted_ratio"] > gaps["measured_high"])
    relative = (gaps["measured_ratio"] - gaps["predicted_ratio"]) / predicted
    stream = gaps["warmup"] == "stream"
    converged = (gaps["warmup"] == "batch") & (gaps["decay"] == gaps["decay"].max())
    shortfall = (gaps["predicted_ratio"] - gaps["measured_ratio"])[converged]
    return {
        "rows": len(gaps),
        "outside": int(outside.sum()),
        "outside_large": int((outside & (predicted >= large)).sum()),
        "stream": {int(epoch): (float(r.min()), float(r.max()))
                   for epoch, r in relative[stream].groupby(gaps["epoch"][stream])},
        "converged": (float(shortfall.min()), float(shortfall.max())),
    }


def relative_gap(values, baseline: torch.Tensor) -> float:
    """`||c - c*||_D / ||c*||_D` with the pooled Eq. 10 denominators as weights."""
    weight = values.denominator.sum(0).double()
    target = values.pooled.double()
    return float(((baseline.double() - target).square() * weight).sum().sqrt()
                 / (target.square() * weight).sum().sqrt())


def _tensor_groups(names: list[str]) -> dict[str, list[str]]:
    """`gate_logits` and `parameters` (every parameter tensor) of an exact-moments result."""
    return {"gate_logits": ["gate_logits"], "parameters": [n for n in names if n != "gate_logits"]}


def exact_part(config: OptimalBaselineConfig, progress: bool = False) -> pd.DataFrame:
    """Exact total variances on the small graphs, one row per graph, estimator and warm-up."""
    from tqdm.auto import tqdm

    from estimator_lab.configurations import EnumerationTooLarge
    from estimator_lab.estimators import get_estimator
    from estimator_lab.estimators.baselines import (
        EmaBaseline,
        OptimalBaseline,
        ReinforceWithBaseline,
        oracle_baseline_values,
    )
    from estimator_lab.estimators.prepare import WARMUP_SEED_OFFSET
    from estimator_lab.exact import NotComputable, exact_moments
    from estimator_lab.graphs.specs import build_problem

    rows = []
    for spec in tqdm(config.graphs, disable=not progress, desc="small graphs"):
        problem = build_problem(spec, seed=config.seed, data_path=config.checkpoints.data_path)
        graph, batch = problem.graph, problem.batch
        values = oracle_baseline_values(graph, batch, method="enumeration")
        with torch.no_grad():
            probs = torch.sigmoid(graph.logits(batch))
        cases: list[tuple[str, float, int, Any, Any]] = [
            ("reinforce", np.nan, -1, get_estimator("reinforce"), None),
            ("reinforce-oracle", np.nan, -1, get_estimator(
                "reinforce-oracle", values=values, pooled=True), None),
            ("rloo", np.nan, -1, get_estimator("rloo"), None),
        ]
        baselines = {f"optimal {d}": OptimalBaseline(d) for d in config.decays}
        baselines["ema"] = EmaBaseline(config.ema_decay)
        for warm in range(config.warmup_seeds):
            states = warm_baselines(graph, _fixed(batch), baselines, steps=config.warmup_steps,
                                    seed=config.seed + WARMUP_SEED_OFFSET + warm)
            cases.append(("reinforce-ema", config.ema_decay, warm,
                          ReinforceWithBaseline(baselines["ema"]), states["ema"]))
            cases += [("reinforce-optimal", d, warm,
                       ReinforceWithBaseline(baselines[f"optimal {d}"]), states[f"optimal {d}"])
                      for d in config.decays]
        for name, decay, warm, estimator, state in cases:
            row = {"graph": spec, "estimator": name, "decay": decay, "warmup_seed": warm,
                   "evaluations_per_draw": estimator.evaluations(graph)}
            try:
                moments = exact_moments(graph, estimator, batch, state=state)
            except (NotComputable, EnumerationTooLarge) as error:
                rows.append(row | {"gate_logits": np.nan, "parameters": np.nan,
                                   "note": str(error).split(";")[0]})
                continue
            for group, tensors in _tensor_groups(list(moments.variance)).items():
                row[group] = float(sum(moments.variance[t].sum() for t in tensors))
            value = _baseline_value(estimator, state, graph)
            if value is not None:
                row |= {"relative_gap": relative_gap(values, value),
                        "predicted_excess": excess_gate_variance(values, value, probs)}
            rows.append(row | {"note": ""})
    return pd.DataFrame(rows)


def _fixed(batch: tuple[torch.Tensor, ...]) -> Callable[[int], tuple[torch.Tensor, ...]]:
    """`step -> batch`: the same batch at every step."""
    return lambda step: batch


def _baseline_value(estimator, state, graph) -> torch.Tensor | None:
    """The `G` per-gate values of a baseline (a shared value broadcast), or None."""
    from estimator_lab.estimators.baselines import EmaBaseline, OptimalBaseline

    if not isinstance(getattr(estimator, "baseline", None), EmaBaseline | OptimalBaseline):
        return None
    return estimator.baseline.value(state).expand(graph.num_gates)


def exact_factors(exact: pd.DataFrame, main_decay: float) -> pd.DataFrame:
    """Exact variance-reduction factors `Var(X) / Var(Eq. 10 running)` per graph.

    Warmed-up rows are averaged over warm-up seeds (min and max kept); the denominator is the
    running Eq. 10 at `main_decay`, averaged over its warm-up seeds.
    """
    keys = ["graph", "estimator", "decay"]
    table = exact.assign(decay=exact["decay"].fillna(-1)).groupby(keys, sort=False).agg(
        gate_logits=("gate_logits", "mean"), gate_logits_min=("gate_logits", "min"),
        gate_logits_max=("gate_logits", "max"), parameters=("parameters", "mean"),
        evaluations_per_draw=("evaluations_per_draw", "first"),
        relative_gap=("relative_gap", "mean"), note=("note", "first"),
    ).reset_index()
    table["decay"] = table["decay"].replace(-1, np.nan)
    main = table[(table["estimator"] == "reinforce-optimal") & (table["decay"] == main_decay)]
    main = main.set_index("graph")
    for group in ("gate_logits", "parameters"):
        table[f"factor_{group}"] = table[group] / table["graph"].map(main[group])
    return table


def _stream(config: OptimalBaselineConfig) -> Callable[[int], tuple[torch.Tensor, ...]]:
    """`step -> ` a seeded random minibatch of training images (the training-like stream)."""
    from estimator_lab.data import mnist
    from estimator_lab.noise import draw_seed

    images, labels = mnist("train", path=config.checkpoints.data_path).tensors()

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(
            draw_seed(config.seed + STREAM_SEED_OFFSET, step))
        index = torch.randint(0, images.shape[0], (config.batch_size,), generator=generator)
        return images[index], labels[index]

    return batches


def network_part(config: OptimalBaselineConfig, file: Path, epoch: int,
                 progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Paired ratios, running-vs-oracle gaps and the summary at one snapshot.

    Returns:
        `(ratios, gaps, summary)` frames, each with an `epoch` column.
    """
    from estimator_lab.estimators import get_estimator
    from estimator_lab.estimators.baselines import (
        EmaBaseline,
        OptimalBaseline,
        ReinforceWithBaseline,
        oracle_baseline_values,
    )
    from estimator_lab.estimators.prepare import WARMUP_SEED_OFFSET
    from estimator_lab.stats import summary_frame
    from estimator_lab.stats.intervals import paired_ratio
    from estimator_lab.stats.summary import variance_ratio_frame
    from estimator_lab.studies.mnist_variance import (
        ORACLE_SEED_OFFSET,
        measure_grouped,
        measurement_problem,
    )

    graph, batch = measurement_problem(file, seed=config.seed, batch_size=config.batch_size,
                                       data_path=config.checkpoints.data_path)
    values = oracle_baseline_values(graph, batch, method="pilot",
                                    num_pilot_draws=config.oracle_pilot_draws,
                                    seed=config.seed + ORACLE_SEED_OFFSET, chunk_size=250)
    with torch.no_grad():
        probs = torch.sigmoid(graph.logits(batch))
    baselines = {_name(d, "batch"): OptimalBaseline(d) for d in config.decays}
    baselines["reinforce-ema"] = EmaBaseline(config.ema_decay)
    states = warm_baselines(graph, _fixed(batch), baselines, steps=config.warmup_steps,
                            seed=config.seed + WARMUP_SEED_OFFSET)
    streamed = {_name(d, "stream"): OptimalBaseline(d) for d in config.decays}
    states |= warm_baselines(graph, _stream(config), streamed, steps=config.warmup_steps,
                             seed=config.seed + STREAM_SEED_OFFSET)
    baselines |= streamed
    estimators = {"reinforce": get_estimator("reinforce"),
                  "reinforce-oracle": get_estimator("reinforce-oracle", values=values,
                                                    pooled=True),
                  PER_EXAMPLE: get_estimator("reinforce-oracle", values=values),
                  "rloo": get_estimator("rloo")}
    estimators |= {name: ReinforceWithBaseline(b) for name, b in baselines.items()}
    runs, _ = measure_grouped(graph, estimators, batch, groups=config.groups,
                              group_size=config.group_size, seed=config.seed, states=states,
                              progress=progress)
    evaluations = {n: e.evaluations(graph) for n, e in estimators.items()}
    main = _name(config.main_decay, "batch")
    runs[MAIN], evaluations[MAIN] = runs.pop(main), evaluations.pop(main)
    ratios = variance_ratio_frame(runs, MAIN)
    ratios["evaluations_per_draw"] = ratios["estimator"].map(evaluations)
    gaps = []
    oracle = runs["reinforce-oracle"].groups.total_variance["gate_logits"]
    oracle_total = float(runs["reinforce-oracle"]["gate_logits"].variance.sum())
    for mode in ("batch", "stream"):
        for decay in config.decays:
            name = _name(decay, mode)
            key = MAIN if (mode, decay) == ("batch", config.main_decay) else name
            value = baselines[name].value(states[name])
            mine = runs[key].groups.total_variance["gate_logits"]
            shared = sorted(mine.keys() & oracle.keys())
            measured = paired_ratio([mine[g] for g in shared], [oracle[g] for g in shared])
            low, high = measured.confidence_interval(0.95)
            excess = excess_gate_variance(values, value, probs)
            gaps.append({"warmup": mode, "decay": decay,
                         "relative_gap": relative_gap(values, value),
                         "predicted_ratio": 1 + excess / oracle_total,
                         "measured_ratio": measured.estimate, "measured_low": low,
                         "measured_high": high})
    summary = summary_frame(runs, evaluations=evaluations)
    return (ratios.assign(epoch=epoch), pd.DataFrame(gaps).assign(epoch=epoch),
            summary.assign(epoch=epoch))


def _name(decay: float, mode: str) -> str:
    return f"reinforce-optimal[d={decay},{mode}]"


def run_optimal_baseline(config: OptimalBaselineConfig, out: str | Path, *,
                         progress: bool = False) -> Path:
    """Runs the study and writes its report folder (replaced whole on success).

    Returns:
        the path of `report.md`.
    """
    from estimator_lab.reporting import run_manifest
    from estimator_lab.studies.checkpoints import training_checkpoints
    from estimator_lab.studies.protocol import STUDIES

    started = time.perf_counter()
    seconds = {}
    exact = exact_part(config, progress)
    seconds["exact"] = round(time.perf_counter() - started, 1)
    checkpoints = training_checkpoints(config.checkpoints, progress=progress)
    parts = []
    for epoch, file in checkpoints.files.items():
        began = time.perf_counter()
        parts.append(network_part(config, file, epoch, progress))
        seconds[f"epoch {epoch}"] = round(time.perf_counter() - began, 1)
    ratios, gaps, summary = (pd.concat(frames, ignore_index=True)
                             for frames in zip(*parts, strict=True))
    for frame in (ratios, gaps, summary):
        frame.insert(0, "epoch", frame.pop("epoch"))
    training = pd.DataFrame(checkpoints.log)
    manifest = run_manifest(
        seed=config.seed, device="cpu", wall_time_s=time.perf_counter() - started,
        study="optimal_baseline", config=asdict(config),
        checkpoint_folder=str(checkpoints.folder), trained_now=checkpoints.trained,
        seconds=seconds,
    )
    tables = {"exact": exact, "ratios": ratios, "gaps": gaps, "summary": summary,
              "training": training}
    return STUDIES["optimal_baseline"].write(out, config, tables, manifest)


def _interval_text(estimate: float, low: float, high: float) -> str:
    return f"{estimate:.4g} [{low:.4g}, {high:.4g}]"


def headline_table(ratios: pd.DataFrame, parameters=("gate_logits", "gater_hidden",
                                                     "gater_out")) -> pd.DataFrame:
    """`Var(X) / Var(Eq. 10)` with its 95% delta-method interval, one row per epoch and
    headline estimator, one column per parameter group."""
    rows = ratios[ratios["estimator"].isin(HEADLINE) & ratios["parameter"].isin(parameters)]
    rows = rows.assign(factor=[_interval_text(r.variance_ratio, r.ratio_low, r.ratio_high)
                               for r in rows.itertuples()])
    table = rows.pivot_table(index=["epoch", "estimator", "evaluations_per_draw"],
                             columns="parameter", values="factor", aggfunc="first", sort=False)
    return table[[p for p in parameters if p in table.columns]].reset_index()


def optimal_baseline_report(config: OptimalBaselineConfig, exact: pd.DataFrame,
                            ratios: pd.DataFrame, gaps: pd.DataFrame, summary: pd.DataFrame,
                            training: pd.DataFrame, manifest: dict):
    """The report, from the saved tables and the manifest (figures redrawn)."""
    from estimator_lab.plotting import sweep_plot
    from estimator_lab.reporting import Report

    factors = exact_factors(exact, config.main_decay)
    check = exact.dropna(subset=["predicted_excess"]).merge(
        exact[exact["estimator"] == "reinforce-oracle"][["graph", "gate_logits"]],
        on="graph", suffixes=("", "_oracle"))
    mismatch = float(((check["gate_logits"] - check["gate_logits_oracle"]
                       - check["predicted_excess"]).abs() / check["gate_logits_oracle"]).max())
    checks = config.checkpoints
    report = Report("The per-unit optimal baseline of Eq. 10: how much variance does it remove?",
                    manifest)
    report.add_text(f"""
**Question.** By how much does REINFORCE's variance fall with the paper's per-unit baseline
(Eq. 10, `c_i = E[(b_i - p_i)^2 L] / E[(b_i - p_i)^2]`, estimated by moving averages) against
no baseline, a moving average of the loss, the oracle Eq. 10 and RLOO, on small graphs (exact)
and on the full MNIST network through training; and how close does the running estimate get to
the oracle, for which averaging rates?

**Setup.** The running Eq. 10 (`{MAIN}`, decay {config.main_decay}) and the moving average
(decay {config.ema_decay}) are warmed up for {config.warmup_steps:,} draws and then frozen
(the engine never updates a state while measuring). The oracle is Eq. 10 pooled over the
batch (one value per gate, the running estimate's limit): exact by enumeration on the small
graphs, from a pilot of {config.oracle_pilot_draws:,} draws on its own noise stream on the full
network; `{PER_EXAMPLE}` uses each example's own Eq. 10 (a baseline for that batch only). RLOO
uses 2 samples (2 loss evaluations per draw, all others 1). Every factor is
`Var(X) / Var({MAIN})` of the total variance of one draw: above 1 means Eq. 10 is better.
Wall time {manifest["wall_time_s"]:.0f} s on {manifest["device"]}.""")
    report.add_section("Exact variance on small graphs", f"""
Exact total variance of one draw (enumeration over the gates), for the gate logits and summed
over every parameter; warmed-up estimators are averaged over {config.warmup_seeds} warm-up
noise streams (min and max of the gate-logit variance shown), and `relative_gap` is
`||c - c*||_D / ||c*||_D` against the exact oracle. RLOO is exact where its 2 x G gates can be
enumerated. Check: the exact excess gate-logit variance of each warmed-up baseline over the
oracle, `sum_i (c_i - c*_i)^2 sum_j D_ji / B^2`, matches the enumerated difference to a
relative {mismatch:.1e} of the oracle's variance.""")
    report.add_table(factors[["graph", "estimator", "decay", "evaluations_per_draw",
                              "gate_logits", "gate_logits_min", "gate_logits_max", "parameters",
                              "factor_gate_logits", "factor_parameters", "relative_gap"]],
                     "Exact total variance and variance-reduction factor of Eq. 10 (running, "
                     f"decay {config.main_decay}) on small graphs", label="tab:ob-exact")
    report.add_section("The full MNIST network through training", f"""
The paper network ({checks.network.num_inputs} → {checks.network.num_gater_hidden} tanh →
{checks.network.num_gates} gates, expert, output; 2,706,010 parameters) trained by
`{checks.estimator}` at learning rate {checks.learning_rate} (plain SGD, minibatch
{checks.batch_size}, no sparsity penalty, seed {checks.seed}); snapshots at epochs
{", ".join(map(str, checks.epochs))} (table below). Measured on one seeded minibatch of
{config.batch_size} validation images: {config.groups} batch-means groups of
{config.group_size} draws per estimator ({config.groups * config.group_size:,} draws), common
random numbers, paired ratios with 95% delta-method intervals (paired-bootstrap intervals in
`ratios.csv`). The expert and output gradients are the same pathwise terms for every
single-sample REINFORCE variant, so only the gater's groups are shown.""")
    report.add_table(training, "Training snapshots: mean training criterion over the epoch, "
                     "validation error (%) at sampled gates, mean gate probability",
                     label="tab:ob-training")
    report.add_table(headline_table(ratios), f"Variance-reduction factor of Eq. 10: `Var(X) / "
                     f"Var({MAIN})` with 95% interval, per parameter group", label="tab:ob-head")
    # Hue by a plain column: the catalogue palette gives the per-example oracle (not a
    # registry name) the colour of `reinforce`.
    plotted = ratios[ratios["estimator"].isin(HEADLINE)
                     & (ratios["parameter"] == "gate_logits")].rename(columns={"estimator": "X"})
    report.add_figure(sweep_plot(plotted, x="epoch", y="variance_ratio", low="ratio_low",
                                 high="ratio_high", hue="X", log_y=True).figure,
                      f"Gate-logit `Var(X) / Var({MAIN})` through training (95% bands; `rloo` "
                      "and the per-example oracle nearly coincide)", name="factors")
    agreement = gap_agreement(gaps)
    stream = "; ".join(f"{100 * low:+.2g}% to {100 * high:+.2g}% at epoch {epoch}"
                       for epoch, (low, high) in agreement["stream"].items())
    signs = {np.sign(low) * np.sign(high) for low, high in agreement["stream"].values()}
    sign = ("has one sign within every snapshot" if signs == {1.0}
            else "changes sign within a snapshot")
    low, high = agreement["converged"]
    report.add_section("How close the running estimate gets to the oracle", f"""
Running Eq. 10 estimates after {config.warmup_steps:,} updates with each decay, warmed up on the
measured batch (`batch`) or along a stream of random training minibatches at the snapshot's
parameters (`stream`, as in training). `relative_gap` = `||c - c*||_D / ||c*||_D` against the
pilot oracle; `predicted_excess` = `excess / Var(oracle)` from the excess formula with the
pilot's `c*` in place of the exact one; `measured_excess` is the paired Monte Carlo ratio of
gate-logit variances to the oracle's minus 1, with its 95% interval (ratios in `gaps.csv`).
On the batch, a slower average (larger decay) gets closer; along the stream the running
estimate averages Eq. 10 over minibatches, which is not this batch's Eq. 10.

The prediction is not the excess over the oracle as run. With the pilot's error
`delta = c*_pilot - c*` and the gap `Delta = c - c*_pilot`, the exact excess is
`sum_i S_i (Delta_i^2 + 2 Delta_i delta_i) / B^2` (`S_i = sum_j p_ji (1 - p_ji)`), and the
formula drops the cross term. The measured interval covers the measurement's Monte Carlo error
only, so {agreement["outside"]} of {agreement["rows"]} predictions lie outside it,
{agreement["outside_large"]} of them with a predicted excess of at least {LARGE_EXCESS:.0e}. The
cross term is linear in the gap, so it does not become negligible where the excess is large.
Along the stream, where the gaps are largest, `(measured - predicted) / predicted` {sign}:
{stream}; one sign for every decay is what the cross term gives when the gap is mostly a
shift shared by the gates, as the pilot's error is (its gates share one set of draws).
Warmed up on the batch at decay {max(config.decays)}, the running estimate and the pilot both
estimate this batch's `c*` from independent draws, and the formula overstates the excess by
twice the pilot oracle's own excess on average (`2 sum_i S_i delta_i^2 / B^2`, plus a noise
term in both errors): predicted minus measured is {low:.2g} to {high:.2g} of the oracle's
variance across the snapshots.""")
    excess = gaps.assign(**{column: gaps[ratio] - 1 for column, ratio in (
        ("predicted_excess", "predicted_ratio"), ("measured_excess", "measured_ratio"),
        ("measured_excess_low", "measured_low"), ("measured_excess_high", "measured_high"))})
    report.add_table(excess[["epoch", "warmup", "decay", "relative_gap", "predicted_excess",
                             "measured_excess", "measured_excess_low", "measured_excess_high"]],
                     "Running Eq. 10 against the oracle, per decay and warm-up: excess "
                     "gate-logit variance over the oracle's (ratio - 1), predicted and measured",
                     label="tab:ob-gaps")
    report.add_section("Reproduce", """All rows: `exact.csv`, `ratios.csv` (every estimator and
parameter group), `gaps.csv`, `summary.csv` (the summary schema per epoch), `training.csv`.

```
estimator-lab run optimal_baseline --out reports/optimal_baseline
```""")
    return report
