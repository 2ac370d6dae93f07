"""One protocol for every study: what it declares, how its folder is written, and the registry.

A study is declared once, as a `Study` in `STUDIES`: its name (the manifest's `study` entry),
its question, the module holding its code, its config class, the tables its run writes (each
as `NAME.csv`), the tables its report reads back, its run function and its report function.
Both commands that handle studies go through this registry: `estimator-lab run STUDY` runs a
study of `command` `"run"` from its module's `QUICK` or `FULL` configuration
(`studies.command`), and `estimator-lab report FOLDER` rebuilds any registered study's report
from the declared tables (`studies.rebuild`).

Every study writes its folder through `Study.write` (the one write path): the run's tables and
manifest go in, the report is built from them, and the tables, any other files of the study
and the report files are written into a staging folder that replaces the report folder whole
(`reporting.write_report_folder`), so a crash leaves the previous folder or none, never half of
one.

The declarations name the functions and classes of each study's module as strings, so this
module and the registry import neither torch nor pandas: `estimator-lab run --help` stays
fast, and a study's module is imported only when that study runs or is rebuilt.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from estimator_lab.reporting import Report


@dataclass(frozen=True)
class Study:
    """The declaration of a study (names of functions and classes in `module`).

    Attributes:
        name: the study's name, the `study` entry of its manifest.
        question: what the study answers, in one line.
        module: the module holding the study's code.
        config_class: its frozen config dataclass.
        tables: every table its run writes, as `NAME.csv`, in order.
        run_function: `(config, out, *, progress) -> Path` (the `report.md` path): runs the
            study and writes its folder through `write`.
        report_function: `(config, *tables, manifest) -> Report`, the tables being those of
            `report_tables` in order; it draws its figures from them, so a rebuilt report is
            byte-identical to the original.
        report_tables: the tables the report reads (default: all of `tables`).
        check_function: `(folder, config, tables, manifest) -> None`, raising
            `studies.rebuild.ReportError` where saved tables do not match the configuration
            (run before a rebuild; none: the report's own reads decide).
        command: the command that writes the study's folder: `"run"` for the studies of
            `estimator-lab run STUDY` (whose module has `QUICK` and `FULL` configs), else the
            command with the study's own options (`"bias"`, `"demo"`, `"variance"`).

    Example:
        >>> study = STUDIES["bias_small_graphs"]
        >>> study.report_tables, study.command
        (('summary', 'graphs'), 'run')
    """

    name: str
    question: str
    module: str
    config_class: str
    tables: tuple[str, ...]
    run_function: str
    report_function: str
    report_tables: tuple[str, ...] | None = None
    check_function: str | None = None
    command: str = "run"

    def __post_init__(self) -> None:
        if self.report_tables is not None and not set(self.report_tables) <= set(self.tables):
            raise ValueError(f"study {self.name!r}: the report reads tables it does not write")
        if self.report_tables is None:
            object.__setattr__(self, "report_tables", self.tables)

    def load(self, attribute: str) -> Any:
        """`module.attribute` (the module is imported on first use)."""
        return getattr(importlib.import_module(self.module), attribute)

    def config(self) -> type:
        """The config class."""
        return self.load(self.config_class)

    def preset(self, *, quick: bool, seed: int) -> Any:
        """The module's `QUICK` (with `quick`) or `FULL` configuration with the seed set (a
        config of several seeds, `seeds`, gets just this one)."""
        config = self.load("QUICK" if quick else "FULL")
        if hasattr(config, "seeds"):
            return replace(config, seeds=(seed,))
        return replace(config, seed=seed)

    def run(self, config: Any, out: str | Path, *, progress: bool = False) -> Path | None:
        """Runs the study with `config` and writes its folder `out`; returns `report.md`'s path."""
        return self.load(self.run_function)(config, out, progress=progress)

    def report(self, config: Any, tables: Mapping[str, pd.DataFrame], manifest: dict) -> Report:
        """The study's report from its tables (by name; those of `report_tables` are read)."""
        frames = [tables[name] for name in self.report_tables]
        return self.load(self.report_function)(config, *frames, manifest)

    def check(self, folder: Path, config: Any, tables: Mapping[str, pd.DataFrame],
              manifest: dict) -> None:
        """Checks saved tables against the configuration before a rebuild (`check_function`)."""
        if self.check_function is not None:
            self.load(self.check_function)(folder, config, tables, manifest)

    def write(self, out: str | Path, config: Any, tables: Mapping[str, pd.DataFrame],
              manifest: dict, *, files: Callable[[Path], None] | None = None) -> Path:
        """The one write path of a study's folder: tables, other files, report, atomically.

        The report is built from `tables` and `manifest`; then each table is written as
        `NAME.csv` (no index), `files(stage)` writes the study's other files (a graph's state,
        a Parquet copy) and the report writes its files, all into a staging folder that
        replaces `out` whole when everything is written (`reporting.write_report_folder`: on
        an error or a crash the previous folder stays as it was).

        Args:
            out: the report folder.
            config: the study's configuration.
            tables: exactly the declared `tables`, by name.
            manifest: the run's manifest (`run_manifest`), whose `study` is this study.
            files: writes other files into the staging folder it is given.

        Returns:
            the path of `out/report.md`.

        Raises:
            ValueError: tables other than the declared ones, or another study's manifest.
        """
        from estimator_lab.reporting import write_report_folder

        if list(tables) != list(self.tables):
            raise ValueError(f"study {self.name!r} declares the tables {list(self.tables)}, "
                             f"its run made {list(tables)}")
        if manifest.get("study") != self.name:
            raise ValueError(f"study {self.name!r} got the manifest of {manifest.get('study')!r}")
        report = self.report(config, tables, manifest)
        return write_report_folder(out, tables, report, files=files)


def _study(name: str, question: str, config_class: str, tables: tuple[str, ...],
           run_function: str, report_function: str, **options: Any) -> Study:
    return Study(name, question, f"estimator_lab.studies.{name}", config_class, tables,
                 run_function, report_function, **options)


STUDIES: Mapping[str, Study] = MappingProxyType({study.name: study for study in (
    _study("bias_small_graphs", "every estimator on a suite of small graphs against exact truth",
           "SmallGraphsConfig", ("summary", "tensors", "coordinates", "graphs"),
           "run_small_graphs", "small_graphs_report", report_tables=("summary", "graphs")),
    _study("optimal_baseline", "variance reduction of the Eq. 10 baseline, exact and on MNIST",
           "OptimalBaselineConfig", ("exact", "ratios", "gaps", "summary", "training"),
           "run_optimal_baseline", "optimal_baseline_report"),
    _study("mnist_variance", "every estimator on the full network through training",
           "MnistVarianceConfig", ("summary", "ratios", "sparsity", "temperature", "training"),
           "run_mnist_variance", "mnist_variance_report"),
    _study("paper_table", "the paper's seven gaters: table and learning curves",
           "PaperTableConfig", ("table", "curves", "sparse", "gate_usage"),
           "run_paper_table", "report_from_tables"),
    _study("bias", "which estimators are biased on a small graph, against its exact gradient",
           "BiasConfig", ("results", "summary"), "run_bias", "bias_report",
           check_function="check_tables", command="bias"),
    _study("demo", "the gradient variance of estimators per parameter group of the paper "
           "network", "DemoConfig", ("results", "bias_check"), "run_demo", "demo_report",
           check_function="check_tables", command="demo"),
    _study("variance", "the variance and bias of estimators per parameter group, on the paper "
           "network or a small graph", "VarianceConfig", ("summary", "gates", "ratios"),
           "run_variance", "variance_report", check_function="check_tables",
           command="variance"),
)})
"""Every study, by name: the registry of `estimator-lab run` and `estimator-lab report`."""
