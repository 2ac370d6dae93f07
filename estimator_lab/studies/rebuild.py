"""Rewrites a study's report from its saved results, without rerunning anything.

`rebuild_report(folder)` reads `manifest.json`, rebuilds the study's configuration from its
`config` entry, reads the saved result tables and calls the study's own report function, which
draws its figures from those tables, and writes the report again (`Report.write`). A report
changed in code can so be regenerated for old runs, and a run's report can be checked against
its data (the rebuilt files are byte-identical to the original when nothing changed).

Studies are found by the manifest's `study` entry in `STUDIES` (name -> rebuild function).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from estimator_lab.studies.bias import BiasConfig, bias_report
from estimator_lab.studies.demo import DemoConfig, demo_report
from estimator_lab.studies.variance import VarianceConfig, variance_report

# Floats must read back bit for bit: pandas >= 3.1 does so by default (and deprecates the option).
_EXACT_FLOATS = (
    {} if tuple(int(p) for p in pd.__version__.split(".")[:2]) >= (3, 1)
    else {"float_precision": "round_trip"}
)


class ReportError(ValueError):
    """A report folder that cannot be rebuilt; the message is one line saying why."""


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuilds a frozen config dataclass from its `dataclasses.asdict` form read from JSON.

    Nested config dataclasses are rebuilt from their dicts and JSON lists become tuples where
    the field is a tuple; missing entries take the field's default.

    Args:
        cls: the config class (e.g. `DemoConfig`).
        data: the `asdict` form, e.g. `manifest["config"]`.

    Raises:
        ReportError: an entry the class does not have, or values the class rejects.

    Example:
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


def read_results(folder: Path, study: str, names: list[str]) -> list[pd.DataFrame]:
    """Reads a study's saved CSV tables exactly (floats round-trip bit for bit).

    Raises:
        ReportError: a file is missing or is not a CSV table.
    """
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise ReportError(
            f"{folder} lacks {', '.join(missing)}, needed to rebuild the {study!r} report"
        )
    frames = []
    for name in names:
        try:
            frames.append(pd.read_csv(folder / name, **_EXACT_FLOATS))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            message = " ".join(str(error).split())
            raise ReportError(f"{folder / name} is not a readable table: {message}") from None
    return frames


def _rebuild_demo(folder: Path, manifest: dict) -> Path:
    results, bias = read_results(folder, "demo", ["results.csv", "bias_check.csv"])
    config = config_from_dict(DemoConfig, manifest["config"])
    return demo_report(config, results, bias, manifest).write(folder)


def _rebuild_bias(folder: Path, manifest: dict) -> Path:
    results, summary = read_results(folder, "bias", ["results.csv", "summary.csv"])
    config = config_from_dict(BiasConfig, manifest["config"])
    return bias_report(config, results, summary, manifest).write(folder)


def _rebuild_variance(folder: Path, manifest: dict) -> Path:
    summary, gates, ratios = read_results(folder, "variance",
                                          ["summary.csv", "gates.csv", "ratios.csv"])
    config = config_from_dict(VarianceConfig, manifest["config"])
    return variance_report(config, summary, gates, ratios, manifest).write(folder)


def _from_tables(study: str) -> Callable[[Path, dict], Path]:
    """The rebuild function of a study of `_TABLE_STUDIES`, whose module has a report function
    `(config, *tables, manifest) -> Report`; the module is imported only when needed."""

    def rebuild(folder: Path, manifest: dict) -> Path:
        import importlib

        names, config_class, report_function = _TABLE_STUDIES[study]
        module = importlib.import_module(f"estimator_lab.studies.{study}")
        tables = read_results(folder, study, names)
        config = config_from_dict(getattr(module, config_class), manifest["config"])
        return getattr(module, report_function)(config, *tables, manifest).write(folder)

    return rebuild


_TABLE_STUDIES = {  # study: (saved tables, config class, report function)
    "bias_small_graphs": (["summary.csv", "graphs.csv"], "SmallGraphsConfig",
                          "small_graphs_report"),
    "optimal_baseline": (["exact.csv", "ratios.csv", "gaps.csv", "summary.csv", "training.csv"],
                         "OptimalBaselineConfig", "optimal_baseline_report"),
    "mnist_variance": (["summary.csv", "ratios.csv", "sparsity.csv", "temperature.csv",
                        "training.csv"], "MnistVarianceConfig", "mnist_variance_report"),
    "paper_table": (["table.csv", "curves.csv", "sparse.csv", "gate_usage.csv"],
                    "PaperTableConfig", "report_from_tables"),
}

STUDIES: Mapping[str, Callable[[Path, dict], Path]] = MappingProxyType({
    "bias": _rebuild_bias,
    "demo": _rebuild_demo,
    "variance": _rebuild_variance,
    **{study: _from_tables(study) for study in _TABLE_STUDIES},
})


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
        ReportError: no manifest, an unknown study, missing or unreadable result files, a
            saved configuration the study's config class rejects, or a column or manifest
            entry the report needs that is missing.
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
        return STUDIES[study](folder, manifest)
    except KeyError as error:  # a column or manifest entry the study's report reads
        raise ReportError(
            f"{folder}: the saved results or manifest lack {error.args[0]!r}, which the "
            f"{study!r} report needs"
        ) from None
