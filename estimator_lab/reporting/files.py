"""Writes that leave nothing half-done on disk: a crash leaves the old file or none.

Files and folders get the modes a plain `open` or `mkdir` would give (0666 and 0777 less the
umask), and a file or folder that is replaced keeps its mode. A report folder is written by one
run at a time: `claim_output_folder` takes its writer's lock, `staged_directory` replaces it
whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from estimator_lab.atomic import file_mode, new_folder
from estimator_lab.reporting.manifest import run_identity, utc_now


class OutputFolderBusy(ValueError):
    """Another live run holds the writer's lock of a report folder; one line says which."""


def check_output_folder(path: str | Path) -> Path:
    """Checks that a report folder can be written at `path` without losing anything.

    Call it before any long work: `path` must not be an existing file, or an existing folder
    that is not empty and holds no `manifest.json` (not a report folder; replacing it would
    delete its files), and its nearest existing parent must be a folder this process may
    write in.

    Args:
        path: the report folder to write (e.g. a command's `--out`).

    Returns:
        `path` as a `Path`.

    Raises:
        ValueError: one line saying why the folder cannot be written there.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (root / "notes.txt").write_text("keep me")
        >>> check_output_folder(root / "notes.txt")
        Traceback (most recent call last):
        ...
        ValueError: output folder ... is an existing file, not a folder: refusing to replace it
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise ValueError(f"output folder {path} is an existing file, not a folder: "
                             "refusing to replace it")
        if not (path / "manifest.json").is_file() and any(path.iterdir()):
            raise ValueError(f"output folder {path} holds files but no manifest.json (not a "
                             "report folder): refusing to replace it; choose a new or empty folder")
    anchor = next(p for p in path.absolute().parents if p.exists())
    if not anchor.is_dir():
        raise ValueError(f"output folder {path} cannot be made: {anchor} is a file")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {path} cannot be written: no write permission in {anchor}")
    return path


def _lock_holder(fd: int) -> str:
    # The lock file's run identity in words (it may be empty while its holder writes it).
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def claim_output_folder(path: str | Path) -> Iterator[Path]:
    """Holds the writer's lock of a report folder for the block; a second writer is refused.

    The lock is an `fcntl.flock` on `.NAME.lock` beside the folder (the folder itself is
    replaced whole, so a lock inside it would move with it). The kernel drops the lock when its
    process ends, so a killed run never leaves a stale lock; the file holds the holder's run
    identity (`run_identity`: host, pid) and the time it was taken, named in the refusal, and
    is removed on release. A process's own claims nest: `staged_directory` claims the folder it
    replaces, inside the claim a command takes before its long work.

    Args:
        path: the report folder (checked by `check_output_folder` first).

    Yields:
        `path` as an absolute `Path`.

    Raises:
        OutputFolderBusy: another live process holds the lock (a `ValueError`).
        ValueError: `check_output_folder` refuses `path`.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with claim_output_folder(root / "report") as folder:
        ...     sorted(p.name for p in root.iterdir())
        ['.report.lock']
        >>> sorted(p.name for p in root.iterdir())
        []
    """
    path = Path(os.path.abspath(check_output_folder(path)))  # `.`, `..` resolved: a real name
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    me = run_identity()
    fd = _take_lock(lock, path, mine=f"pid {me['pid']} on {me['host']} ")
    if fd is None:  # this process holds it already: a nested claim
        yield path
        return
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**me, "since": utc_now()}).encode("utf-8"), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _take_lock(lock: Path, path: Path, mine: str) -> int | None:
    # The locked descriptor of `lock`, or None when this process (`mine`) holds it already.
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            if holder.startswith(mine):
                return None
            raise OutputFolderBusy(f"output folder {path} is being written by another run "
                                   f"({holder}; lock {lock})") from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                return fd  # still the lock file, not one its last holder removed meanwhile
        os.close(fd)


def _swap_into_place(stage: Path, path: Path) -> None:
    # Moves an existing `path` aside, renames `stage` to `path` (with the old folder's mode) and
    # deletes the old folder; if the rename fails, the old folder is moved back.
    if not (path.exists() or path.is_symlink()):
        os.replace(stage, path)
        return
    os.chmod(stage, file_mode(path))
    aside = new_folder(path.parent, f".{path.name}.old-")
    try:
        os.replace(path, aside / path.name)
    except BaseException:
        aside.rmdir()
        raise
    try:
        os.replace(stage, path)
    except BaseException:
        os.replace(aside / path.name, path)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _clear_dead_writers(path: Path) -> None:
    # Under the writer's lock, staging and aside folders of `path` are those of a killed writer:
    # a previous report moved aside while `path` is missing (killed between the swap's two
    # renames) is moved back, and the rest is deleted.
    for aside in path.parent.glob(f".{path.name}.old-*"):
        if not (path.exists() or path.is_symlink()) and (aside / path.name).is_dir():
            os.replace(aside / path.name, path)
        shutil.rmtree(aside, ignore_errors=True)
    for stage in path.parent.glob(f".{path.name}.staging-*"):
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(path: str | Path) -> Iterator[Path]:
    """Yields an empty staging folder that replaces `path` whole when the block succeeds.

    Everything is written into a hidden sibling folder; on success an existing `path` is moved
    aside and the staging folder renamed into place (keeping the old folder's mode); on error
    the staging folder is removed and `path` is left as it was. The folder is claimed for the
    block (`claim_output_folder`): a second writer is refused, and an existing file or
    non-report folder at `path` is never replaced.

    Raises:
        OutputFolderBusy: another run is writing `path`.
        ValueError: `check_output_folder` refuses `path`.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with staged_directory(root / "report") as stage:
        ...     _ = (stage / "report.md").write_text("# hi")
        >>> sorted(p.name for p in (root / "report").iterdir())
        ['report.md']
    """
    with claim_output_folder(path) as path:
        _clear_dead_writers(path)
        stage = new_folder(path.parent, f".{path.name}.staging-")
        try:
            yield stage
            _swap_into_place(stage, path)
        finally:
            shutil.rmtree(stage, ignore_errors=True)  # gone already after a successful swap
