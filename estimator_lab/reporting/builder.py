"""A report as structured blocks, written as Markdown, one self-contained HTML page and LaTeX.

A `Report` holds a title, blocks of Markdown text, tables (DataFrames) and figures (matplotlib
`Figure` objects) with captions, and the run's manifest. `Report.write(folder)` renders it:

- `report.md`: the text, tables as Markdown tables, figures linked as `NAME.png` (with a link to
  `NAME.pdf`), and a closing "Manifest" section;
- `report.html`: the same content on one page, figures embedded as base64 PNG data URIs, CSS
  inline, nothing loaded from elsewhere;
- `tables.tex`: every table as a booktabs `table` environment (`latex_table`);
- `NAME.png` (150 dpi) and `NAME.pdf` per figure, and `manifest.json`.

Writing is deterministic: the same report (or one rebuilt from the same saved tables) gives
byte-identical files, because no timestamp enters them (PNG without the `Software` entry, PDF
without `CreationDate`/`ModDate`; the manifest's own `created` entry is data).
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from estimator_lab.atomic import atomic_write_bytes, atomic_write_text
from estimator_lab.reporting.files import staged_directory
from estimator_lab.reporting.html import html_page, html_table, inline_html, markdown_to_html
from estimator_lab.reporting.latex import latex_table
from estimator_lab.reporting.markdown import markdown_table

PNG_DPI = 150
_FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_RESERVED_NAMES = frozenset({"report", "tables", "manifest"})


@dataclass(frozen=True)
class ReportTable:
    """A table block: the rows, a caption (inline Markdown), its LaTeX label and precision."""

    frame: pd.DataFrame
    caption: str
    label: str
    digits: int = 3


@dataclass(frozen=True)
class ReportFigure:
    """A figure block: the figure, a caption (inline Markdown) and its file stem."""

    figure: Figure
    caption: str
    name: str


def figure_bytes(figure: Figure, fmt: str) -> bytes:
    """`figure` as PNG (150 dpi) or PDF bytes without timestamps or version stamps in them.

    Args:
        figure: the figure.
        fmt: `"png"` or `"pdf"`.
    """
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None}}
    if fmt not in metadata:
        raise ValueError(f"figure format must be 'png' or 'pdf', got {fmt!r}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=metadata[fmt])
    return buffer.getvalue()


def _json_ready(manifest: Mapping[str, Any]) -> dict:
    # The manifest as `manifest.json` will hold it (tuples as lists, odd objects as strings),
    # so a report rebuilt from `manifest.json` renders exactly like the original.
    return json.loads(json.dumps(dict(manifest), default=str))


def _manifest_rows(manifest: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in manifest.items():
        if isinstance(value, dict) and value:
            yield from _manifest_rows(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value if isinstance(value, str) else json.dumps(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "table"


@dataclass
class Report:
    """A study's report: blocks of text, tables and figures, and the run's manifest.

    Blocks appear in the order they are added; the manifest closes every rendering. Captions
    and text are Markdown (`markdown_to_html` lists the subset the HTML page understands).

    Attributes:
        title: the report's title (the `#` heading).
        manifest: how the results were made (`run_manifest`); kept in its JSON form.
        blocks: the text (`str`), `ReportTable` and `ReportFigure` blocks, in order.

    Example:
        >>> report = Report("Demo", {"seed": 0, "versions": {"torch": "2.4"}})
        >>> report = report.add_section("Results", "**Variance** of `st`.")
        >>> report = report.add_table(pd.DataFrame({"estimator": ["st"], "variance": [0.5]}),
        ...                           "Variance per estimator")
        >>> print(report.markdown())
        # Demo
        <BLANKLINE>
        ## Results
        <BLANKLINE>
        **Variance** of `st`.
        <BLANKLINE>
        **Table 1.** Variance per estimator
        <BLANKLINE>
        | estimator | variance |
        |:---|---:|
        | st | 0.5 |
        <BLANKLINE>
        ## Manifest
        <BLANKLINE>
        How these results were made (also in `manifest.json`).
        <BLANKLINE>
        | entry | value |
        |:---|:---|
        | seed | 0 |
        | versions.torch | 2.4 |
        <BLANKLINE>
    """

    title: str
    manifest: dict
    blocks: list[str | ReportTable | ReportFigure] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.manifest = _json_ready(self.manifest)

    def add_text(self, markdown: str) -> Report:
        """Appends a block of Markdown text; returns the report."""
        self.blocks.append(markdown.strip())
        return self

    def add_section(self, heading: str, markdown: str = "") -> Report:
        """Appends a `##` heading and, if given, a block of Markdown text; returns the report."""
        self.add_text(f"## {heading}")
        return self.add_text(markdown) if markdown.strip() else self

    def add_table(
        self, frame: pd.DataFrame, caption: str, *, label: str | None = None, digits: int = 3
    ) -> Report:
        """Appends a table (index dropped); returns the report.

        Args:
            frame: the rows.
            caption: inline Markdown.
            label: the LaTeX label (default `tab:` and a slug of the caption).
            digits: significant figures of floating-point cells.

        Raises:
            ValueError: the label is taken by an earlier table.
        """
        label = label or f"tab:{_slug(caption)}"
        if label in {t.label for t in self._of(ReportTable)}:
            raise ValueError(f"table label {label!r} is already used in this report")
        self.blocks.append(ReportTable(frame.reset_index(drop=True), caption, label, digits))
        return self

    def add_figure(self, figure: Figure, caption: str, *, name: str) -> Report:
        """Appends a figure saved as `name.png` and `name.pdf`; returns the report.

        Raises:
            ValueError: `name` is not a plain file stem, is reserved or is already used.
        """
        if not _FIGURE_NAME.fullmatch(name) or name in _RESERVED_NAMES:
            raise ValueError(
                f"figure name {name!r} must be letters, digits, '_' and '-' and not one of "
                f"{sorted(_RESERVED_NAMES)}"
            )
        if name in {f.name for f in self._of(ReportFigure)}:
            raise ValueError(f"figure name {name!r} is already used in this report")
        self.blocks.append(ReportFigure(figure, caption, name))
        return self

    def _of(self, kind: type) -> list:
        return [block for block in self.blocks if isinstance(block, kind)]

    def _manifest_frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(_manifest_rows(self.manifest)), columns=["entry", "value"])

    def _numbered(self) -> Iterator[tuple[int, str | ReportTable | ReportFigure]]:
        # Tables and figures are numbered separately, in order; text blocks get 0.
        counts = {ReportTable: 0, ReportFigure: 0}
        for block in self.blocks:
            if type(block) in counts:
                counts[type(block)] += 1
            yield counts.get(type(block), 0), block

    def markdown(self) -> str:
        """The report as Markdown (`report.md`)."""
        parts = [f"# {self.title}"]
        for number, block in self._numbered():
            if isinstance(block, ReportTable):
                parts += [f"**Table {number}.** {block.caption}",
                          markdown_table(block.frame, block.digits)]
            elif isinstance(block, ReportFigure):
                parts += [f"![Figure {number}]({block.name}.png)",
                          f"**Figure {number}.** {block.caption} ([PDF]({block.name}.pdf))"]
            else:
                parts.append(block)
        parts += ["## Manifest", "How these results were made (also in `manifest.json`).",
                  markdown_table(self._manifest_frame())]
        return "\n\n".join(parts) + "\n"

    def html(self, pngs: Mapping[str, bytes] | None = None) -> str:
        """The report as one self-contained HTML page (`report.html`).

        Args:
            pngs: figure name -> PNG bytes already rendered (default: rendered here).
        """
        if pngs is None:
            pngs = {f.name: figure_bytes(f.figure, "png") for f in self._of(ReportFigure)}
        uris = {
            name: "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            for name, data in pngs.items()
        }
        images = {f"{name}.png": uri for name, uri in uris.items()}
        parts = [f"<h1>{inline_html(self.title)}</h1>"]
        for number, block in self._numbered():
            if isinstance(block, ReportTable):
                parts.append(html_table(block.frame, caption=f"**Table {number}.** "
                                        f"{block.caption}", digits=block.digits))
            elif isinstance(block, ReportFigure):
                parts.append(
                    f'<figure>\n<img src="{uris[block.name]}" alt="Figure {number}">\n'
                    f"<figcaption>{inline_html(f'**Figure {number}.** {block.caption}')}"
                    "</figcaption>\n</figure>"
                )
            else:
                parts.append(markdown_to_html(block, images=images))
        parts += ["<h2>Manifest</h2>",
                  markdown_to_html("How these results were made (also in `manifest.json`)."),
                  html_table(self._manifest_frame())]
        return html_page(self.title.replace("`", ""), "\n".join(parts))

    def latex(self) -> str:
        """Every table as a booktabs `table` environment (`tables.tex`)."""
        title = " ".join(self.title.split())
        header = f"% Tables of the report: {title}\n% Needs \\usepackage{{booktabs}}.\n"
        return "\n".join([header, *(
            latex_table(t.frame, caption=t.caption, label=t.label, digits=t.digits)
            for t in self._of(ReportTable)
        )])

    def write(self, folder: str | Path) -> Path:
        """Writes the report's files into `folder` (created if needed; other files kept).

        Returns:
            the path of `report.md`.
        """
        folder = Path(folder)
        pngs = {}
        for figure in self._of(ReportFigure):
            pngs[figure.name] = figure_bytes(figure.figure, "png")
            atomic_write_bytes(folder / f"{figure.name}.png", pngs[figure.name])
            atomic_write_bytes(folder / f"{figure.name}.pdf", figure_bytes(figure.figure, "pdf"))
        atomic_write_text(folder / "tables.tex", self.latex())
        atomic_write_text(folder / "report.html", self.html(pngs))
        atomic_write_text(folder / "manifest.json", json.dumps(self.manifest, indent=2) + "\n")
        return atomic_write_text(folder / "report.md", self.markdown())


def write_report_folder(out: str | Path, tables: Mapping[str, pd.DataFrame],
                        report: Report, *, files: Callable[[Path], None] | None = None) -> Path:
    """Writes each table as `NAME.csv` (no index), the other files `files(stage)` writes (a
    graph's state, a Parquet copy) and `report`'s files into a staging folder that replaces
    `out` whole (`staged_directory`); returns the path of `out`'s `report.md`.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "study"
        >>> report = Report("A study", {"seed": 0})
        >>> write_report_folder(out, {"results": pd.DataFrame({"x": [1]})}, report).name
        'report.md'
        >>> sorted(p.name for p in out.iterdir())[:3]
        ['manifest.json', 'report.html', 'report.md']
    """
    with staged_directory(out) as stage:
        for name, table in tables.items():
            table.to_csv(stage / f"{name}.csv", index=False)
        if files is not None:
            files(stage)
        report.write(stage)
    return Path(out) / "report.md"

