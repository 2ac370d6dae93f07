"""The manifest every report carries: versions, seed, device, git revision, wall time, peak
memory, writer."""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

_PACKAGES = ("estimator_lab", "torch", "numpy", "scipy", "statsmodels", "pandas", "seaborn")


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def utc_now() -> str:
    """The current UTC time in ISO 8601, to the second (e.g. `2026-01-31T12:00:00+00:00`)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_identity() -> dict:
    """Which run this process is: `{"host": ..., "pid": ...}`.

    With the manifest's `created` time it names the run that wrote a report folder; the writer's
    lock of a folder (`claim_output_folder`) holds the same identity.
    """
    return {"host": socket.gethostname(), "pid": os.getpid()}


def git_revision(path: str | Path = ".") -> str | None:
    """`HEAD`'s commit of the checkout holding `path`, suffixed `-dirty` when it has changes."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=path, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        revision = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return revision + ("-dirty" if dirty else "")


def peak_memory_mib() -> dict[str, float]:
    """This process's peak memory so far, in MiB: `{"rss": ...}` (the resident set's high-water
    mark, `getrusage`), plus `{"cuda": ...}` (the most tensor memory allocated on the current GPU)
    when this process has used CUDA.

    Example:
        >>> peak_memory_mib()["rss"] > 0
        True
    """
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peak = {"rss": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        peak["cuda"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def run_manifest(*, seed: int | None, device: str, wall_time_s: float, **extra: Any) -> dict:
    """A JSON-ready record of how a result was made.

    Args:
        seed: the run's seed.
        device: the device the draws ran on, in words (e.g. `"cpu"`, `"cuda: NVIDIA H100"`).
        wall_time_s: seconds the run took.
        **extra: study-specific entries (configuration, command line).

    The record also holds the time (`created`), the run that made it (`run`: host and pid,
    `run_identity`), the process's peak memory up to now (`peak_memory_mib`), the git revision,
    Python, the platform and the package versions.
    """
    return {
        "created": utc_now(),
        "run": run_identity(),
        "seed": seed,
        "device": device,
        "wall_time_s": round(wall_time_s, 3),
        "peak_memory_mib": peak_memory_mib(),
        "git_revision": git_revision(Path(__file__).parent),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {name: _package_version(name) for name in _PACKAGES},
        **extra,
    }
