"""Shared fixture of the study tests: a report folder rebuilds byte-identically."""

import pytest

from estimator_lab.studies.rebuild import rebuild_report

REPORT_FILES = ["report.md", "report.html", "tables.tex", "manifest.json"]


def _assert_rebuilt_identically(folder):
    """Deletes a report folder's report files and figures, rebuilds them from its saved
    tables (`estimator-lab report`) and checks every file is byte-identical."""
    figures = sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".pdf"))
    assert figures, f"{folder} has no figures"
    names = REPORT_FILES + figures
    original = {name: (folder / name).read_bytes() for name in names}
    for name in names:
        if name != "manifest.json":  # the rebuild reads it (and writes it again)
            (folder / name).unlink()
    assert rebuild_report(folder) == folder / "report.md"
    for name in names:
        assert (folder / name).read_bytes() == original[name], name


@pytest.fixture
def assert_rebuilt_identically():
    return _assert_rebuilt_identically
