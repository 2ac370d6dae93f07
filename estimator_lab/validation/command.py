"""`estimator-lab validate TARGET`: the validation battery and its report card.

TARGET: a registered name, `module:Class`, or `path/to/file.py[:Class]`. Prints one verdict
line per check, writes the report card to `--out`, and exits with status 1 when a check fails
(2 for bad input). A categorical estimator (a name only the categorical registry holds, a
`CategoricalEstimator` class, or any categorical name with `--gates categorical`) gets the
categorical suite (`CATEGORICAL_BUDGETS`); a name in both registries means the Bernoulli one.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from estimator_lab.arguments import add_seed_argument, format_duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `estimator-lab validate`."""
    parser.add_argument("target", metavar="TARGET",
                        help="registered name, module:Class, or path/to/file.py[:Class]")
    parser.add_argument("--budget", default="quick", choices=["quick", "standard", "thorough"],
                        help="work per check (default: %(default)s, minutes on a 2-core CPU)")
    parser.add_argument("--gates", default=None, choices=["bernoulli", "categorical"],
                        help="the registry a TARGET name is taken from (default: Bernoulli, "
                             "categorical for a name only it has, e.g. indecater); "
                             "categorical targets get the categorical suite (cat-toy graphs)")
    parser.add_argument("--graphs", default=None,
                        help="small-graph specs separated by ';' (default: the budget's), "
                             "e.g. 'toy:n=4,t=0.45;sbn:3-2', or 'cat-toy:n=3,k=4,t=0.3' for a "
                             "categorical target")
    parser.add_argument("--out", default=None,
                        help="report card folder (default: reports/validate/TARGET, "
                             "reports/validate/TARGET-categorical for a categorical target, "
                             "TARGET with characters other than letters, digits, '_.-' "
                             "replaced by _)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ... "
                             "(default: %(default)s)")
    add_seed_argument(parser, "seeds every check of the battery")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> None:
    """Runs the battery, prints the verdicts and writes the report card."""
    import re

    from estimator_lab.device import resolve_device
    from estimator_lab.graphs.specs import build_problem
    from estimator_lab.validation.battery import validate, write_report_card
    from estimator_lab.validation.budget import BUDGETS, CATEGORICAL_BUDGETS
    from estimator_lab.validation.target import resolve_target

    started = time.perf_counter()
    if args.graphs is not None:
        graphs = tuple(s.strip() for s in args.graphs.split(";") if s.strip())
        for spec in graphs:
            build_problem(spec)  # GraphSpecError (a ValueError) says what is wrong
    resolve_device(args.device)
    target = resolve_target(args.target, gates=args.gates)
    categorical = target.gates == "categorical"
    budget = (CATEGORICAL_BUDGETS if categorical else BUDGETS)[args.budget]
    if args.graphs is not None:  # `validate` refuses graphs without the target's gates
        budget = budget.replace(graphs=graphs)
    name = target.label + ("-categorical" if categorical else "")
    out = args.out or f"reports/validate/{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}"
    result = validate(target, budget, seed=args.seed, device=args.device,
                      progress=not args.quiet)
    command = shlex.join(["estimator-lab", "validate", args.target, "--budget", args.budget,
                          *(["--gates", args.gates] if args.gates else []),
                          *(["--graphs", args.graphs] if args.graphs else []),
                          "--device", args.device, "--seed", str(args.seed), "--out", out])
    report = write_report_card(result, budget, out, seed=args.seed, device=args.device,
                               command=command)
    print(result.summary())
    print(f"{'FAIL' if not result.passed else 'PASS'}: report card written to {report} "
          f"in {format_duration(time.perf_counter() - started)}")
    if not result.passed:
        sys.exit(1)
