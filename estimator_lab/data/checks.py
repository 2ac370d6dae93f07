"""What a valid MNIST split is: its size, array shapes and dtypes, and value ranges.

Images are `N x 784` float32 arrays with values in `[0, 1)`, labels `N` int64 arrays in `0..9`.
Every source (the package-index pickle, the `.npz` cache, an explicit `.npz`, IDX files) is
checked here before it is used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from estimator_lab.data.errors import BadData

SPLIT_SIZES: dict[str, int] = {"train": 50_000, "valid": 10_000, "test": 10_000}
"""The number of examples in each split, in the order the pickle stores them."""

N_FEATURES = 784
N_CLASSES = 10


def check_split(split: str, images: Any, labels: Any) -> None:
    """Raise `BadData` unless `images`/`labels` are a valid `split` (shapes, dtypes, ranges)."""
    n = SPLIT_SIZES[split]
    _check_array(f"{split}_images", images, (n, N_FEATURES), np.float32)
    _check_array(f"{split}_labels", labels, (n,), np.int64)
    lo, hi = float(images.min()), float(images.max())
    if not (lo >= 0.0 and hi < 1.0):  # also catches NaN
        raise BadData(f"{split}_images values must lie in [0, 1), got [{lo:g}, {hi:g}]")
    lo_label, hi_label = int(labels.min()), int(labels.max())
    if lo_label < 0 or hi_label >= N_CLASSES:
        raise BadData(
            f"{split}_labels must lie in 0..{N_CLASSES - 1}, got {lo_label}..{hi_label}"
        )


def _check_array(name: str, array: Any, shape: tuple[int, ...], dtype: type) -> None:
    expected = f"a {np.dtype(dtype)} array of shape {shape}"
    if not isinstance(array, np.ndarray):
        raise BadData(f"{name}: expected {expected}, got {type(array).__name__}")
    if array.shape != shape or array.dtype != dtype:
        raise BadData(
            f"{name}: expected {expected}, got a {array.dtype} array of shape {array.shape}"
        )


def describe_split(images: np.ndarray | None, labels: np.ndarray | None) -> dict[str, Any]:
    """What `images`/`labels` hold (count, shapes, dtypes, range, class counts), valid or not."""
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
            and labels.max() < N_CLASSES
        ):
            entry["class_counts"] = np.bincount(labels, minlength=N_CLASSES).tolist()
    return entry
