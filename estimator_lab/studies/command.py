"""`estimator-lab run STUDY [--quick] [--out DIR]`: the studies of `analyses/`, by name.

Each study is a function `run(out, *, quick, seed, progress) -> Path` (the report file) in its
own module; `--quick` is the tiny configuration that finishes on a 2-core CPU in minutes and is
smoke tested, the default is the full run whose report is committed under `reports/`.
"""

from __future__ import annotations

import argparse
import importlib
import time

from estimator_lab.arguments import add_seed_argument, format_duration

STUDIES = {
    "bias_small_graphs": ("estimator_lab.studies.bias_small_graphs:run",
                          "every estimator on a suite of small graphs against exact truth"),
    "optimal_baseline": ("estimator_lab.studies.optimal_baseline:run",
                         "variance reduction of the Eq. 10 baseline, exact and on MNIST"),
    "mnist_variance": ("estimator_lab.studies.mnist_variance:run",
                       "every estimator on the full network through training"),
    "paper_table": ("estimator_lab.studies.paper_table:run",
                    "the paper's seven gaters: table and learning curves"),
}
"""Study name -> (`module:function`, one-line question)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `estimator-lab run`."""
    parser.add_argument("study", metavar="STUDY", help="one of " + ", ".join(STUDIES))
    parser.add_argument("--quick", action="store_true",
                        help="tiny configuration (minutes on a CPU), for smoke tests")
    parser.add_argument("--out", default=None, help="report folder (default: reports/STUDY, "
                        "or reports/STUDY-quick with --quick)")
    add_seed_argument(parser, "seeds the study's graphs, data subsets and draws")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def main(args: argparse.Namespace) -> None:
    """Runs the named study and prints where its report is."""
    if args.study not in STUDIES:
        raise KeyError(f"unknown study {args.study!r}; choose one of {', '.join(STUDIES)}")
    started = time.perf_counter()
    target, _ = STUDIES[args.study]
    module, function = target.split(":")
    out = args.out or f"reports/{args.study}{'-quick' if args.quick else ''}"
    run = getattr(importlib.import_module(module), function)
    report = run(out, quick=args.quick, seed=args.seed, progress=not args.quiet)
    print(f"report written to {report} in {format_duration(time.perf_counter() - started)}")
