"""The main job: gradient variance of REINFORCE and straight-through on the paper network.

`estimator-lab demo` draws `draws` gradient estimates per estimator on one seeded minibatch of
MNIST validation images at the seeded initial parameters of the paper's conditional network,
for the gate logits and every parameter group, and writes `results.csv` (and `.parquet`),
`bias_check.csv` and the report (`report.md`, `report.html`, `tables.tex`, the figure as PNG and
PDF, `manifest.json`) into one folder, replaced whole.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from estimator_lab.data import mnist
from estimator_lab.device import describe_device, resolve_device
from estimator_lab.estimators import get_estimator
from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork
from estimator_lab.graphs.paper import PAPER_REFERENCE
from estimator_lab.montecarlo import GATE_LOGITS, MomentAccumulator, iter_draw_chunks
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.noise import uniform_noise
from estimator_lab.plotting import group_variance_plot
from estimator_lab.reporting import Report, run_manifest
from estimator_lab.stats import summary_frame, zero_mean_test
from estimator_lab.studies.protocol import STUDIES
from estimator_lab.studies.rebuild import (
    BIAS_TEST_NUMERIC,
    SUMMARY_NUMERIC,
    ReportError,
    check_blocks,
    check_columns,
    check_draws,
    check_layout,
    present_columns,
)

REFERENCE = PAPER_REFERENCE


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo study.

    Attributes:
        draws: gradient draws per estimator.
        seed: seeds the minibatch choice, the initial parameters and the noise.
        estimators: registry names of the estimators compared.
        batch_size: validation images in the minibatch.
        chunk_size: draws held in memory at once.
        device: `"auto"`, `"cpu"`, `"cuda"`, ...
        network: the network's sizes (the paper's by default).
        data_path: an explicit MNIST source (npz or IDX folder), else the verified cache.
        alpha: family-wise level of the bias check against the local-expectation reference.
    """

    draws: int = 2000
    seed: int = 0
    estimators: tuple[str, ...] = ("reinforce", "st")
    batch_size: int = 32
    chunk_size: int = 32
    device: str = "auto"
    network: ConditionalConfig = field(default_factory=ConditionalConfig)
    data_path: str | None = None
    alpha: float = 0.01

    def __post_init__(self) -> None:
        if self.draws < 2:
            raise ValueError(f"draws must be >= 2, got {self.draws}")
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError(f"batch_size must be in 1..10000, got {self.batch_size}")
        if not self.estimators:
            raise ValueError("estimators must name at least one estimator")


def demo_batch(config: DemoConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded minibatch: `batch_size` validation images (`B x 784`) and labels (`B`)."""
    images, labels = mnist("valid", path=config.data_path).tensors()
    generator = torch.Generator().manual_seed(config.seed)
    index = torch.randperm(images.shape[0], generator=generator)[: config.batch_size]
    return images[index].to(device), labels[index].to(device)


def _bias_row(name: str, differences: MomentAccumulator, alpha: float) -> dict:
    result = zero_mean_test(differences[GATE_LOGITS], alpha=alpha)
    return {
        "estimator": name,
        "reference": REFERENCE,
        "draws": result.count,
        "coordinates": result.estimate.size,
        "max_abs_z": result.statistic,
        "holm_pvalue": result.pvalue,
        "coordinates_flagged": int(result.rejected.sum()),
        "verdict": "biased" if result.pvalue < alpha else "not flagged",
    }


def run_demo(config: DemoConfig, out: str | Path, *, progress: bool = False) -> Path:
    """Runs the demo study and writes its report folder.

    Args:
        config: the study's settings.
        out: the report folder; replaced whole when the run succeeds, untouched if it fails.
        progress: show a progress bar.

    Returns:
        the path of `report.md`.
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    estimators = {name: get_estimator(name) for name in config.estimators}
    reference = get_estimator(REFERENCE)
    batch = demo_batch(config, device)
    graph = ConditionalNetwork(config.network, torch.Generator().manual_seed(config.seed))
    graph = graph.to(device)
    with torch.no_grad():
        prepared = graph.prepare(batch)
    shapes = {GATE_LOGITS: tuple(prepared.logits.shape)} | {
        n: tuple(p.shape) for n, p in graph.named_parameters()
    }

    moments = {name: MomentAccumulator() for name in estimators}
    differences = {name: MomentAccumulator() for name in estimators}
    for indices, chunk, elapsed in iter_draw_chunks(
        graph, estimators, batch, num_draws=config.draws, seed=config.seed,
        chunk_size=config.chunk_size, progress=progress,
    ):
        noise = uniform_noise(
            config.seed, indices, reference.noise_shape(graph, prepared),
            dtype=prepared.logits.dtype, device=device,
        )
        reference_draws = gradient_draws(graph, reference, batch, noise, parameters=[])
        for name, draws in chunk.items():
            difference = draws[GATE_LOGITS] - reference_draws[GATE_LOGITS]
            differences[name].update({GATE_LOGITS: difference})
            moments[name].update(draws, overwrite=True)
            moments[name].elapsed_s += elapsed[name]

    evaluations = {name: est.evaluations(graph) for name, est in estimators.items()}
    results = summary_frame(moments, evaluations=evaluations)
    results.insert(3, "shape", ["x".join(map(str, shapes[p])) for p in results["parameter"]])
    bias = pd.DataFrame([_bias_row(name, differences[name], config.alpha) for name in estimators])
    wall_time = time.perf_counter() - started
    manifest = run_manifest(
        seed=config.seed, device=describe_device(device), wall_time_s=wall_time,
        study="demo", config=asdict(config),
        parameters=sum(p.numel() for p in graph.parameters()),
    )
    return STUDIES["demo"].write(
        out, config, {"results": results, "bias_check": bias}, manifest,
        files=lambda stage: results.to_parquet(stage / "results.parquet", index=False))


def demo_report(
    config: DemoConfig, results: pd.DataFrame, bias: pd.DataFrame, manifest: dict
) -> Report:
    """The report of a demo run, from its saved tables and manifest (the figure drawn from them).

    `studies.rebuild.rebuild_report` calls it with the tables read back from the run's folder.
    """
    variance = results.pivot(index="parameter", columns="estimator", values="mean_variance")
    variance = variance.loc[list(dict.fromkeys(results["parameter"]))].reset_index()
    verdicts = "; ".join(
        f"`{r.estimator}`: {r.verdict} (Holm p = {r.holm_pvalue:.3g}, "
        f"{r.coordinates_flagged} of {r.coordinates:,} coordinates flagged)"
        for r in bias.itertuples()
    )
    table_columns = ["estimator", "parameter", "numel", "draws", "mean_norm", "signal_norm",
                     "mean_variance", "total_variance", "snr"]
    net = config.network
    report = Report("Demo: gradient variance through stochastic binary gates", manifest)
    report.add_text(f"""
**Question.** How noisy are REINFORCE and straight-through gradient estimates for each
parameter group of the paper's conditional-computation network (Bengio, Léonard, Courville 2013,
section 5), and are they unbiased on the gate logits?

**Setup.** Network {net.num_inputs} → {net.num_gater_hidden} tanh → {net.num_gates} gates;
expert {net.num_inputs} → {net.num_gates}; output {net.num_gates} → {net.num_classes}
({manifest["parameters"]:,} parameters) at its seeded initialisation; one minibatch of
{config.batch_size} MNIST validation images chosen by seed {config.seed};
{config.draws:,} draws per estimator, common random numbers across estimators;
device {manifest["device"]}; wall time {manifest["wall_time_s"]:.1f} s.""")
    report.add_section("Mean per-coordinate variance of one draw")
    report.add_table(variance, "Mean per-coordinate variance of one draw per parameter group "
                     "(rows) and estimator (columns)", label="tab:demo-variance")
    report.add_figure(group_variance_plot(results).figure,
                      "Mean per-coordinate variance per parameter group (log scale)",
                      name="variance")
    report.add_section("All figures per parameter group", """
`mean_norm` is the norm of the mean of the draws, which includes Monte Carlo noise;
`signal_norm` = `sqrt(max(mean_norm² − total_variance / draws, 0))` removes that noise (an
estimate of the norm of the expected draw); `snr` = `signal_norm / sqrt(total_variance)`, the
signal-to-noise ratio of one draw.""")
    report.add_table(results[table_columns], "Figures of one draw per estimator and parameter "
                     "group", label="tab:demo-groups")
    report.add_section(
        "Bias on the gate logits against the local-expectation reference",
        f"""
Each draw is paired with a `{REFERENCE}` draw from the same noise (unbiased: the expectation
over gate `i` is exact); per-coordinate z-tests of the mean difference with Holm's correction at
family-wise level {config.alpha}. {verdicts}.""",
    )
    report.add_table(bias, f"Bias check of the gate logits against `{REFERENCE}`",
                     label="tab:demo-bias")
    report.add_section("Reproduce", f"""```
estimator-lab demo --draws {config.draws} --seed {config.seed} --out DIR
```""")
    return report


def check_tables(folder: Path, config: DemoConfig, tables: dict[str, pd.DataFrame],
                 manifest: dict) -> None:
    """Checks a saved demo run before its report is rebuilt (`studies.rebuild`): the tables'
    columns hold numbers where numbers belong, each row's `numel` is its `shape`'s, and the
    rows are the configured estimators times the network's tensors, with the configured draws.

    Raises:
        ReportError: the first thing that does not match, in one line.
    """
    results, bias = tables["results"], tables["bias_check"]
    path = folder / "results.csv"
    check_columns(results, path, numeric=present_columns(results, SUMMARY_NUMERIC),
                  text=["estimator", "parameter", "shape"])
    sizes = results["shape"].str.split("x").map(lambda dims: int(np.prod([int(d) for d in dims])))
    if results["numel"].ne(sizes).any():
        row = int(np.argmax(results["numel"].ne(sizes).to_numpy()))
        raise ReportError(f"{path} is damaged: row {row + 2} has {results['numel'].iloc[row]} "
                          f"coordinates, its shape {results['shape'].iloc[row]} {sizes.iloc[row]}")
    network = ConditionalNetwork(config.network)
    layout = pd.DataFrame(
        [(GATE_LOGITS, config.batch_size * config.network.num_gates)]
        + [(name, p.numel()) for name, p in network.named_parameters()],
        columns=["parameter", "numel"],
    )
    check_layout(results, path, config.estimators, layout)
    check_draws(results, path, dict.fromkeys(config.estimators, config.draws))
    path = folder / "bias_check.csv"
    check_columns(bias, path, numeric=BIAS_TEST_NUMERIC, text=["estimator"])
    check_blocks(bias, path, config.estimators)
    check_draws(bias, path, dict.fromkeys(config.estimators, config.draws))
