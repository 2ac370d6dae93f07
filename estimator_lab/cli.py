"""The `estimator-lab` console script.

Every command reports a bad input as one line on stderr and exits with status 2. Building the
parser imports no torch, pandas or matplotlib (each command imports what it needs when it runs),
so `--help`, every `COMMAND --help` and argument errors answer in about a bare Python start.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence

from estimator_lab import __version__
from estimator_lab.arguments import (
    ArgumentParser,
    UsageError,
    add_draws_argument,
    add_seed_argument,
    bounded_int,
    format_duration,
    open_unit_interval,
)


def _check_estimators(names, spec: str | None = None) -> None:
    """Raises KeyError/ValueError for an unknown estimator (of the registry of the graph's gate
    distribution: `estimator_for`), a bad graph spec, or a single-layer estimator on a
    multi-layer graph, before any long work starts."""
    from estimator_lab.estimators import get_estimator
    from estimator_lab.estimators.base import require_single_layer
    from estimator_lab.estimators.categorical import estimator_for
    from estimator_lab.graphs.categorical import gate_distribution
    from estimator_lab.graphs.specs import build_problem

    graph = None if spec is None else build_problem(spec).graph
    for name in names:
        if graph is None:
            get_estimator(name)
            continue
        require_single_layer(graph, estimator_for(name, gate_distribution(graph)))


def _usage_error(error: KeyError | ValueError) -> UsageError:
    """The one-line message of a validation error (a KeyError's repr would add quotes)."""
    return UsageError(error.args[0] if isinstance(error, KeyError) else str(error))


def _written(report, started: float) -> str:
    """The closing line of a command that writes a report."""
    return f"report written to {report} in {format_duration(time.perf_counter() - started)}"


def _cmd_demo(args: argparse.Namespace) -> None:
    from estimator_lab.device import resolve_device
    from estimator_lab.studies.demo import DemoConfig, run_demo

    started = time.perf_counter()
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
    print(_written(report, started))


def _cmd_bias(args: argparse.Namespace) -> None:
    from estimator_lab.device import resolve_device
    from estimator_lab.studies.bias import BiasConfig, run_bias

    started = time.perf_counter()
    try:
        config = BiasConfig(
            graph=args.graph, estimators=tuple(args.estimators.split(",")), draws=args.draws,
            seed=args.seed, alpha=args.alpha, device=args.device,
        )
        _check_estimators(config.estimators, config.graph)
        resolve_device(config.device)
    except (KeyError, ValueError) as error:  # GraphSpecError is a ValueError
        raise _usage_error(error) from None
    print(_written(run_bias(config, args.out, progress=not args.quiet), started))


def _cmd_variance(args: argparse.Namespace) -> None:
    from estimator_lab.device import resolve_device
    from estimator_lab.studies.variance import VarianceConfig, parse_draw_range, run_variance

    started = time.perf_counter()
    try:
        draw_range = None if args.draw_range is None else parse_draw_range(args.draw_range)
        config = VarianceConfig(
            graph=args.graph, estimators=tuple(args.estimators.split(",")), draws=args.draws,
            seed=args.seed, parameters_file=args.parameters, chunk_size=args.chunk_size,
            group_size=args.group_size, alpha=args.alpha, device=args.device,
            data_path=args.data, checkpoint=args.checkpoint, nan_policy=args.nan_policy,
            draw_range=draw_range,
        )
        _check_estimators(config.estimators, None if config.graph == "paper" else config.graph)
        resolve_device(config.device)
    except (KeyError, ValueError) as error:  # GraphSpecError is a ValueError
        raise _usage_error(error) from None
    if args.parameters is not None and not os.path.isfile(args.parameters):
        raise UsageError(f"--parameters {args.parameters}: no such file")
    try:  # the files it reads (--parameters, --checkpoint) are checked as they are read
        report = run_variance(config, args.out, progress=not args.quiet)
    except ValueError as error:
        raise _usage_error(error) from None
    if report is None:  # under torchrun, rank 0 writes the report
        return
    if draw_range is not None:
        print(f"partial of draws {args.draw_range} written to {report} in "
              f"{format_duration(time.perf_counter() - started)}; merge the shards with "
              "`estimator-lab merge PART... --out DIR`")
    else:
        print(_written(report, started))


def _cmd_report(args: argparse.Namespace) -> None:
    from estimator_lab.studies.rebuild import ReportError, rebuild_report

    try:
        report = rebuild_report(args.folder)
    except ReportError as error:
        raise UsageError(str(error)) from None
    print(f"report rewritten at {report}")


ESTIMATOR_COLUMNS = ("name", "unbiased", "distribution", "evaluations_per_draw", "multilayer",
                     "vmap")
"""The columns of `estimator-lab estimators`' table of capability flags."""

ESTIMATOR_GATES = ("bernoulli", "categorical", "topk", "all")
"""`estimator-lab estimators --gates`: the registry listed, by the gates of the graphs its
estimators run on (the Bernoulli registry also holds estimators that change the gate, such as
`sts`: their `distribution` column says so)."""


def estimator_rows(gates: str = "bernoulli") -> list[dict[str, object]]:
    """One dict per registered estimator for graphs with `gates` (`ESTIMATOR_GATES`): its
    capability flags (`ESTIMATOR_COLUMNS`; its cost, `evaluations()` without a graph, is "per
    graph" where it depends on the graph), the `gates` of its registry, class, one-line
    description and reference (`registry.describe`: from its class docstring)."""
    from estimator_lab.estimators import available, get_estimator
    from estimator_lab.estimators.categorical import (
        available_categorical,
        get_categorical_estimator,
    )
    from estimator_lab.estimators.registry import describe
    from estimator_lab.estimators.topk import available_topk, get_topk_estimator

    registries = {"bernoulli": (available, get_estimator),
                  "categorical": (available_categorical, get_categorical_estimator),
                  "topk": (available_topk, get_topk_estimator)}
    rows = []
    for registry in registries if gates == "all" else [gates]:
        names, build = registries[registry]
        for name in names():
            estimator = build(name)
            cls = type(estimator)
            description, reference = describe(cls)
            cost = estimator.evaluations()  # None where it depends on the graph
            rows.append({
                "name": name,
                "unbiased": estimator.is_unbiased,
                "distribution": estimator.distribution,
                "evaluations_per_draw": "per graph" if cost is None else cost,
                "multilayer": estimator.multilayer,
                "vmap": estimator.supports_vmap,
                "gates": registry,
                "class": f"{cls.__module__}.{cls.__qualname__}",
                "description": description,
                "reference": reference,
            })
    return rows


def _cmd_estimators(args: argparse.Namespace) -> None:
    rows = estimator_rows(args.gates)
    widths = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in ESTIMATOR_COLUMNS}
    for row in [dict(zip(ESTIMATOR_COLUMNS, ESTIMATOR_COLUMNS, strict=True)), *rows]:
        print("  ".join(f"{row[c]!s:<{widths[c]}}" for c in ESTIMATOR_COLUMNS).rstrip())
    for row in rows:
        label = row["name"] if row["gates"] == "bernoulli" else f"{row['name']} ({row['gates']})"
        print(f"\n{label}: {row['description']}\n    {row['reference'] or 'no reference'}"
              f" ({row['class']})")


def _cmd_data_fetch(args: argparse.Namespace) -> None:
    from estimator_lab.data import fetch_mnist

    print(f"MNIST verified and cached at {fetch_mnist(args.cache_dir, force=args.force)}")


def _cmd_data_info(args: argparse.Namespace) -> None:
    from estimator_lab.data import mnist_info

    info = mnist_info(args.cache_dir)
    print(json.dumps(info, indent=2, default=str))
    if not info["exists"]:
        raise UsageError(f"no MNIST cache at {info['path']} (estimator-lab data fetch)")
    if info["valid"] is not True:
        raise UsageError(f"the MNIST cache at {info['path']} is not valid: {info['error']}")


def _delegate(module: str, args: argparse.Namespace) -> None:
    """Runs `module.main(args)`, turning its KeyError/ValueError on bad input into a usage error."""
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
    "merge": ("estimator_lab.studies.merge_command",
              "merge the partials of a variance run's --draw-range shards into its report"),
}
"""Subcommands defined in their own modules: each has `add_arguments(parser)` and `main(args)`;
`add_arguments` imports no torch."""


def _add_study_arguments(parser: argparse.ArgumentParser, *, draws: int) -> None:
    """The arguments `demo`, `bias` and `variance` share, after their own."""
    parser.add_argument("--estimators", default="reinforce,st",
                        help="comma-separated registry names, see `estimator-lab estimators` "
                             "(default: %(default)s)")
    add_draws_argument(parser, draws)
    add_seed_argument(parser)
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ... "
                             "(default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_chunk_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunk-size", type=bounded_int(1), default=32,
                        help="draws held in memory at once (default: %(default)s)")


def _add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None,
                        help="MNIST .npz file or IDX folder (default: the verified cache of "
                             "`estimator-lab data fetch`)")


def _report_kinds() -> str:
    """The folder kinds `estimator-lab report` rebuilds, in words."""
    from estimator_lab.studies.command import STUDIES

    return f"demo, bias, variance, or run STUDY ({', '.join(STUDIES)})"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of `estimator-lab`.

    Args:
        command: the subcommand about to run; the arguments of `train`, `run` and `validate`
            (defined in their own modules) are only added for that one (`None`: all).
    """
    parser = ArgumentParser(
        prog="estimator-lab",
        description="Statistics of gradient estimators through stochastic neurons.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="variance of reinforce and st on the paper network; writes a report"
    )
    demo.add_argument("--out", default="runs/demo",
                      help="report folder, replaced whole on success (default: %(default)s)")
    _add_study_arguments(demo, draws=2000)
    demo.add_argument("--batch-size", type=bounded_int(1), default=32,
                      help="MNIST validation images in the fixed minibatch (default: %(default)s)")
    _add_chunk_size(demo)
    _add_data(demo)
    demo.set_defaults(run=_cmd_demo)

    bias = commands.add_parser(
        "bias", help="estimators on a small graph against its exact gradient; writes a report"
    )
    bias.add_argument("--graph", required=True,
                      help="small graph spec: toy:n=4,t=0.45 | toy:logits=0.5/-1,t=0.3 | "
                           "sbn:4-4-4[,inputs=8,batch=2,scale=2] | "
                           "tiny-conditional:gates=12[,hidden=8,batch=4] | "
                           "cat-toy:n=3,k=4,t=0.45[,batch=1] | "
                           "cat-vae:latents=4,classes=8[,hidden=32,batch=4] (categorical "
                           "gates: `estimator-lab estimators --gates categorical`) | "
                           "topk-toy:n=2,classes=4,k=2,t=0.45 | moe:experts=4,k=2 (top-k "
                           "gates: `estimators --gates topk`)")
    bias.add_argument("--out", required=True, help="report folder, replaced whole on success")
    _add_study_arguments(bias, draws=10_000)
    bias.add_argument("--alpha", type=open_unit_interval, default=0.01,
                      help="family-wise level of the bias tests, Holm over the coordinates of "
                           "each estimator (default: %(default)s)")
    bias.set_defaults(run=_cmd_bias)

    variance = commands.add_parser(
        "variance", help="variance and bias per parameter group, full paper network or small graph"
    )
    variance.add_argument("--graph", default="paper", help="paper | toy:... | sbn:... | "
                          "tiny-conditional:... | cat-toy:... (see bias --help; default: "
                          "%(default)s)")
    variance.add_argument("--out", required=True, help="report folder, replaced whole on success")
    _add_study_arguments(variance, draws=1000)
    variance.add_argument("--parameters", default=None,
                          help="state dict of the paper network (default: seeded initialisation)")
    _add_chunk_size(variance)
    variance.add_argument("--group-size", type=bounded_int(1), default=50,
                          help="draws per batch-means group for intervals (default: %(default)s)")
    variance.add_argument("--alpha", type=open_unit_interval, default=0.01,
                          help="level of the bias tests (default: %(default)s)")
    _add_data(variance)
    variance.add_argument("--checkpoint", default=None,
                          help="checkpoint file: written periodically, resumed if present "
                               "(default: none)")
    variance.add_argument("--nan-policy", choices=["raise", "skip"], default="raise",
                          help="a draw with a non-finite value stops the run, or is skipped and "
                               "counted (default: %(default)s)")
    variance.add_argument("--draw-range", metavar="START:STOP", default=None,
                          help="draw only draws START..STOP-1 of --draws and write a mergeable "
                               "partial to --out (see `estimator-lab merge`; default: all, "
                               "and the report)")
    variance.set_defaults(run=_cmd_variance)

    report = commands.add_parser(
        "report", help="rewrite a study folder's report from its saved results (nothing rerun)"
    )
    report.add_argument("folder", metavar="DIR",
                        help=f"a folder written by {_report_kinds()}")
    report.set_defaults(run=_cmd_report)

    estimators = commands.add_parser(
        "estimators", help="list the registered estimators (built-in and plugins): flags, "
                           "description, reference; --gates categorical for categorical graphs"
    )
    estimators.add_argument("--gates", choices=ESTIMATOR_GATES, default="bernoulli",
                            help="list the estimators for graphs with Bernoulli gates, with "
                                 "categorical gates (cat-toy, cat-vae) or with top-k gates "
                                 "(topk-toy, moe): `bias` and `variance` pick the registry of "
                                 "the graph's gates by name; or all (default: %(default)s)")
    estimators.set_defaults(run=_cmd_estimators)

    data = commands.add_parser("data", help="MNIST: fetch and verify, or describe the cache")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    cache_help = ("cache folder (default: $ESTIMATOR_LAB_DATA, else $XDG_CACHE_HOME/estimator_lab, "
                  "else ~/.cache/estimator_lab)")
    fetch = data_commands.add_parser("fetch", help="download, verify and cache MNIST")
    fetch.add_argument("--cache-dir", default=None, help=cache_help)
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached")
    fetch.set_defaults(run=_cmd_data_fetch)
    info = data_commands.add_parser(
        "info", help="describe the cached MNIST as JSON; exit status 2 when it is missing or "
                     "not valid", description="Prints the cache's description as JSON; exits "
                     "with status 0 when the cache is there and valid, else 2.")
    info.add_argument("--cache-dir", default=None, help=cache_help)
    info.set_defaults(run=_cmd_data_info)

    for name, (module, help_text) in SUBCOMMAND_MODULES.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if command in (None, name):
            importlib.import_module(module).add_arguments(sub)
        sub.set_defaults(run=lambda args, module=module: _delegate(module, args))
    return parser


def _command(argv: Sequence[str]) -> str:
    """The subcommand `argv` names: its first word that is not an option (`""` if none)."""
    return next((word for word in argv if not word.startswith("-")), "")


def _is_user_error(error: Exception) -> bool:
    """Whether `error` is a user-facing one: a `UsageError` or an `MNISTError` (checked only
    when the data module, which alone raises it, was imported)."""
    mnist = sys.modules.get("estimator_lab.data.mnist")
    return isinstance(error, UsageError) or (mnist is not None
                                             and isinstance(error, mnist.MNISTError))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `estimator-lab`; returns the exit status (2 for a user-facing error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(_command(argv)).parse_args(argv)
    except SystemExit as exit:  # --help, --version, or an argument error already printed
        return exit.code
    try:
        args.run(args)
    except Exception as error:
        if not _is_user_error(error):
            raise
        print(f"estimator-lab: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
