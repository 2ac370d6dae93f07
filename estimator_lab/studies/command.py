"""`estimator-lab run STUDY [--quick] [--out DIR]`: the studies of `analyses/`, by name.

The studies are those of the registry (`studies.protocol.STUDIES`) written by this command
(`command == "run"`): each module has a `FULL` configuration, the default, whose report is
committed under `reports/`, and a `QUICK` one (`--quick`), the tiny configuration that
finishes on a 2-core CPU in minutes and is smoke tested.
"""

from __future__ import annotations

import argparse
import time
from types import MappingProxyType

from estimator_lab.arguments import add_seed_argument, format_duration
from estimator_lab.studies.protocol import STUDIES as REGISTRY

STUDIES = MappingProxyType({name: study for name, study in REGISTRY.items()
                            if study.command == "run"})
"""Study name -> `Study`: the studies of the registry that `estimator-lab run` runs."""


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
    study = STUDIES[args.study]
    out = args.out or f"reports/{args.study}{'-quick' if args.quick else ''}"
    config = study.preset(quick=args.quick, seed=args.seed)
    report = study.run(config, out, progress=not args.quiet)
    print(f"report written to {report} in {format_duration(time.perf_counter() - started)}")
