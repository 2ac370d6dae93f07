"""Writes that leave nothing half-done on disk: a crash leaves the old file or none.

Files and folders get the modes a plain `open` or `mkdir` would give (0666 and 0777 less the
umask), and a file that is replaced keeps its mode. The ground floor of the package: the
engine's checkpoints, training runs and reports all write through it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path


def file_mode(path: Path) -> int:
    """The permission bits of `path`."""
    return stat.S_IMODE(path.stat().st_mode)


def _new_file(folder: Path, prefix: str) -> tuple[int, Path]:
    # Like `tempfile.mkstemp` (O_EXCL, a random name) but created 0666 less the umask, as
    # `open` would, not 0600.
    while True:
        candidate = folder / f"{prefix}{secrets.token_hex(8)}.tmp"
        with contextlib.suppress(FileExistsError):
            return os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), candidate


def new_folder(parent: Path, prefix: str) -> Path:
    """A new, empty folder `parent/PREFIX<random hex>`, mode 0777 less the umask."""
    # Like `tempfile.mkdtemp` but created 0777 less the umask, as `mkdir` would, not 0700.
    while True:
        candidate = parent / f"{prefix}{secrets.token_hex(8)}"
        with contextlib.suppress(FileExistsError):
            os.mkdir(candidate, 0o777)
            return candidate


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes `data` to `path` through a temporary file in the same folder and `os.replace`.

    A new file gets the mode `open` would give it; an existing file keeps its mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_file(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            if path.exists():
                os.fchmod(handle.fileno(), file_mode(path))
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
