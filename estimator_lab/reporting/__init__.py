"""Report writing: atomic files, manifests, Markdown tables."""

from estimator_lab.reporting.files import atomic_write_bytes, atomic_write_text, staged_directory
from estimator_lab.reporting.manifest import git_revision, run_manifest
from estimator_lab.reporting.markdown import format_number, markdown_table

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "format_number",
    "git_revision",
    "markdown_table",
    "run_manifest",
    "staged_directory",
]
