"""The standard IDX files of MNIST, read into the train, valid and test splits.

The 60,000 IDX training examples split into train (the first 50,000) and valid (the last
10,000); test is the t10k set. The pickle's pixel values are exact multiples of 1/256 (the
largest is 255/256), so IDX pixels (uint8) are scaled by 1/256, not 1/255: both sources then give
values in `[0, 1)` on the same grid.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from estimator_lab.data.checks import N_FEATURES, SPLIT_SIZES
from estimator_lab.data.errors import MNISTError, describe_exc

# (images file, labels file, number of examples)
_IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000)
_IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000)
_IDX_UBYTE = 0x08


def load_idx_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """`split` from the four IDX files in `directory` (each optionally `.gz`), not yet checked.

    Returns:
        a `N x 784` float32 array in `[0, 1)` and a `N` int64 array.

    Raises:
        MNISTError: a file is missing, unreadable, or not a uint8 IDX array of MNIST's shape.
    """
    images_name, labels_name, n = _IDX_TEST if split == "test" else _IDX_TRAIN
    raw_images = _read_idx(_find_idx(directory, images_name), (n, 28, 28))
    raw_labels = _read_idx(_find_idx(directory, labels_name), (n,))
    if split == "train":
        rows = slice(0, SPLIT_SIZES["train"])
    elif split == "valid":
        rows = slice(SPLIT_SIZES["train"], SPLIT_SIZES["train"] + SPLIT_SIZES["valid"])
    else:
        rows = slice(0, n)
    images = raw_images[rows].reshape(-1, N_FEATURES).astype(np.float32) * np.float32(1 / 256)
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
        raise MNISTError(f"MNIST IDX file {file} cannot be read: {describe_exc(exc)}") from exc
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
