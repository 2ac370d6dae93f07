"""Writes that leave nothing half-done on disk: a crash leaves the old file or none."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes `data` to `path` through a temporary file in the same folder and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_directory(path: str | Path) -> Iterator[Path]:
    """Yields an empty staging folder that replaces `path` whole when the block succeeds.

    Everything is written into a hidden sibling folder; on success an existing `path` is moved
    aside and the staging folder renamed into place; on error the staging folder is removed and
    `path` is left as it was.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with staged_directory(root / "report") as stage:
        ...     _ = (stage / "report.md").write_text("# hi")
        >>> sorted(p.name for p in (root / "report").iterdir())
        ['report.md']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.staging-"))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
        os.replace(path, old / path.name)
    os.replace(stage, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
