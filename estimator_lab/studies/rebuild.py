"""Rewrites a study's report from its saved results, without rerunning anything.

`rebuild_report(folder)` reads `manifest.json`, finds the study named by its `study` entry in
the registry (`studies.protocol.STUDIES`, the registry `estimator-lab run` uses too), rebuilds
the study's configuration from the `config` entry, reads the tables the study declares its
report reads (`Study.report_tables`) and calls the study's own report function, which draws its
figures from those tables, and writes the report again (`Report.write`). A report changed in
code can so be regenerated for old runs, and a run's report can be checked against its data
(the rebuilt files are byte-identical to the original when nothing changed).

What is read is checked before anything is written, so a damaged or edited folder gives one
line saying what is wrong (`ReportError`) instead of a report of wrong numbers: every table
must be complete (no cut-off last line, every row as wide as the header), the configuration's
entries must have their fields' types and pass the config class's own checks, and a study's
own check (`Study.check`, built from the helpers here) runs before its report: for the `bias`,
`demo` and `variance` studies a graph spec must build through `build_problem` (the parser the
CLI uses), the tables' columns must hold numbers where numbers belong and their rows must be
the configured estimators times the graph's coordinates (or parameter groups).
"""

from __future__ import annotations

import csv
import io
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from estimator_lab.data.mnist import MNISTError
from estimator_lab.graphs.specs import build_problem
from estimator_lab.montecarlo import GATE_LOGITS
from estimator_lab.stats import SUMMARY_COLUMNS
from estimator_lab.studies.protocol import STUDIES, Study

# Floats must read back bit for bit: pandas >= 3.1 does so by default (and deprecates the option).
_EXACT_FLOATS = (
    {} if tuple(int(p) for p in pd.__version__.split(".")[:2]) >= (3, 1)
    else {"float_precision": "round_trip"}
)


class ReportError(ValueError):
    """A report folder that cannot be rebuilt; the message is one line saying why."""


def _fits(value: Any, hint: Any) -> bool:
    # Whether a value read from JSON has the type of a config field (unknown hints: the
    # config class's own checks decide).
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(item, args[0]) for item in value)
        return len(value) == len(args) and all(map(_fits, value, args))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, int if hint is int else (int, float)) and not isinstance(
            value, bool)
    if hint is str:
        return isinstance(value, str)
    if is_dataclass(hint):
        return isinstance(value, (dict, hint))
    return True


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("NoneType", "None")


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuilds a frozen config dataclass from its `dataclasses.asdict` form read from JSON.

    Nested config dataclasses are rebuilt from their dicts and JSON lists become tuples where
    the field is a tuple; missing entries take the field's default.

    Args:
        cls: the config class (e.g. `DemoConfig`).
        data: the `asdict` form, e.g. `manifest["config"]`.

    Raises:
        ReportError: an entry the class does not have, a value of another type than its
            field's (`"abc"` for an `int`), or values the class rejects.

    Example:
        >>> from estimator_lab.studies.bias import BiasConfig
        >>> config_from_dict(BiasConfig, {"graph": "toy:n=3", "estimators": ["st"]}).estimators
        ('st',)
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ReportError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    values = {}
    for name in (n for n in names if n in data):
        value, kind = data[name], hints[name]
        if not _fits(value, kind):
            raise ReportError(f"{cls.__name__} rejects the saved configuration: {name} must be "
                              f"{_type_name(kind)}, got {value!r}")
        if is_dataclass(kind) and isinstance(value, dict):
            value = config_from_dict(kind, value)
        elif typing.get_origin(kind) is tuple and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ReportError(f"{cls.__name__} rejects the saved configuration: {error}") from None


def read_manifest(folder: str | Path) -> dict:
    """The `manifest.json` of a report folder, with its `study` and `config` entries checked.

    Raises:
        ReportError: no such folder, no manifest, not JSON, or no study or config entry.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder")
    path = folder / "manifest.json"
    if not path.is_file():
        raise ReportError(f"{folder} has no manifest.json: not a study's report folder")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ReportError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or "study" not in manifest:
        raise ReportError(f"{path} names no study (no 'study' entry)")
    if not isinstance(manifest.get("config"), dict):
        raise ReportError(f"{path} has no 'config' entry to rebuild the study's settings from")
    return manifest


def _check_complete(path: Path, text: str) -> None:
    # A table as `DataFrame.to_csv` writes it: newline-terminated, every row as wide as the
    # header (pandas would fill a short row with NaN without a word).
    if text and not text.endswith("\n"):
        raise ReportError(f"{path} is cut short: its last line is incomplete")
    rows = csv.reader(io.StringIO(text))
    width = len(next(rows, []))
    for line, row in enumerate(rows, start=2):
        if len(row) != width:
            raise ReportError(f"{path} is damaged: row {line} has {len(row)} fields, the "
                              f"header {width}")


def read_results(folder: Path, study: str, names: list[str]) -> list[pd.DataFrame]:
    """Reads a study's saved CSV tables exactly (floats round-trip bit for bit).

    Raises:
        ReportError: a file is missing, is not a CSV table, is cut short, or has a row of
            another width than its header.
    """
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise ReportError(
            f"{folder} lacks {', '.join(missing)}, needed to rebuild the {study!r} report"
        )
    frames = []
    for name in names:
        try:
            text = (folder / name).read_text(encoding="utf-8")
            _check_complete(folder / name, text)
            frames.append(pd.read_csv(io.StringIO(text), **_EXACT_FLOATS))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
                csv.Error) as error:
            message = " ".join(str(error).split())
            raise ReportError(f"{folder / name} is not a readable table: {message}") from None
    return frames


def check_columns(frame: pd.DataFrame, path: Path, *, numeric: Sequence[str] = (),
                  text: Sequence[str] = ()) -> None:
    """Checks a saved table's schema: `numeric` columns hold numbers (NaN allowed), `text`
    columns hold a string in every row.

    Raises:
        ReportError: a column is missing, or the first row breaking the rule, in one line.
    """
    missing = [c for c in (*text, *numeric) if c not in frame]
    if missing:
        raise ReportError(f"{path} lacks the column(s) {', '.join(missing)}")
    for column in numeric:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            continue
        bad = pd.to_numeric(values, errors="coerce").isna() & values.notna()
        row = int(np.argmax(bad.to_numpy())) if bad.any() else 0
        raise ReportError(f"{path}: column {column!r} must hold numbers, row {row + 2} holds "
                          f"{values.iloc[row]!r}")
    for column in text:
        bad = ~frame[column].map(lambda value: isinstance(value, str))
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise ReportError(f"{path}: column {column!r} must name something in every row, "
                              f"row {row + 2} holds {frame[column].iloc[row]!r}")


def check_blocks(frame: pd.DataFrame, path: Path, estimators: Sequence[str]) -> pd.Series:
    """Checks that a table holds one block of rows per estimator, in the configured order.

    Returns:
        the rows per estimator (a Series indexed by estimator, in order).

    Raises:
        ReportError: other estimators, another order, or an estimator's rows split.
    """
    column = frame["estimator"].to_numpy()
    starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]]) if len(column) else []
    found = [column[i] for i in starts]
    if found != list(estimators):
        raise ReportError(f"{path} holds rows of the estimators {found}, the saved "
                          f"configuration {list(estimators)}")
    return frame.groupby("estimator", sort=False).size()


def mismatch(path: Path, what: str) -> ReportError:
    """The error of a saved table that does not match the saved configuration."""
    return ReportError(f"{path} does not match the saved configuration: {what}")


def graph_layout(spec: str, seed: int, folder: Path) -> pd.DataFrame:
    """The tracked tensors of a graph spec: one row per `parameter` with its `numel`
    (`gate_logits` first, then the parameters), built through `build_problem`.

    Raises:
        ReportError: the spec is refused (or needs MNIST data that cannot be read).
    """
    try:
        problem = build_problem(spec, seed=seed)
    except (ValueError, MNISTError) as error:
        raise ReportError(f"{folder / 'manifest.json'}: the saved graph spec is refused: "
                          f"{error}") from None
    logits = problem.graph.logits(problem.batch)
    return pd.DataFrame(
        [(GATE_LOGITS, logits.numel())]
        + [(name, p.numel()) for name, p in problem.graph.named_parameters()],
        columns=["parameter", "numel"],
    )


def check_draws(frame: pd.DataFrame, path: Path, expected: Mapping[str, int]) -> None:
    """Checks the `draws` of each row against its estimator's expected count.

    Raises:
        ReportError: the first row whose count differs.
    """
    wrong = frame[frame["draws"] != frame["estimator"].map(expected)]
    if len(wrong):
        row = wrong.iloc[0]
        raise mismatch(path, f"{row['estimator']} has {row['draws']} draws, expected "
                             f"{expected[row['estimator']]}")


def check_layout(frame: pd.DataFrame, path: Path, estimators: Sequence[str],
                 layout: pd.DataFrame) -> None:
    """Checks that every estimator's block lists the tracked tensors of `layout` (`parameter`,
    `numel`) in order.

    Raises:
        ReportError: other estimators or another order (`check_blocks`), or a block of other
            tensors.
    """
    sizes = check_blocks(frame, path, estimators)
    for name, block in frame.groupby("estimator", sort=False):
        rows = block[["parameter", "numel"]].reset_index(drop=True)
        if sizes[name] != len(layout) or not rows.equals(layout.astype(rows.dtypes)):
            raise mismatch(path, f"the rows of {name} are not the tensors "
                                 f"{', '.join(map(str, layout['parameter']))} with "
                                 f"{', '.join(map(str, layout['numel']))} coordinates")


SUMMARY_NUMERIC = [c for c in SUMMARY_COLUMNS if c not in ("estimator", "parameter")]
"""The numeric columns of a `summary_frame` table."""

BIAS_TEST_NUMERIC = ["draws", "coordinates", "max_abs_z", "holm_pvalue", "coordinates_flagged"]
"""The numeric columns of a bias test's summary row (the bias and demo studies)."""


def present_columns(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """The columns of a documented set a table has (older runs lack some of the newer ones)."""
    return [c for c in columns if c in frame]


def _rebuild(study: Study, folder: Path, manifest: dict) -> Path:
    # Reads the declared tables and the configuration, checks them, writes the report again.
    frames = read_results(folder, study.name, [f"{name}.csv" for name in study.report_tables])
    tables = dict(zip(study.report_tables, frames, strict=True))
    config = config_from_dict(study.config(), manifest["config"])
    study.check(folder, config, tables, manifest)
    return study.report(config, tables, manifest).write(folder)


def rebuild_report(folder: str | Path) -> Path:
    """Rewrites the report files of a study's folder from its manifest and saved results.

    Nothing is rerun: the study's report function gets the configuration rebuilt from
    `manifest.json` and the saved tables, draws the figures again from those tables, and its
    report is written over the old one (`report.md`, `report.html`, `tables.tex`, figures,
    `manifest.json`). Everything is read before anything is written.

    Args:
        folder: a report folder written by a study (`estimator-lab demo`, `bias`, `variance`,
            `run STUDY`).

    Returns:
        the path of the rewritten `report.md`.

    Raises:
        ReportError: no manifest, an unknown study, missing, unreadable, cut-short or
            damaged result files, a saved configuration the study's config class or graph
            spec parser rejects (or of the wrong types), tables whose columns or rows do not
            match the configuration, or a column or manifest entry the report needs that is
            missing or holds a value it cannot use.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    study = manifest["study"]
    if not isinstance(study, str) or study not in STUDIES:
        raise ReportError(
            f"{folder / 'manifest.json'} names an unknown study {study!r} "
            f"(known: {', '.join(sorted(STUDIES))})"
        )
    try:
        return _rebuild(STUDIES[study], folder, manifest)
    except ReportError:
        raise
    except KeyError as error:  # a column or manifest entry the study's report reads
        raise ReportError(
            f"{folder}: the saved results or manifest lack {error.args[0]!r}, which the "
            f"{study!r} report needs"
        ) from None
    except (TypeError, ValueError) as error:  # a saved value the study's report cannot use
        message = " ".join(str(error).split())
        raise ReportError(f"{folder}: the saved results or manifest hold a value the "
                          f"{study!r} report cannot use: {message}") from None
