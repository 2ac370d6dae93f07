"""The variance study: bias and variance of estimators on the full paper network or a small graph.

`estimator-lab variance --graph paper --estimators a,b --draws N --seed S --out DIR`:
`paper` is the full MNIST conditional network at its seeded initialisation (or at parameters
loaded with `--parameters FILE`), on a seeded minibatch of 32 validation images; the reference
gradient is the mean of `local-expectation` draws made from the same noise, and each estimator's
bias is tested on its paired differences with that reference (common random numbers). A small
graph spec (`toy:...`, `sbn:...`, `tiny-conditional:...`) uses its exact gradient instead.
Writes `summary.csv` (the `SUMMARY_COLUMNS` per estimator and parameter group), `gates.csv`
(one row per estimator, example and gate: mean, variance, reference, p-values), `ratios.csv`
(paired variance ratios to the first estimator), `manifest.json` and the report.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from estimator_lab.device import describe_device, resolve_device
from estimator_lab.estimators.prepare import prepare_estimator
from estimator_lab.exact.categorical import exact_gradient_for
from estimator_lab.graphs.paper import PAPER_BATCH_SIZE, PAPER_REFERENCE, paper_problem
from estimator_lab.graphs.specs import build_problem
from estimator_lab.montecarlo import GATE_LOGITS, run_draws
from estimator_lab.montecarlo.accumulators import Moments
from estimator_lab.montecarlo.checkpoint import tensor_digest
from estimator_lab.montecarlo.distributed import run_draws_distributed
from estimator_lab.plotting import group_variance_plot
from estimator_lab.reporting import run_manifest, staged_directory
from estimator_lab.reporting.builder import Report
from estimator_lab.serialization import safe_load_dict
from estimator_lab.stats import SUMMARY_COLUMNS, rounding_scale, summary_frame, zero_mean_test
from estimator_lab.stats.summary import variance_ratio_frame
from estimator_lab.studies.protocol import STUDIES
from estimator_lab.studies.rebuild import (
    SUMMARY_NUMERIC,
    check_blocks,
    check_columns,
    check_draws,
    check_layout,
    graph_layout,
    mismatch,
    present_columns,
)

REFERENCE = PAPER_REFERENCE
GATE_COLUMNS = ["estimator", "example", "gate", "mean", "stderr", "variance", "reference",
                "reference_stderr", "pvalue", "pvalue_adjusted"]


@dataclass(frozen=True)
class VarianceConfig:
    """Settings of a variance study.

    Attributes:
        graph: `"paper"` or a small graph spec.
        estimators: registry names.
        draws: draws per estimator.
        seed: seeds the minibatch, the initial parameters and the noise.
        parameters_file: a state dict for the paper network (default: seeded initialisation).
        batch_size: validation images in the paper minibatch.
        chunk_size: draws held in memory at once.
        group_size: draws per batch-means group (intervals of total variance and bias).
        alpha: family-wise level of the bias tests (Holm).
        device: `"auto"`, `"cpu"`, `"cuda"`, ...
        data_path: an explicit MNIST source.
        checkpoint: a file for periodic checkpoints (resumes an interrupted run).
        nan_policy: `"raise"` or `"skip"`.
        warmup_steps: `update` calls on separate noise before an adaptive estimator's state
            is frozen for the measurement (`prepare_estimator`).
        draw_range: `(start, stop)`: draw only `start .. stop - 1` of the `draws` and write a
            mergeable partial (`merge_partials`) instead of the report.
    """

    graph: str = "paper"
    estimators: tuple[str, ...] = ("reinforce", "st")
    draws: int = 1000
    seed: int = 0
    parameters_file: str | None = None
    batch_size: int = PAPER_BATCH_SIZE
    chunk_size: int = 32
    group_size: int = 50
    alpha: float = 0.01
    device: str = "auto"
    data_path: str | None = None
    checkpoint: str | None = None
    nan_policy: str = "raise"
    warmup_steps: int = 200
    draw_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.draws < 2 * self.group_size:
            raise ValueError(f"draws must be at least two groups ({2 * self.group_size}), "
                             f"got {self.draws}")
        if not self.estimators:
            raise ValueError("estimators must name at least one estimator")
        if self.draw_range is not None:
            start, stop = self.draw_range
            if not 0 <= start < stop <= self.draws:
                raise ValueError(f"draw range {start}:{stop} must satisfy 0 <= START < STOP <= "
                                 f"draws ({self.draws})")
            object.__setattr__(self, "draw_range", (int(start), int(stop)))


def parse_draw_range(text: str) -> tuple[int, int]:
    """`"START:STOP"` -> `(START, STOP)` (checked against the draws by `VarianceConfig`).

    Raises:
        ValueError: for anything but two integers separated by a colon.
    """
    parts = text.split(":")
    try:
        start, stop = (int(part) for part in parts)
    except ValueError:
        raise ValueError(f"draw range {text!r} must be START:STOP, two integers") from None
    return start, stop


def distributed_rank() -> tuple[int, int]:
    """`(rank, world_size)`, initialising torch.distributed when launched by torchrun.

    Under `torchrun` (the environment holds `WORLD_SIZE > 1`), the default process group is
    initialised from the environment (NCCL when CUDA is available, else gloo) if it is not yet.
    """
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def run_variance(
    config: VarianceConfig, out: str | Path, *, progress: bool = False
) -> Path | None:
    """Runs the variance study and writes its report folder (replaced whole on success).

    Under `torchrun --nproc_per_node=N` the draws are split across the ranks and merged
    exactly (`run_draws_distributed`); rank 0 writes the report (and returns its path; the
    other ranks return None), each rank its own checkpoint.
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per torchrun rank
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    exact = config.graph != "paper"
    graph, batch, reference = _problem(config, device)
    names = list(dict.fromkeys([*config.estimators, *([] if exact else [REFERENCE])]))
    prepared = {name: prepare_estimator(name, graph, batch, warmup_steps=config.warmup_steps,
                                        seed=config.seed) for name in names}
    estimators = {name: estimator for name, (estimator, _) in prepared.items()}
    states = {name: state for name, (_, state) in prepared.items()}
    rank, world_size = distributed_rank()
    checkpoint = config.checkpoint
    if checkpoint is not None and world_size > 1:
        checkpoint = f"{checkpoint}.rank{rank}"
    start, stop = config.draw_range or (0, config.draws)
    options = dict(
        chunk_size=config.chunk_size, group_size=config.group_size,
        progress=progress and rank == 0, paired_with=None if exact else REFERENCE,
        checkpoint=checkpoint, nan_policy=config.nan_policy,
        references=reference if exact else None, states=states,
    )
    if config.draw_range is not None:
        if world_size > 1:
            raise ValueError("a draw range is one shard: run it without torchrun")
        runs = run_draws(graph, estimators, batch, num_draws=stop - start, first_draw=start,
                         seed=config.seed, **options)
        return write_partial(config, out, graph, batch, runs, time.perf_counter() - started)
    draw = run_draws_distributed if world_size > 1 else run_draws
    runs = draw(graph, estimators, batch, num_draws=config.draws, seed=config.seed, **options)
    if rank != 0:
        return None
    return _write_report(config, out, graph, batch, estimators, runs, reference,
                         wall_time_s=time.perf_counter() - started,
                         device=describe_device(device), world_size=world_size)


def _problem(config: VarianceConfig, device: torch.device):
    """`(graph, batch, reference)`: the reference is the exact gradient (small graphs) or
    None (the paper network: the mean of the reference's draws)."""
    if config.graph != "paper":
        problem = build_problem(config.graph, seed=config.seed)
        graph = problem.graph.to(device)
        batch = tuple(t.to(device) for t in problem.batch)
        _, reference = exact_gradient_for(graph, batch)
        return graph, batch, reference
    graph, batch = paper_problem(seed=config.seed, batch_size=config.batch_size,
                                 parameters_file=config.parameters_file,
                                 data_path=config.data_path, device=device)
    return graph, batch, None


def _write_report(config: VarianceConfig, out, graph, batch, estimators, runs, reference, *,
                  wall_time_s: float, device: str, world_size: int = 1, **extra) -> Path:
    """The tables, manifest and report of a finished run (or of merged partials)."""
    exact = config.graph != "paper"
    names = list(estimators)
    differences = {}
    if not exact:
        reference = {k: runs[REFERENCE][k].mean.view(shape) for k, shape in
                     _shapes(graph, batch).items()}
        differences = {n: runs[f"{n} - {REFERENCE}"] for n in names if n != REFERENCE}
    evaluations = {n: e.evaluations(graph) for n, e in estimators.items()}
    summary = summary_frame({n: runs[n] for n in names}, references=reference,
                            evaluations=evaluations, differences=differences)
    summary.insert(0, "graph", config.graph)
    ratios = variance_ratio_frame({n: runs[n] for n in names}, names[0])
    gates = pd.concat([_gate_rows(config, runs, name, reference, exact)
                       for name in config.estimators], ignore_index=True)
    manifest = run_manifest(
        seed=config.seed, device=device, world_size=world_size,
        wall_time_s=wall_time_s, study="variance", config=asdict(config),
        reference="exact gradient (enumeration)" if exact else f"mean of {REFERENCE} draws",
        skipped_draws={n: len(a.skipped) for n, a in runs.items()},
        engine_path={n: runs[n].path for n in names}, **extra,
    )
    return STUDIES["variance"].write(
        out, config, {"summary": summary, "gates": gates, "ratios": ratios}, manifest)


def _shapes(graph, batch) -> dict[str, tuple[int, ...]]:
    with torch.no_grad():
        logits = graph.logits(batch)
    return {GATE_LOGITS: tuple(logits.shape)} | {
        n: tuple(p.shape) for n, p in graph.named_parameters()
    }


def _gate_rows(config, runs, name, reference, exact) -> pd.DataFrame:
    moments = runs[name][GATE_LOGITS]
    r = reference[GATE_LOGITS].reshape(-1).double().cpu()
    if exact:
        difference = Moments(moments.count, moments.mean.cpu() - r, moments.m2.cpu())
        reference_stderr = np.zeros(r.numel())
    else:
        paired = runs[f"{name} - {REFERENCE}"][GATE_LOGITS] if name != REFERENCE else None
        difference = (Moments(paired.count, paired.mean.cpu(), paired.m2.cpu()) if paired
                      else Moments(moments.count, torch.zeros_like(r), torch.zeros_like(r)))
        reference_stderr = runs[REFERENCE][GATE_LOGITS].standard_error.cpu().numpy()
    test = zero_mean_test(difference, alpha=config.alpha,
                          rounding=rounding_scale(moments.mean.cpu().numpy(), r.numpy()))
    batch_size = reference[GATE_LOGITS].shape[0]
    gates = r.numel() // batch_size
    return pd.DataFrame({
        "estimator": name,
        "example": np.repeat(np.arange(batch_size), gates),
        "gate": np.tile(np.arange(gates), batch_size),
        "mean": moments.mean.cpu().numpy(), "stderr": moments.standard_error.cpu().numpy(),
        "variance": moments.variance.cpu().numpy(), "reference": r.numpy(),
        "reference_stderr": reference_stderr, "pvalue": test.pvalues,
        "pvalue_adjusted": test.pvalues_adjusted,
    })[GATE_COLUMNS]


def variance_report(config: VarianceConfig, summary: pd.DataFrame, gates: pd.DataFrame,
                    ratios: pd.DataFrame, manifest: dict) -> Report:
    """The report of a variance study from its saved tables and manifest (figures redrawn)."""
    flagged = gates.groupby("estimator", sort=False)["pvalue_adjusted"].agg(
        lambda p: int((p < config.alpha).sum())).reset_index(name="gates_flagged")
    flagged["gate_coordinates"] = gates.groupby("estimator", sort=False).size().to_numpy()
    columns = ["estimator", "parameter", "mean_variance", "total_variance", "total_variance_low",
               "total_variance_high", "snr", "cosine", "relative_bias", "squared_bias_pvalue",
               "work_variance"]
    defined = "\n".join(f"- `{c}`: {SUMMARY_COLUMNS[c]}" for c in columns[2:])
    paired = ("on the differences of paired draws with the reference (same noise)"
              if config.graph == "paper" else "against the exact gradient")
    report = Report(f"Variance and bias of gradient estimators: `{config.graph}`", manifest)
    report.add_text(f"""
**Question.** How large are the variance and the bias of each estimator, per parameter group,
against the {manifest["reference"]}?

**Setup.** {config.draws:,} draws per estimator, seed {config.seed}, common random numbers;
batch-means groups of {config.group_size} draws for the intervals; bias tests on the gate
logits by per-coordinate z-tests with Holm's correction at level {config.alpha} {paired}.
Device {manifest["device"]}; wall time {manifest["wall_time_s"]:.1f} s.""")
    report.add_table(summary[columns], "Variance, bias and cost per estimator and parameter "
                     "group", label="tab:variance-summary")
    report.add_section("Columns", defined)
    report.add_figure(group_variance_plot(summary).figure,
                      "Mean per-coordinate variance per parameter group (log scale)",
                      name="variance")
    report.add_section("Variance ratios under common random numbers", f"""
Total variance of each estimator over that of `{config.estimators[0]}`, from batch-means groups
paired by draw index (the same noise): delta-method and paired-bootstrap 95% intervals.""")
    report.add_table(ratios.drop(columns=["baseline"]), "Paired total-variance ratios",
                     label="tab:variance-ratios")
    report.add_section("Gate logits flagged as biased")
    report.add_table(flagged, "Gate-logit coordinates flagged biased (Holm)",
                     label="tab:variance-flagged")
    report.add_section("Reproduce", f"""Per-gate rows: `gates.csv`; all columns: `summary.csv`.

```
estimator-lab variance --graph {config.graph} --estimators {",".join(config.estimators)} \\
    --draws {config.draws} --seed {config.seed} --out DIR
```""")
    return report


def check_tables(folder: Path, config: VarianceConfig, tables: dict[str, pd.DataFrame],
                 manifest: dict) -> None:
    """Checks a saved variance study before its report is rebuilt (`studies.rebuild`): a small
    graph's spec builds, the tables' columns hold numbers where numbers belong, and their rows
    are the configured estimators (and the reference) times the tracked tensors or gate
    logits, each with the configured draws less the skipped ones.

    Raises:
        ReportError: the first thing that does not match, in one line.
    """
    summary, gates, ratios = tables["summary"], tables["gates"], tables["ratios"]
    paper = config.graph == "paper"
    layout = None if paper else graph_layout(config.graph, config.seed, folder)
    names = list(dict.fromkeys([*config.estimators, *([REFERENCE] if paper else [])]))
    path = folder / "summary.csv"
    check_columns(summary, path, numeric=present_columns(summary, SUMMARY_NUMERIC),
                  text=["graph", "estimator", "parameter"])
    if summary["graph"].ne(config.graph).any():
        raise mismatch(path, f"rows of another graph than {config.graph!r}")
    if paper:  # the paper network's tensors: those of the first estimator, for every one
        layout = (summary.loc[summary["estimator"] == names[0], ["parameter", "numel"]]
                  .reset_index(drop=True))
    check_layout(summary, path, names, layout)
    skipped = manifest.get("skipped_draws", {})
    check_draws(summary, path, {n: config.draws - skipped.get(n, 0) for n in names})
    path = folder / "gates.csv"
    check_columns(gates, path, numeric=GATE_COLUMNS[1:], text=["estimator"])
    sizes = check_blocks(gates, path, config.estimators)
    logits = int(layout.loc[layout["parameter"] == GATE_LOGITS, "numel"].sum())
    if sizes.ne(logits).any():
        raise mismatch(path, f"an estimator without one row per gate logit ({logits})")
    path = folder / "ratios.csv"
    check_columns(ratios, path, numeric=["variance_ratio"], text=["estimator", "baseline"])
    check_blocks(ratios, path, names[1:])
    if ratios["baseline"].ne(names[0]).any() or len(ratios) != len(layout) * (len(names) - 1):
        raise mismatch(path, f"not one ratio against {names[0]} per estimator and tensor")


PARTIAL_FILE = "partial.pt"
PARTIAL_VERSION = 1
_SHARD_FREE = ("draw_range", "checkpoint", "device")
"""Settings a shard may choose for itself; every other one must agree across shards."""


def write_partial(config: VarianceConfig, out, graph, batch, runs, wall_time_s: float) -> Path:
    """Writes one shard's accumulators and settings into `out/partial.pt`, replaced whole.

    The file loads with `torch.load(weights_only=True)`: plain dicts, lists, numbers,
    strings and CPU tensors.
    """
    state = {
        "version": PARTIAL_VERSION, "study": "variance",
        "config": {k: list(v) if isinstance(v, tuple) else v
                   for k, v in asdict(config).items()},
        "graph_digest": tensor_digest(p for _, p in sorted(graph.state_dict().items())),
        "batch_digest": tensor_digest(batch), "wall_time_s": wall_time_s,
        "accumulators": {name: acc.state_dict() for name, acc in runs.items()},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with staged_directory(out) as stage:
        (stage / PARTIAL_FILE).write_bytes(buffer.getvalue())
    return Path(out) / PARTIAL_FILE


def _load_partial(path: str | Path) -> dict:
    path = Path(path)
    file = path / PARTIAL_FILE if path.is_dir() else path
    state = safe_load_dict(file, "partial")
    if state.get("study") != "variance" or state.get("version") != PARTIAL_VERSION:
        raise ValueError(f"{file} is not a variance partial of format {PARTIAL_VERSION}")
    state["path"] = str(file)
    return state


def merge_partials(parts, out, *, device: str = "cpu") -> Path:
    """Merges the partials of one run's draw ranges into the report of the whole run.

    The shards must share every setting but their draw range (and checkpoint and device),
    the graph's parameters and the batch, and their ranges must tile `0 .. draws` without
    overlap or gap; their accumulators are merged in draw order (`merge`: exact up to
    float64 rounding of the merge).

    Args:
        parts: partial folders (or their `partial.pt` files), in any order.
        out: the report folder.
        device: where the report's statistics are formed.

    Returns:
        the path of `report.md`.

    Raises:
        ValueError: one line, naming what differs between shards or which range is missing
            or overlaps.
    """
    from estimator_lab.montecarlo.fastpath import restore_accumulator

    states = sorted((_load_partial(p) for p in parts), key=lambda s: s["config"]["draw_range"])
    if not states:
        raise ValueError("merge needs at least one partial")
    first = states[0]
    for state in states[1:]:
        different = sorted(k for k in first["config"].keys() | state["config"].keys()
                           if k not in _SHARD_FREE
                           and first["config"].get(k) != state["config"].get(k))
        different += [k for k in ("graph_digest", "batch_digest") if first[k] != state[k]]
        if different:
            raise ValueError(f"{state['path']} is from another run than {first['path']} "
                             f"(differs in {', '.join(different)})")
    draws, expected = first["config"]["draws"], 0
    for state in states:
        start, stop = state["config"]["draw_range"]
        if start != expected:
            what = "overlaps the previous range" if start < expected else "leaves a gap after"
            raise ValueError(f"{state['path']}: draws {start}:{stop} {what} {expected}; the "
                             f"partials must tile 0:{draws}")
        expected = stop
    if expected != draws:
        raise ValueError(f"the partials end at draw {expected}, not {draws}: draws "
                         f"{expected}:{draws} are missing")
    started = time.perf_counter()
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in first["config"].items()}
    config = VarianceConfig(**(settings | {"draw_range": None, "checkpoint": None,
                                           "device": device}))
    target = resolve_device(device)
    graph, batch, reference = _problem(config, target)
    if tensor_digest(p for _, p in sorted(graph.state_dict().items())) != first["graph_digest"]:
        raise ValueError(f"{first['path']}: the network rebuilt from its settings has other "
                         "parameters (was the --parameters file changed?)")
    names = list(dict.fromkeys([*config.estimators,
                                *([] if config.graph != "paper" else [REFERENCE])]))
    estimators = {name: prepare_estimator(name, graph, batch, warmup_steps=config.warmup_steps,
                                          seed=config.seed)[0] for name in names}
    runs = {name: restore_accumulator(s, target) for name, s in first["accumulators"].items()}
    for state in states[1:]:
        for name, s in state["accumulators"].items():
            runs[name].merge(restore_accumulator(s, target))
    wall = sum(s["wall_time_s"] for s in states) + time.perf_counter() - started
    return _write_report(config, out, graph, batch, estimators, runs, reference,
                         wall_time_s=wall, device=describe_device(target),
                         merged_from=[s["config"]["draw_range"] for s in states])
