"""The paper's experiment: seven gaters on MNIST, its table side by side, and learning curves.

`estimator-lab run paper_table` trains (or resumes) every configuration of `PAPER_GATERS` into
`runs/paper/<gater>-seed<S>` (the folders `estimator-lab train` writes), then writes the report:
`table.csv` (ours at the best validation epoch next to the paper's figures), `curves.csv` (every
epoch of every run), `gate_usage.csv` (training against test-time gates of each thresholded
gater's best network, `estimator_lab.train.gate_usage`), `sparse.csv` (dense against sparse
test-time evaluation of the same networks), the learning-curve figure,
`report.md`/`.html`/`tables.tex` and `manifest.json`. `paper_table_report` builds the same report
from run folders as they stand (finished or not), without training.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from estimator_lab.data import mnist  # noqa: E402
from estimator_lab.device import describe_device, resolve_device  # noqa: E402
from estimator_lab.graphs import ConditionalNetwork  # noqa: E402
from estimator_lab.reporting import Report, run_manifest  # noqa: E402
from estimator_lab.serialization import safe_load  # noqa: E402
from estimator_lab.studies.protocol import STUDIES  # noqa: E402
from estimator_lab.train.gate_usage import gate_usage  # noqa: E402
from estimator_lab.train.gaters import PAPER_GATERS  # noqa: E402
from estimator_lab.train.sparse import time_sparse_inference  # noqa: E402
from estimator_lab.train.trainer import (  # noqa: E402
    TrainConfig,
    build_network,
    load_run,
    train_gater,
)

WITHIN_PP = 0.5
"""The issue's bar: a test error within this many percentage points of the paper's, or better."""


@dataclass(frozen=True)
class PaperTableConfig:
    """Settings of the study.

    Attributes:
        seeds: one run per gater and seed.
        max_epochs, patience: the stopping rule of every run (see `TrainConfig`).
        train_size, eval_size: data subsets (`None`: the full splits).
        runs_dir: where the run folders live (resumed if present).
        sparse_examples: test images timed one by one, dense and sparse.
        gaters: the configurations (keys of `PAPER_GATERS`).
        device: `"auto"`, `"cpu"`, `"cuda"`, ...
    """

    seeds: tuple[int, ...] = (0,)
    max_epochs: int = 100
    patience: int = 30
    train_size: int | None = None
    eval_size: int | None = None
    runs_dir: str = "runs/paper"
    sparse_examples: int = 1000
    gaters: tuple[str, ...] = tuple(PAPER_GATERS)
    device: str = "auto"

    def train_config(self, gater: str, seed: int) -> TrainConfig:
        return TrainConfig(
            gater=gater, seed=seed, max_epochs=self.max_epochs, patience=self.patience,
            train_size=self.train_size, eval_size=self.eval_size,
            device=str(resolve_device(self.device)),
        )

    def run_folder(self, gater: str, seed: int) -> Path:
        return Path(self.runs_dir) / f"{gater}-seed{seed}"


FULL = PaperTableConfig()
QUICK = PaperTableConfig(max_epochs=2, patience=2, train_size=320, eval_size=200,
                         runs_dir="runs/paper-quick", sparse_examples=50)


def run_paper_table(config: PaperTableConfig, out: str | Path, *, progress: bool = True) -> Path:
    """Trains or resumes every (gater, seed) run, then writes the report folder `out`."""
    for gater in config.gaters:
        for seed in config.seeds:
            train_gater(config.train_config(gater, seed), config.run_folder(gater, seed),
                        progress=progress)
    return paper_table_report(config, out)


def paper_table_report(config: PaperTableConfig, out: str | Path) -> Path:
    """Writes the report from the run folders as they stand; returns the `report.md` path."""
    started = time.perf_counter()
    runs = {(g, s): load_run(config.run_folder(g, s)) for g in config.gaters for s in config.seeds}
    curves = pd.concat([r.log.assign(gater=g, seed=s) for (g, s), r in runs.items()],
                       ignore_index=True)
    table = _table(config, runs)
    sparse = _sparse_frame(config)
    usage = _gate_usage_frame(config)
    manifest = run_manifest(
        seed=list(config.seeds), device=describe_device(torch.device("cpu")),
        wall_time_s=time.perf_counter() - started, study="paper_table", config=asdict(config),
        training_seconds=round(float(curves["epoch_seconds"].sum()), 1),
    )
    tables = {"table": table, "curves": curves, "sparse": sparse, "gate_usage": usage}
    return STUDIES["paper_table"].write(out, config, tables, manifest)


def _table(config: PaperTableConfig, runs: dict) -> pd.DataFrame:
    rows = []
    for gater in config.gaters:
        settings = PAPER_GATERS[gater]
        results = [runs[gater, s] for s in config.seeds]
        best = [r.log.set_index("epoch").loc[r.best_epoch] for r in results]
        test = pd.Series([r.test_error for r in results])
        rows.append({
            "gater": settings.label,
            "paper_train": settings.paper[0], "paper_valid": settings.paper[1],
            "paper_test": settings.paper[2],
            "train": pd.Series([b["train_loss"] for b in best]).mean(),
            "valid": pd.Series([r.valid_error for r in results]).mean(),
            "test": test.mean(),
            "test_sd": test.std() if len(results) > 1 else float("nan"),
            "test_minus_paper_pp": test.mean() - settings.paper[2],
            "within_0.5pp": bool(test.mean() <= settings.paper[2] + WITHIN_PP),
            "best_epoch": results[0].best_epoch,
            "epochs_run": int(results[0].log["epoch"].max()),
            "stopped_early": results[0].stopped_early,
            "median_epoch_s": float(results[0].log["epoch_seconds"].iloc[1:].median()),
        })
    return pd.DataFrame(rows)


def _best_network(config: PaperTableConfig, gater: str) -> tuple[ConditionalNetwork, float]:
    """The first seed's best network of `gater` and its test-time threshold."""
    best = safe_load(config.run_folder(gater, config.seeds[0]) / "best.pt", what="run file")
    net = build_network(TrainConfig(gater))
    net.load_state_dict(best["state"])
    return net, best["threshold"]


def _gate_usage_frame(config: PaperTableConfig) -> pd.DataFrame:
    images, labels = mnist("valid").tensors()
    images, labels = images[: config.eval_size], labels[: config.eval_size]
    rows = []
    for gater in config.gaters:
        settings = PAPER_GATERS[gater]
        if settings.thresholded:
            net, threshold = _best_network(config, gater)
            usage = gate_usage(net, settings, images, labels, threshold, seed=config.seeds[0])
            rows.append({"gater": settings.label, **asdict(usage)})
    return pd.DataFrame(rows)


def _sparse_frame(config: PaperTableConfig) -> pd.DataFrame:
    images, labels = mnist("test").tensors()
    x = images[: config.sparse_examples]
    rows = []
    for gater in config.gaters:
        settings = PAPER_GATERS[gater]
        if not settings.thresholded:
            continue
        net, threshold = _best_network(config, gater)
        timing = time_sparse_inference(net, settings, x, threshold)
        rows.append({"gater": settings.label, **asdict(timing),
                     "madds_ratio": timing.madds_ratio, "time_ratio": timing.time_ratio})
    return pd.DataFrame(rows)


def _curves_figure(curves: pd.DataFrame) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for gater, frame in curves[curves["epoch"] > 0].groupby("gater", sort=False):
        mean = frame.groupby("epoch")["valid_error"].mean()
        axis.plot(mean.index, mean.values, label=PAPER_GATERS[gater].label)
    axis.set_yscale("log")
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation error (%)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, which="both")
    figure.tight_layout()
    return figure


def report_from_tables(config: PaperTableConfig, table: pd.DataFrame, curves: pd.DataFrame,
                       sparse: pd.DataFrame, usage: pd.DataFrame, manifest: dict) -> Report:
    """The report from the saved tables (`table.csv`, `curves.csv`, `sparse.csv`,
    `gate_usage.csv`) and the manifest; the figure is drawn from `curves`."""
    within = table[table["within_0.5pp"]]["gater"].tolist()
    st, sbn = (table.set_index("gater").loc[PAPER_GATERS[g].label, "test"]
               for g in ("straight-through", "sbn"))
    report = Report("The paper's conditional-computation experiment (Bengio et al. 2013, §5)",
                    manifest)
    report.add_text(f"""
Seven gaters of the paper's network (784 → 400 tanh → 2000 gates; linear expert 784 → 2000;
output 2000 → 10), trained on the 50,000 MNIST training images with minibatches of 32 and
stopped on validation error (at most {config.max_epochs} epochs, patience {config.patience}),
seeds {list(config.seeds)}. Errors are measured with deterministic gates, the threshold set on
the validation set so that 10 % of the gates are on (sigmoid baselines: no threshold). The
settings and every choice the paper leaves open are in `estimator_lab/train/gaters.py`. The
train criterion is our mean training cross-entropy at the sampled gates over the best epoch.
`median_epoch_s` is the wall-clock of the runs as they were made (training and evaluation,
sharing the machine with other runs); `analyses/paper_table/epoch_time.py` measures the epoch
time of each gater alone.
""")
    report.add_section("Headline", (
        f"Within {WITHIN_PP} pp of the paper's test error (or better): "
        f"{len(within)} of {len(table)} ({', '.join(within) or 'none'}). "
        f"Straight-through {st:.2f} % against the stochastic binary neuron {sbn:.2f} % "
        f"({'the paper' if st < sbn else 'not the paper'}'s ordering, ST better)."))
    report.add_table(table, "Ours against the paper (errors in %; train = cross-entropy)")
    report.add_figure(_curves_figure(curves), "Validation error per epoch (the paper's Figure 2, "
                      "left)", name="learning_curves")
    if len(usage):
        report.add_section("Do the test-time gates pick the units training used?", (
            "Each thresholded gater's best network on the validation set "
            "(`estimator_lab/train/gate_usage.py`): the error with the thresholded test-time "
            "gates, the error with one draw of the training gates, and `agreement`, the "
            "fraction of the test-time-on (example, unit) pairs that are also on in that draw. "
            "A decisive gater (each unit on with probability near 1 for some inputs, near 0 "
            "for the rest) has agreement near 1; an indecisive one (every unit on with "
            "probability near the 10 % target whatever the input) near 0.1, and its "
            "thresholded selection is close to arbitrary. `selection_overlap` is the expected "
            "share of one example's test-time-on units also on for another example: 1 when "
            "every input selects the same units (the expert path is linear, so that network "
            "would be a linear classifier), about 0.1 when the selection varies fully with the "
            "input."))
        report.add_table(usage, "Training gates against test-time gates (validation, %)")
    if len(sparse):
        report.add_section("Conditional computation at test time", (
            "Each thresholded gater's best network evaluated one test image at a time, dense "
            "(every expert unit) and sparse (only the expert units whose gate is on; "
            "`estimator_lab/train/sparse.py`), on "
            f"{describe_device(torch.device('cpu'))}: multiply-adds per example and the median "
            "wall-clock milliseconds per example over 3 passes; the scores agree to "
            f"{sparse['max_abs_difference'].max():.1e}. The gater (784 × 400 + 400 × 2000 "
            "multiply-adds) stays dense, so 10 % activity can at most halve the work; at "
            "batch size 1 on a CPU the per-example indexing of the sparse path costs about "
            "as much as it saves (`time_ratio` = dense / sparse)."))
        report.add_table(sparse, "Dense against sparse evaluation at the learned gate density")
    report.add_text("""
```
estimator-lab run paper_table                 # trains or resumes runs/paper/*, then reports
estimator-lab train straight-through --epochs 100 --patience 30  # one run
```
""")
    return report
