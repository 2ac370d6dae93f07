"""Epoch time of the paper network on this machine, per gater, against a bare SGD step.

Question: how long does one epoch of the paper's experiment (50,000 images, minibatch 32,
1,562 steps, then the end-of-epoch evaluation) take for each of the seven gaters, and what
does each gater's machinery (noise, sparsity criterion, max-norm, the SBN's REINFORCE surrogate
and baseline update) cost over a bare SGD step of the same network?

For each gater and thread count, uncontended and in this one process: `steps` training steps
of `TrainingRun.train_epoch` on synthetic images (uniform in [0, 1), random labels: the work
does not depend on the pixel values) after one warm-up pass, and the end-of-epoch evaluation
(threshold tuning on the validation images, then evaluation on validation and test, 10,000
each). Epoch time = 1,562 x (median step time over `repeats` passes) + evaluation time.
The baseline, measured in the same run at the same thread count, is a bare SGD step of the
2000-gate network with every gate fixed at 1 (forward, mean cross-entropy, backward, step; no
noise, no penalty, no max-norm). With constant gates no gradient reaches the gater, so the
bare step skips the gater's backward pass (two of its six backward matrix products), which
every gater pays. Writes `reports/epoch_time/` (results.csv, manifest.json, report.md).

    python analyses/paper_table/epoch_time.py [--quick] [--out reports/epoch_time] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from estimator_lab.graphs import ConditionalNetwork
from estimator_lab.reporting import markdown_table, run_manifest, staged_directory
from estimator_lab.train.gaters import PAPER_GATERS
from estimator_lab.train.trainer import (
    TrainConfig,
    TrainingRun,
    evaluate,
    tune_threshold,
)

SEED = 0
BATCH_SIZE = 32
STEPS_PER_EPOCH = 50_000 // BATCH_SIZE
FULL = {"steps": 200, "repeats": 3, "eval_size": 10_000, "gaters": tuple(PAPER_GATERS)}
QUICK = {"steps": 3, "repeats": 1, "eval_size": 64,
         "gaters": ("straight-through", "baseline-sigmoid")}


def synthetic(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images uniform in [0, 1) (`n x 784`) and uniform labels (`n`)."""
    return torch.rand(n, 784, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def median_seconds(work, repeats: int) -> float:
    """Median wall-clock seconds of `repeats` calls of `work()`, after one warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_step_seconds(data, steps: int, repeats: int) -> float:
    """Seconds per bare SGD step of the 2000-gate network with every gate on."""
    net = ConditionalNetwork(generator=torch.Generator().manual_seed(SEED))
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    images, labels = data

    def work() -> None:
        for step in range(steps):
            batch = slice(step * BATCH_SIZE, (step + 1) * BATCH_SIZE)
            prepared = net.prepare((images[batch], labels[batch]))
            loss = net.loss(prepared, torch.ones_like(prepared.logits)).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

    return median_seconds(work, repeats) / steps


def gater_seconds(gater: str, data, evaluation, steps: int, repeats: int) -> tuple[float, float]:
    """Seconds per training step of `gater` and seconds of one end-of-epoch evaluation."""
    run = TrainingRun(TrainConfig(gater, seed=SEED), torch.device("cpu"))
    step = median_seconds(lambda: run.train_epoch(data, epoch=1), repeats) / steps
    (valid_x, valid_y), (test_x, test_y) = evaluation

    def evaluate_epoch() -> None:
        threshold = tune_threshold(run.net, run.gater, valid_x)
        evaluate(run.net, run.gater, valid_x, valid_y, threshold)
        evaluate(run.net, run.gater, test_x, test_y, threshold)

    return step, median_seconds(evaluate_epoch, repeats)


def measure(settings: dict, threads: list[int]) -> pd.DataFrame:
    """One row per (threads, gater): step and evaluation seconds, epoch seconds, ratio."""
    generator = torch.Generator().manual_seed(SEED)
    data = synthetic(settings["steps"] * BATCH_SIZE, generator)
    evaluation = (synthetic(settings["eval_size"], generator),
                  synthetic(settings["eval_size"], generator))
    rows = []
    for count in threads:
        torch.set_num_threads(count)
        bare = bare_step_seconds(data, settings["steps"], settings["repeats"])
        for gater in settings["gaters"]:
            step, evaluation_s = gater_seconds(gater, data, evaluation, settings["steps"],
                                               settings["repeats"])
            rows.append({
                "threads": count, "gater": gater, "gates": PAPER_GATERS[gater].num_gates,
                "step_ms": 1e3 * step, "bare_step_ms": 1e3 * bare,
                "step_over_bare": step / bare, "evaluation_s": evaluation_s,
                "epoch_s": STEPS_PER_EPOCH * step + evaluation_s,
            })
            print(f"{count} thread(s) {gater}: {1e3 * step:.2f} ms/step "
                  f"({step / bare:.2f}x bare), epoch {rows[-1]['epoch_s']:.1f} s", flush=True)
    return pd.DataFrame(rows)


def render(results: pd.DataFrame, manifest: dict) -> str:
    """The Markdown report."""
    table = markdown_table(results)
    return f"""# Epoch time of the paper network

{manifest['device']}, at the thread count of each row; {manifest['steps']} timed training
steps per gater (median of {manifest['repeats']} passes, after a warm-up pass), synthetic
data, nothing else running in this process. `epoch_s` = {STEPS_PER_EPOCH} x `step_ms` +
`evaluation_s` (threshold tuning on {manifest['eval_size']} validation images, evaluation on
validation and test). `bare_step_ms` is an SGD step of the 2000-gate network with every gate
fixed at 1, timed in the same run: no gradient reaches the gater, so it also leaves out the
gater's backward pass that the gaters pay (`step_over_bare` is the gater's step against it;
the 200-unit sigmoid baselines are cheaper than the bare 2000-gate step).

{table}

```
python analyses/paper_table/epoch_time.py{' --quick' if manifest['quick'] else ''}
```
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/epoch_time")
    parser.add_argument("--quick", action="store_true", help="3 steps, 2 gaters: a smoke run")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if min(args.threads) < 1:
        parser.error("--threads must be >= 1")
    settings = QUICK if args.quick else FULL
    started = time.perf_counter()
    results = measure(settings, args.threads)
    manifest = run_manifest(
        seed=SEED, device=f"cpu, {os.cpu_count()} cores ({platform.processor() or 'unknown'})",
        wall_time_s=time.perf_counter() - started, quick=args.quick, threads=args.threads,
        **{k: v for k, v in settings.items() if k != "gaters"},
    )
    with staged_directory(args.out) as stage:
        results.to_csv(stage / "results.csv", index=False)
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        (stage / "report.md").write_text(render(results, manifest))
    print(f"report written to {Path(args.out) / 'report.md'}")


if __name__ == "__main__":
    main()
