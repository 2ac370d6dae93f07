"""Report writing: atomic files, manifests, Markdown, LaTeX and HTML tables, report builder."""

from estimator_lab.atomic import atomic_write_bytes, atomic_write_text
from estimator_lab.reporting.builder import (
    Report,
    ReportFigure,
    ReportTable,
    figure_bytes,
    write_report_folder,
)
from estimator_lab.reporting.files import staged_directory
from estimator_lab.reporting.html import html_page, html_table, inline_html, markdown_to_html
from estimator_lab.reporting.latex import latex_escape, latex_inline, latex_table
from estimator_lab.reporting.manifest import git_revision, run_manifest
from estimator_lab.reporting.markdown import format_number, markdown_table

__all__ = [
    "Report",
    "ReportFigure",
    "ReportTable",
    "atomic_write_bytes",
    "atomic_write_text",
    "figure_bytes",
    "format_number",
    "git_revision",
    "html_page",
    "html_table",
    "inline_html",
    "latex_escape",
    "latex_inline",
    "latex_table",
    "markdown_table",
    "markdown_to_html",
    "run_manifest",
    "staged_directory",
    "write_report_folder",
]
