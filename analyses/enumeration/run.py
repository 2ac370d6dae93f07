"""Benchmark of exact enumeration: configurations per second and peak memory.

Question: how fast does `exact_gradient` sweep 2^20 gate configurations (expected loss and its
gradient for every parameter, float64) on this machine, for a sigmoid belief net and for a
conditional network on MNIST, and how does the chunk size trade speed for memory?

Each case runs in a fresh subprocess so its peak resident memory (`ru_maxrss`) is its own.
Writes `reports/enumeration/` (results.csv, manifest.json, report.md).

    python analyses/enumeration/run.py [--quick] [--out reports/enumeration]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

CASES = {
    # name: (spec or builder, description)
    "sbn:5-5-5-5": "sigmoid belief net, 4 layers of 5 gates, 8 inputs, batch 2",
    "conditional-20": "paper network shrunk to 20 gates (8 gater units), 784 inputs, 2 MNIST "
                      "validation images",
    "tiny-conditional:gates=16": "paper network shrunk to 16 gates (8 gater units), 4 images",
}


def measure(case: str, chunk_size: int) -> dict:
    """Runs in the child: builds the case, sweeps it once to warm up, then times one sweep."""
    import torch

    from estimator_lab.exact import exact_gradient
    from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork
    from estimator_lab.graphs.specs import build_problem

    if case == "conditional-20":
        problem = build_problem("tiny-conditional:gates=16,batch=2", seed=0)
        graph = ConditionalNetwork(ConditionalConfig(num_gater_hidden=8, num_gates=20),
                                   torch.Generator().manual_seed(0)).double()
        batch = problem.batch
    else:
        problem = build_problem(case, seed=0)
        graph, batch = problem.graph, problem.batch
    exact_gradient(graph, batch, chunk_size=chunk_size)  # warm-up (allocator, kernels)
    start = time.perf_counter()
    exact_gradient(graph, batch, chunk_size=chunk_size)
    seconds = time.perf_counter() - start
    configurations = 2**graph.num_gates
    return {
        "case": case,
        "gates": graph.num_gates,
        "examples": batch[0].shape[0],
        "configurations": configurations,
        "chunk_size": chunk_size,
        "seconds": seconds,
        "configurations_per_second": configurations / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/enumeration")
    parser.add_argument("--quick", action="store_true", help="small chunk sweep, for smoke tests")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return

    from estimator_lab.reporting import markdown_table, run_manifest, staged_directory

    started = time.perf_counter()
    cases = ["sbn:2-2"] if args.quick else list(CASES)
    chunks = [256] if args.quick else [2**12, 2**14, 2**16]
    rows = []
    for case in cases:
        for chunk in chunks:
            child = subprocess.run(
                [sys.executable, __file__, "--child", case, str(chunk)],
                capture_output=True, text=True, check=True,
            )
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(f"{case} chunk {chunk}: {rows[-1]['seconds']:.2f} s", file=sys.stderr)
    results = pd.DataFrame(rows)
    manifest = run_manifest(seed=0, device="cpu", wall_time_s=time.perf_counter() - started,
                            study="enumeration", quick=args.quick)
    table = results[["case", "gates", "examples", "configurations", "chunk_size", "seconds",
                     "configurations_per_second", "peak_rss_mib"]]
    descriptions = "\n".join(f"- `{c}`: {CASES.get(c, 'smoke-test case')}" for c in cases)
    report = f"""# Exact enumeration: speed and memory

**Question.** How fast does `estimator_lab.exact.exact_gradient` sweep every gate configuration
(expected loss and the gradient of every parameter, float64, autograd through the weighted sum)
on this machine, and what does the chunk size cost in memory?

**Setup.** One warm-up sweep, then one timed sweep per case and chunk size, each case in a
fresh process (peak resident memory is the process's, Python and PyTorch included);
{manifest["platform"]}, {results["threads"].iloc[0]} threads, torch
{manifest["versions"]["torch"]}.

{descriptions}

{markdown_table(table)}

`configurations` counts one example's gate configurations; each is evaluated for every
example of the batch.

```
python analyses/enumeration/run.py
```
"""
    with staged_directory(args.out) as stage:
        results.to_csv(stage / "results.csv", index=False)
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        (stage / "report.md").write_text(report)
    print(f"report written to {Path(args.out) / 'report.md'}")


if __name__ == "__main__":
    main()
