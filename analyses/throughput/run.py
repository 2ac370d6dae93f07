"""Throughput of the Monte Carlo fast path against the generic engine and a naive loop.

Question: on the full paper network (784 -> 400 tanh -> 2000 gates, expert 784 -> 2000, output
10; batch 32; every parameter and the gate logits tracked; float32 draws, float64 moments), how
many gradient draws per second does each way of computing their moments reach, and at what
peak memory?

- `fast`: `estimator_lab.montecarlo.fastpath.fast_moments`, which keeps Gram sums of the
  shared-input layers' output gradients instead of per-draw weight gradients;
- `vmap`: `run_draws`, per-draw gradients of every parameter by `vmap(grad)`;
- `loop`: `run_draws(method="loop")`, one `torch.autograd.grad` per draw through a fresh
  forward pass, stacked by chunks of 32 and folded into the same accumulator;
- `loop-each`: the same with every draw folded into the accumulator on its own (chunks of 1).

Each case runs in a fresh subprocess (its peak resident memory `ru_maxrss` is its own; with
`--quick`, a tiny network, every case in this process): one warm-up chunk, then timed runs
(3, or 1 for the fast path's 10^4 draws and with `--quick`), each reading every moment out.
The fast path runs at 10^3 and 10^4 draws to show that its memory does not grow with the
number of draws. The `vmap` case also checks that the fast path gives the same moments on the
same draws. Writes `reports/throughput/` (results.csv, manifest.json, report.md).

    python analyses/throughput/run.py [--quick] [--out reports/throughput] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SEED = 0
BATCH_SIZE = 32
METHODS = {  # name: (run_draws method or "fast", chunk size, description)
    "fast": ("fast", 64, "fast_moments: Gram sums of the shared-input layers' output gradients"),
    "vmap": ("vmap", 32, "run_draws: vmap(grad) per-draw gradients of every parameter"),
    "loop": ("loop", 32, "run_draws(method='loop'): one autograd.grad per draw, folded into "
                         "the accumulator by chunks of 32 (the engine's loop path)"),
    "loop-each": ("loop", 1, "the same loop, every draw folded into the accumulator on its "
                             "own (the most naive)"),
}
# Per method, (draws, timed repeats): the fast path's 10^4 draws show its memory is flat.
FULL = {"estimators": ["reinforce", "st"], "fast": [(1_000, 3), (10_000, 1)],
        "vmap": [(256, 3)], "loop": [(64, 3)], "loop-each": [(32, 3)]}
QUICK = {"estimators": ["st"], "fast": [(64, 1), (256, 1)], "vmap": [(32, 1)],
         "loop": [(8, 1)], "loop-each": [(4, 1)]}
QUICK_CONFIG = {"num_inputs": 20, "num_gater_hidden": 6, "num_gates": 12, "num_classes": 4}


def problem(quick: bool, device: str):
    """The seeded network and a seeded float32 batch of inputs uniform in `[0, 1)`."""
    import torch

    from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork

    config = ConditionalConfig(**QUICK_CONFIG) if quick else ConditionalConfig()
    generator = torch.Generator().manual_seed(SEED)
    graph = ConditionalNetwork(config, generator)
    x = torch.rand(BATCH_SIZE, config.num_inputs, generator=generator)
    y = torch.randint(0, config.num_classes, (BATCH_SIZE,), generator=generator)
    return graph.to(device), (x.to(device), y.to(device))


def moments(method: str, graph, estimators, batch, num_draws: int) -> dict:
    """The moments of every tracked tensor by one method, read out."""
    from estimator_lab.montecarlo import run_draws
    from estimator_lab.montecarlo.fastpath import fast_moments

    kind, chunk, _ = METHODS[method]
    if kind == "fast":
        runs = fast_moments(graph, estimators, batch, num_draws=num_draws, seed=SEED,
                            chunk_size=chunk)
    else:
        runs = run_draws(graph, estimators, batch, num_draws=num_draws, seed=SEED,
                         chunk_size=chunk, method=kind)
    return {name: accumulator.compute() for name, accumulator in runs.items()}


def relative_gaps(a: dict, b: dict) -> tuple[float, float]:
    """The largest `max|a - b| / max|b|` over tracked tensors, for means and variances."""
    def gap(x, y):
        return float((x - y).abs().max()) / max(float(y.abs().max()), 1e-300)

    return (max(gap(a[k].mean, b[k].mean) for k in b),
            max(gap(a[k].variance, b[k].variance) for k in b))


def measure(method: str, estimator: str, num_draws: int, repeats: int, quick: bool,
            device: str) -> dict:
    """Runs in the child: warms up on one chunk, then times `repeats` runs of the draws."""
    import os

    import torch

    from estimator_lab.estimators import get_estimator

    graph, batch = problem(quick, device)
    estimators = {estimator: get_estimator(estimator)}
    moments(method, graph, estimators, batch, METHODS[method][1])  # warm-up
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = moments(method, graph, estimators, batch, num_draws)[estimator]
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    row = {
        "method": method, "estimator": estimator, "draws": num_draws,
        "chunk_size": METHODS[method][1], "repeats": repeats, "best_seconds": min(seconds),
        "median_seconds": statistics.median(seconds),
        "draws_per_second": num_draws / min(seconds),
        "median_draws_per_second": num_draws / statistics.median(seconds),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan"),
        "coordinates": sum(m.mean.numel() for m in result.values()),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],  # other processes on the machine slow a case
        "fast_mean_gap": float("nan"), "fast_variance_gap": float("nan"),
    }
    if method == "vmap":  # the same draws by the fast path
        fast = moments("fast", graph, estimators, batch, num_draws)[estimator]
        row["fast_mean_gap"], row["fast_variance_gap"] = relative_gaps(fast, result)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/throughput")
    parser.add_argument("--quick", action="store_true",
                        help="tiny network, few draws, every case in this process")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu'")
    parser.add_argument("--child", metavar="METHOD:ESTIMATOR:DRAWS:REPEATS",
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, estimator, draws, repeats = args.child.split(":")
        print(json.dumps(measure(method, estimator, int(draws), int(repeats), False,
                                 args.device)))
        return

    import pandas as pd

    from estimator_lab.device import describe_device, resolve_device
    from estimator_lab.reporting import run_manifest, staged_directory

    device = resolve_device(args.device)
    plan = QUICK if args.quick else FULL
    cases = [f"{method}:{estimator}:{draws}:{repeats}" for estimator in plan["estimators"]
             for method in METHODS for draws, repeats in plan[method]]
    # One process per case, so that each peak memory is its own (quick: this process).
    started = time.perf_counter()
    rows = []
    for case in cases:
        if args.quick:
            method, estimator, draws, repeats = case.split(":")
            rows.append(measure(method, estimator, int(draws), int(repeats), True,
                                str(device)))
        else:
            command = [sys.executable, __file__, "--device", str(device), "--child", case]
            child = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"{case}: {rows[-1]['draws_per_second']:.1f} draws/s", file=sys.stderr)
    results = pd.DataFrame(rows)
    manifest = run_manifest(seed=SEED, device=describe_device(device),
                            wall_time_s=time.perf_counter() - started, study="throughput",
                            quick=args.quick, batch_size=BATCH_SIZE,
                            methods={m: {"kind": k, "chunk_size": c}
                                     for m, (k, c, _) in METHODS.items()},
                            plan=plan, command=" ".join(sys.argv))
    report = render(results, speedups(results), manifest, args.quick)
    with staged_directory(args.out) as stage:
        results.to_csv(stage / "results.csv", index=False)
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        (stage / "report.md").write_text(report)
    print(f"report written to {Path(args.out) / 'report.md'}")


def speedups(results):
    """Per estimator: each method's draws per second and the fast path's ratios to them.

    Each method is taken where it is timed most often, then at its most draws (the fast path
    at 10^3 draws, 3 repeats); the rates are the best of the repeats, the `median` ratio columns
    from the medians.
    """
    import pandas as pd

    rows = []
    for estimator, group in results.groupby("estimator", sort=False):
        last = group.sort_values(["repeats", "draws"]).groupby("method").last()
        row = {"estimator": estimator}
        row |= {method: last.loc[method, "draws_per_second"] for method in METHODS}
        for method in list(METHODS)[1:]:
            row[f"fast / {method}"] = row["fast"] / row[method]
            row[f"fast / {method} (median)"] = (last.loc["fast", "median_draws_per_second"]
                                               / last.loc[method, "median_draws_per_second"])
        rows.append(row)
    return pd.DataFrame(rows)


def render(results, ratios, manifest, quick: bool) -> str:
    """The Markdown report."""
    from estimator_lab.reporting import markdown_table

    network = ("a tiny network (" + ", ".join(f"{k}={v}" for k, v in QUICK_CONFIG.items())
               + ")" if quick else "the full paper network (2,706,010 parameters)")
    isolation = ("Quick mode: every case runs in one process (its peak memory is cumulative)"
                 if quick else "Each case runs in a fresh process")
    rates = ratios[["estimator", *METHODS]]
    ratio_columns = [c for c in ratios.columns if c.startswith("fast /")]
    table = results[["method", "estimator", "draws", "chunk_size", "repeats", "best_seconds",
                     "median_seconds", "draws_per_second", "peak_rss_mib", "peak_cuda_mib"]]
    fast = results[results["method"] == "fast"]
    memory = fast.pivot(index="estimator", columns="draws", values="peak_rss_mib")
    memory.columns = [f"peak_rss_mib at {c:,} draws" for c in memory.columns]
    agreement = results[results["method"] == "vmap"][
        ["estimator", "draws", "fast_mean_gap", "fast_variance_gap"]]
    methods = "\n".join(f"- `{m}` (chunks of {c}): {d}" for m, (_, c, d) in METHODS.items())
    return f"""# Monte Carlo throughput: fast path, vmap and loop

**Question.** How many gradient draws per second, with the moments of the gate logits and of
every parameter, does each method reach on {network}, batch {BATCH_SIZE}, float32 draws and
float64 moments, and at what peak memory?

**Setup.** {manifest["device"]}; {manifest["platform"]}, torch
{manifest["versions"]["torch"]}. Seeded parameters and inputs uniform in `[0, 1)` (seed
{SEED}). {isolation}: one warm-up chunk, then `repeats` timed runs, each covering noise,
gradients, accumulation and reading every moment out. Rates are the best of the repeats
(the ratios below take each method where it was repeated most): other processes may share
the machine (`load_average` in `results.csv`, the 1-minute
load at the end of each case); medians are in `results.csv` and the ratio table.

{methods}

## Draws per second (best of the repeats)

{markdown_table(rates)}

## Speed-up of the fast path

{markdown_table(ratios[["estimator", *ratio_columns]])}

## Every case

{markdown_table(table)}

`peak_rss_mib` is the process's peak resident memory (Python and PyTorch included);
`peak_cuda_mib` the peak CUDA memory allocated (on a GPU).

## Memory of the fast path against the number of draws

{markdown_table(memory.reset_index())}

## Agreement with the generic path

The fast path's moments on the same draws (same seed) as `vmap`: the largest
`max|fast - vmap| / max|vmap|` over tracked tensors, for the means and the variances. The
draws are float32, and the generic path sums each chunk in float32 before merging in float64
while the fast path forms its Gram sums in float64, so gaps around 1e-6 are float32 rounding;
in float64 the two agree to ~1e-15 (`tests/montecarlo/test_fastpath.py`).

{markdown_table(agreement)}

```
python analyses/throughput/run.py{" --quick" if quick else ""}
```
"""


if __name__ == "__main__":
    main()
