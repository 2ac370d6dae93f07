"""`estimator-lab merge PART... --out DIR`: the report of a variance run drawn in shards.

Each shard is `estimator-lab variance ... --draw-range START:STOP --out PART` (the same
settings but the range; a SLURM job array gives task `i` the range `i*n/N:(i+1)*n/N`). The
merge checks that the shards belong to one run and tile its draws, merges their accumulators
exactly and writes the tables and report of a single run.
"""

from __future__ import annotations

import argparse
import time

from estimator_lab.arguments import format_duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `estimator-lab merge` (no torch imported)."""
    parser.add_argument("parts", metavar="PART", nargs="+",
                        help="partial folders written by variance --draw-range")
    parser.add_argument("--out", required=True, help="report folder, replaced whole on success")
    parser.add_argument("--device", default="cpu", help="where the statistics are formed "
                        "(default: cpu)")


def main(args: argparse.Namespace) -> None:
    """Merges the partials and prints where the report is."""
    from estimator_lab.studies.variance import merge_partials

    started = time.perf_counter()
    report = merge_partials(args.parts, args.out, device=args.device)
    print(f"report written to {report} in {format_duration(time.perf_counter() - started)}")
