"""Argument types, limits and wall-time wording shared by every command's parser.

The ground floor under the console script (`estimator_lab.cli`) and the commands that build
their own parsers (`run`, `merge`, `train`, `validate`): they import these from here, not from
the console script above them. Imports nothing but the standard library, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_DRAWS = 10**9
"""The most draws a command accepts (days of work even on the smallest graph)."""

MAX_SEED = 2**32 - 1
"""Seeds are integers from 0 to `MAX_SEED`."""


class UsageError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are one line, `estimator-lab: error: ...`, exit 2
    (argparse prints the usage block as well; `--help` shows it)."""

    def error(self, message: str):
        self.exit(2, f"estimator-lab: error: {message} (see {self.prog} --help)\n")


def _shown(text: str) -> str:
    """`text` for an error message, cut to 40 characters."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: an integer from `low` to `high` (no upper bound for `None`).

    Example:
        >>> bounded_int(1, 10)("3")
        3
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {_shown(text)}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low:,}" if high is None else f"from {low:,} to {high:,}"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {_shown(text)}")
        return value

    return parse


def open_unit_interval(text: str) -> float:
    """An argparse `type`: a number strictly between 0 and 1 (a level such as `--alpha`)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {_shown(text)}")
    return value


def add_seed_argument(parser: argparse.ArgumentParser,
                      meaning: str = "seeds the graph, its minibatch and every draw's noise"
                      ) -> None:
    """`--seed`, an integer from 0 to `MAX_SEED`, default 0; `meaning` says what it seeds."""
    parser.add_argument("--seed", type=bounded_int(0, MAX_SEED), default=0,
                        help=f"{meaning} (0 to {MAX_SEED}; default: %(default)s)")


def add_draws_argument(parser: argparse.ArgumentParser, default: int) -> None:
    """`--draws`, an integer from 2 to `MAX_DRAWS`."""
    parser.add_argument("--draws", type=bounded_int(2, MAX_DRAWS), default=default,
                        help=f"gradient draws per estimator (2 to {MAX_DRAWS:,}; "
                             "default: %(default)s)")


def format_duration(seconds: float) -> str:
    """A wall time in words: `"4.2 s"`, `"1 min 32 s"`, `"2 h 05 min"`.

    Example:
        >>> format_duration(92.4)
        '1 min 32 s'
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
