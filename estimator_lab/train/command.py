"""`estimator-lab train CONFIG`: one of the paper's seven gater configurations on MNIST.

Writes the run folder (`log.csv`, `config.json`, `last.pt`, `best.pt`, snapshots) epoch by epoch,
atomically; running the same command again resumes from `last.pt`.
"""

from __future__ import annotations

import argparse
import time

from estimator_lab.arguments import add_seed_argument, bounded_int, format_duration

CONFIGS = ("noisy-rectifier", "straight-through", "sts", "sbn", "baseline-rectifier",
           "baseline-sigmoid-noise", "baseline-sigmoid")
"""The names of `train.gaters.PAPER_GATERS`, in its order, for the help without importing torch
(`tests/test_cli.py` checks they agree)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `estimator-lab train` (no torch import)."""
    parser.add_argument("config", metavar="CONFIG", help="one of " + ", ".join(CONFIGS))
    add_seed_argument(parser, "seeds the initial weights, the data order and the gate noise")
    parser.add_argument("--epochs", type=bounded_int(1), default=200,
                        help="maximum epochs (default: %(default)s)")
    parser.add_argument("--patience", type=bounded_int(1), default=30,
                        help="stop after this many epochs without a better validation error "
                             "(default: %(default)s)")
    parser.add_argument("--train-size", type=bounded_int(1), default=None,
                        help="first N training images (default: all 50,000)")
    parser.add_argument("--eval-size", type=bounded_int(1), default=None,
                        help="first N validation and test images (default: all 10,000)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA if available, else CPU), cpu, cuda, ... "
                             "(default: %(default)s)")
    parser.add_argument("--data", default=None,
                        help="MNIST .npz file or IDX folder (default: the verified cache of "
                             "`estimator-lab data fetch`)")
    parser.add_argument("--out", default=None,
                        help="run folder (default: runs/paper/CONFIG-seedS); resumed if present")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE",
                        help="replace a numeric setting of the configuration, e.g. "
                             "kl_weight=0.01, or drop an optional one, e.g. max_norm=none "
                             "(repeatable; see GaterConfig)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def parse_overrides(items: list[str]) -> dict[str, float | None]:
    """`["kl_weight=0.01", "max_norm=none", ...]` as a dict of floats and `None`s (`ValueError`
    on a malformed item; which fields may be `None` is `TrainConfig`'s check)."""
    overrides: dict[str, float | None] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if value.strip().lower() == "none":
            overrides[name.strip()] = None
            continue
        try:
            overrides[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--set expects FIELD=NUMBER or FIELD=none, got {item!r}")
    return overrides


def main(args: argparse.Namespace) -> None:
    """Trains or resumes the run and prints its best validation epoch."""
    from estimator_lab.device import resolve_device
    from estimator_lab.train.trainer import TrainConfig, train_gater

    started = time.perf_counter()
    config = TrainConfig(
        gater=args.config, seed=args.seed, max_epochs=args.epochs, patience=args.patience,
        train_size=args.train_size, eval_size=args.eval_size,
        device=str(resolve_device(args.device)), data_path=args.data,
        overrides=parse_overrides(args.overrides),
    )
    out = args.out or f"runs/paper/{args.config}-seed{args.seed}"
    result = train_gater(config, out, progress=not args.quiet)
    print(f"{args.config}: best epoch {result.best_epoch}, valid {result.valid_error:.2f} %, "
          f"test {result.test_error:.2f} %; run folder {out} "
          f"in {format_duration(time.perf_counter() - started)}")
