"""The `estimator-lab` console script.

Every command reports a bad input as one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from estimator_lab import __version__


class UsageError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _check_estimators(names, spec: str | None = None) -> None:
    """Raises KeyError/ValueError for an unknown estimator, a bad graph spec, or a single-layer
    estimator on a multi-layer graph, before any long work starts."""
    from estimator_lab.estimators import get_estimator
    from estimator_lab.estimators.base import require_single_layer
    from estimator_lab.graphs.specs import build_problem

    graph = None if spec is None else build_problem(spec).graph
    for name in names:
        estimator = get_estimator(name)
        if graph is not None:
            require_single_layer(graph, estimator)


def _usage_error(error: KeyError | ValueError) -> UsageError:
    """The one-line message of a validation error (a KeyError's repr would add quotes)."""
    return UsageError(error.args[0] if isinstance(error, KeyError) else str(error))


def _cmd_demo(args: argparse.Namespace) -> None:
    from estimator_lab.device import resolve_device
    from estimator_lab.studies.demo import DemoConfig, run_demo

    try:
        config = DemoConfig(
            draws=args.draws, seed=args.seed, estimators=tuple(args.estimators.split(",")),
            batch_size=args.batch_size, chunk_size=args.chunk_size, device=args.device,
            data_path=args.data,
        )
        _check_estimators(config.estimators)
        resolve_device(config.device)
    except (KeyError, ValueError) as error:
        raise _usage_error(error) from None
    report = run_demo(config, args.out, progress=not args.quiet)
    print(f"report written to {report}")


def _cmd_bias(args: argparse.Namespace) -> None:
    from estimator_lab.studies.bias import BiasConfig, run_bias

    try:
        config = BiasConfig(
            graph=args.graph, estimators=tuple(args.estimators.split(",")), draws=args.draws,
            seed=args.seed, alpha=args.alpha, device=args.device,
        )
        _check_estimators(config.estimators, config.graph)
    except (KeyError, ValueError) as error:  # GraphSpecError is a ValueError
        raise _usage_error(error) from None
    print(f"report written to {run_bias(config, args.out, progress=not args.quiet)}")


def _cmd_variance(args: argparse.Namespace) -> None:
    from estimator_lab.studies.variance import VarianceConfig, run_variance

    try:
        config = VarianceConfig(
            graph=args.graph, estimators=tuple(args.estimators.split(",")), draws=args.draws,
            seed=args.seed, parameters_file=args.parameters, chunk_size=args.chunk_size,
            group_size=args.group_size, alpha=args.alpha, device=args.device,
            data_path=args.data, checkpoint=args.checkpoint, nan_policy=args.nan_policy,
        )
        _check_estimators(config.estimators, None if config.graph == "paper" else config.graph)
    except (KeyError, ValueError) as error:  # GraphSpecError is a ValueError
        raise _usage_error(error) from None
    report = run_variance(config, args.out, progress=not args.quiet)
    if report is not None:  # under torchrun, rank 0 writes the report
        print(f"report written to {report}")


def _cmd_report(args: argparse.Namespace) -> None:
    from estimator_lab.studies.rebuild import ReportError, rebuild_report

    try:
        report = rebuild_report(args.folder)
    except ReportError as error:
        raise UsageError(str(error)) from None
    print(f"report rewritten at {report}")


def estimator_table():
    """One row per registered estimator with its capability flags (a pandas DataFrame)."""
    import pandas as pd

    from estimator_lab.estimators import available, get_estimator

    rows = []
    for name in available():
        estimator = get_estimator(name)
        rows.append({
            "name": name,
            "unbiased": estimator.is_unbiased,
            "distribution": estimator.distribution,
            "evaluations_per_draw": estimator.evaluations_per_draw or "per graph",
            "multilayer": estimator.multilayer,
            "vmap": estimator.supports_vmap,
            "class": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
        })
    return pd.DataFrame(rows)


def _cmd_estimators(args: argparse.Namespace) -> None:
    print(estimator_table().to_string(index=False))


def _cmd_data_fetch(args: argparse.Namespace) -> None:
    from estimator_lab.data import fetch_mnist

    print(f"MNIST verified and cached at {fetch_mnist(args.cache_dir, force=args.force)}")


def _cmd_data_info(args: argparse.Namespace) -> None:
    from estimator_lab.data import mnist_info

    print(json.dumps(mnist_info(args.cache_dir), indent=2, default=str))


def _delegate(module: str, args: argparse.Namespace) -> None:
    """Runs `module.main(args)`, turning its KeyError/ValueError on bad input into a usage error."""
    import importlib

    try:
        importlib.import_module(module).main(args)
    except (KeyError, ValueError) as error:
        raise _usage_error(error) from None


SUBCOMMAND_MODULES = {
    "train": ("estimator_lab.train.command",
              "train one of the paper's seven gater configurations on MNIST"),
    "run": ("estimator_lab.studies.command", "run a study by name; writes its report"),
    "validate": ("estimator_lab.validation.command",
                 "validation battery and report card for an estimator proposal"),
}
"""Subcommands defined in their own modules: each has `add_arguments(parser)` and `main(args)`."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `estimator-lab`."""
    parser = argparse.ArgumentParser(
        prog="estimator-lab",
        description="Statistics of gradient estimators through stochastic neurons.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="variance of reinforce and st on the paper network; writes a report"
    )
    demo.add_argument("--out", default="reports/demo", help="report folder (default: %(default)s)")
    demo.add_argument("--draws", type=int, default=2000, help="draws per estimator")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--estimators", default="reinforce,st", help="comma-separated names")
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--chunk-size", type=int, default=32, help="draws held in memory at once")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    demo.add_argument("--data", default=None, help="MNIST npz file or IDX folder")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_cmd_demo)

    bias = commands.add_parser(
        "bias", help="estimators on a small graph against its exact gradient; writes a report"
    )
    bias.add_argument("--graph", required=True,
                      help="toy:n=4,t=0.45 | sbn:4-4-4 | tiny-conditional:gates=12")
    bias.add_argument("--estimators", default="reinforce,st", help="comma-separated names")
    bias.add_argument("--draws", type=int, default=10_000)
    bias.add_argument("--seed", type=int, default=0)
    bias.add_argument("--alpha", type=float, default=0.01, help="family-wise level (Holm)")
    bias.add_argument("--device", default="auto")
    bias.add_argument("--out", required=True, help="report folder")
    bias.add_argument("--quiet", action="store_true", help="no progress bar")
    bias.set_defaults(run=_cmd_bias)

    variance = commands.add_parser(
        "variance", help="variance and bias per parameter group, full paper network or small graph"
    )
    variance.add_argument("--graph", default="paper", help="paper | toy:... | sbn:... | "
                          "tiny-conditional:... (default: %(default)s)")
    variance.add_argument("--estimators", default="reinforce,st", help="comma-separated names")
    variance.add_argument("--draws", type=int, default=1000)
    variance.add_argument("--seed", type=int, default=0)
    variance.add_argument("--parameters", default=None,
                          help="state dict of the paper network (default: seeded init)")
    variance.add_argument("--chunk-size", type=int, default=32)
    variance.add_argument("--group-size", type=int, default=50,
                          help="draws per batch-means group for intervals")
    variance.add_argument("--alpha", type=float, default=0.01)
    variance.add_argument("--device", default="auto")
    variance.add_argument("--data", default=None, help="MNIST npz file or IDX folder")
    variance.add_argument("--checkpoint", default=None,
                          help="checkpoint file: written periodically, resumed if present")
    variance.add_argument("--nan-policy", choices=["raise", "skip"], default="raise")
    variance.add_argument("--out", required=True, help="report folder")
    variance.add_argument("--quiet", action="store_true", help="no progress bar")
    variance.set_defaults(run=_cmd_variance)

    report = commands.add_parser(
        "report", help="rewrite a study folder's report from its saved results (nothing rerun)"
    )
    report.add_argument("folder", metavar="DIR", help="a folder written by demo or bias")
    report.set_defaults(run=_cmd_report)

    estimators = commands.add_parser(
        "estimators", help="list the registered estimators (built-in and plugins) and their flags"
    )
    estimators.set_defaults(run=_cmd_estimators)

    data = commands.add_parser("data", help="MNIST: fetch and verify, or describe the cache")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_commands.add_parser("fetch", help="download, verify and cache MNIST")
    fetch.add_argument("--cache-dir", default=None, help="default: $ESTIMATOR_LAB_DATA or ~/.cache")
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached")
    fetch.set_defaults(run=_cmd_data_fetch)
    info = data_commands.add_parser("info", help="describe the cached MNIST")
    info.add_argument("--cache-dir", default=None)
    info.set_defaults(run=_cmd_data_info)

    import importlib

    for name, (module, help_text) in SUBCOMMAND_MODULES.items():
        sub = commands.add_parser(name, help=help_text)
        importlib.import_module(module).add_arguments(sub)
        sub.set_defaults(run=lambda args, module=module: _delegate(module, args))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `estimator-lab`; returns the exit status (2 for a user-facing error)."""
    from estimator_lab.data import MNISTError

    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (UsageError, MNISTError) as error:
        print(f"estimator-lab: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
