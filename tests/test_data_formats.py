"""The parsers on files written in the real formats (IDX, CIFAR-10 binary), and the generators that write them."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from fakedata import cifar10_records, make_cifar10_binary, make_mnist_like, write_idx, write_tar_gz
from grutune.data.formats import CIFAR10_MEMBERS, CIFAR10_META, load_raw, read_cifar10_binary, read_idx
from grutune.data.registry import DATASETS
from grutune.errors import DataError

CIFAR_CLASSES = "\n".join(DATASETS["cifar10"].classes).encode()


# =========================================================================== IDX


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([0, 9, 3, 255], dtype=np.uint8),
        np.array([[-5, 70000], [1, 2]], dtype=np.int32),
        np.array([0.5, -1.25, 3e7], dtype=np.float32),
    ],
    ids=["uint8-3d", "uint8-1d", "int32-2d", "float32-1d"],
)
def test_read_idx_round_trips_exactly(tmp_path, array, gz):
    path = write_idx(tmp_path / "a.idx", array, gz=gz)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
    got = read_idx(path)
    assert got.shape == array.shape and got.dtype == array.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_read_idx_header_layout_matches_the_spec(tmp_path):
    """Magic 0x00000803 then big-endian dims, as the MNIST page documents."""
    path = write_idx(tmp_path / "a", np.zeros((60000, 28, 28), np.uint8)[:2], gz=False)
    assert path.read_bytes()[:16] == bytes.fromhex("00000803000000020000001c0000001c")


def _raw_idx(tmp_path, array=None) -> bytes:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4) if array is None else array
    return write_idx(tmp_path / "src", array, gz=False).read_bytes()


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b"\x01\x02" + b[2:], "bad magic number"),
        (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX dtype code 0x07"),
        (lambda b: b[:-1], "payload is 11 bytes.*needs 12"),
        (lambda b: b + b"\0", "payload is 13 bytes.*needs 12"),
        (lambda b: b[:6], "declares 2 dimensions"),
        (lambda b: b"", "bad magic number empty"),
    ],
    ids=["magic", "dtype", "truncated", "trailing", "short-header", "empty"],
)
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_rejects_malformed_files_naming_them(tmp_path, mangle, message, gz):
    data = mangle(_raw_idx(tmp_path))
    bad = tmp_path / "bad-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match=message) as e:
        read_idx(bad)
    assert str(bad) in str(e.value)


def test_read_idx_rejects_a_truncated_gzip(tmp_path):
    good = write_idx(tmp_path / "good.gz", np.random.default_rng(0).integers(0, 255, (50, 28, 28), np.uint8))
    bad = tmp_path / "bad.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{bad}: not a valid gzip file"):
        read_idx(bad)


def _write_mnist(directory, x_train, y_train, x_test, y_test):
    for prefix, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", y)


def test_load_raw_mnist_round_trips_and_adds_a_channel(tmp_path):
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.integers(0, 256, (30, 28, 28), np.uint8), rng.integers(0, 256, (7, 28, 28), np.uint8)
    y_tr, y_te = (np.arange(30) % 10).astype(np.uint8), np.arange(7, dtype=np.uint8)
    _write_mnist(tmp_path, x_tr, y_tr, x_te, y_te)
    x_train, y_train, x_test, y_test, classes = load_raw("mnist", tmp_path)
    assert x_train.shape == (30, 28, 28, 1) and x_test.shape == (7, 28, 28, 1)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64 and y_test.dtype == np.int64
    np.testing.assert_array_equal(x_train[..., 0], x_tr)
    np.testing.assert_array_equal(x_test[..., 0], x_te)
    np.testing.assert_array_equal(y_train, y_tr)
    np.testing.assert_array_equal(y_test, y_te)
    assert classes == DATASETS["mnist"].classes


@pytest.mark.parametrize(
    "case, bad_file, message",
    [
        ("label-range", "train-labels-idx1-ubyte.gz", "label 10 out of range"),
        ("count", "t10k-labels-idx1-ubyte.gz", "4 labels for 5 images"),
        ("image-shape", "train-images-idx3-ubyte.gz", r"expected uint8 images of shape \(N, 28, 28\)"),
        ("label-dtype", "train-labels-idx1-ubyte.gz", "expected a 1-d uint8 label array"),
    ],
)
def test_load_raw_rejects_inconsistent_idx_files(tmp_path, case, bad_file, message):
    x_tr, y_tr = np.zeros((10, 28, 28), np.uint8), (np.arange(10) % 10).astype(np.uint8)
    x_te, y_te = np.zeros((5, 28, 28), np.uint8), np.arange(5, dtype=np.uint8)
    if case == "label-range":
        y_tr[3] = 10
    elif case == "count":
        y_te = y_te[:4]
    elif case == "image-shape":
        x_tr = np.zeros((10, 28, 27), np.uint8)
    elif case == "label-dtype":
        y_tr = y_tr.astype(np.int32)
    _write_mnist(tmp_path, x_tr, y_tr, x_te, y_te)
    with pytest.raises(DataError, match=message) as e:
        load_raw("fashion_mnist", tmp_path)
    assert str(tmp_path / bad_file) in str(e.value)


def test_load_raw_names_missing_files(tmp_path):
    make_mnist_like(tmp_path, 20, 10, seed=0)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte.gz.*run the fetch stage"):
        load_raw("mnist", tmp_path)


# =========================================================================== CIFAR-10 binary


def _cifar_members(n_per_batch=3, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    members, arrays = {}, {}
    for i, member in enumerate(CIFAR10_MEMBERS):
        n = n_test if member.endswith("test_batch.bin") else n_per_batch
        y = ((np.arange(n) + i) % 10).astype(np.uint8)
        chw = rng.integers(0, 256, (n, 3, 32, 32), np.uint8)
        members[member], arrays[member] = cifar10_records(y, chw), (y, chw)
    members[CIFAR10_META] = CIFAR_CLASSES + b"\n\n"
    return members, arrays


def test_read_cifar10_binary_round_trips_channel_major_records(tmp_path):
    members, arrays = _cifar_members()
    path = write_tar_gz(tmp_path / "cifar-10-binary.tar.gz", members)
    x_train, y_train, x_test, y_test, classes = read_cifar10_binary(path)
    assert x_train.shape == (15, 32, 32, 3) and x_test.shape == (4, 32, 32, 3)
    assert x_train.dtype == np.uint8 and x_train.flags.c_contiguous
    train = [arrays[m] for m in CIFAR10_MEMBERS[:-1]]
    np.testing.assert_array_equal(y_train, np.concatenate([y for y, _ in train]))
    np.testing.assert_array_equal(x_train, np.concatenate([chw for _, chw in train]).transpose(0, 2, 3, 1))
    y, chw = arrays[CIFAR10_MEMBERS[-1]]
    np.testing.assert_array_equal(y_test, y)
    # record layout: byte 1 + c*1024 + h*32 + w is channel c, row h, column w
    raw = members[CIFAR10_MEMBERS[-1]]
    assert x_test[2, 5, 7, 1] == raw[2 * 3073 + 1 + 1 * 1024 + 5 * 32 + 7]
    assert classes == DATASETS["cifar10"].classes


def test_load_raw_cifar10(tmp_path):
    make_cifar10_binary(tmp_path, n_train_per_batch=4, n_test=10, seed=1)
    x_train, y_train, x_test, y_test, classes = load_raw("cifar10", tmp_path)
    assert x_train.shape == (20, 32, 32, 3) and x_test.shape == (10, 32, 32, 3)
    assert y_train.dtype == np.int64 and set(y_test.tolist()) == set(range(10))
    assert classes == DATASETS["cifar10"].classes


@pytest.mark.parametrize(
    "case, message",
    [
        ("record-size", r"test_batch.bin is 12291 bytes, not a positive multiple of the 3073-byte record"),
        ("missing-member", "member cifar-10-batches-bin/data_batch_3.bin missing"),
        ("label-range", "label 12 out of range"),
        ("classes", "batches.meta.txt lists classes"),
    ],
)
def test_cifar10_rejects_malformed_archives_naming_them(tmp_path, case, message):
    members, _ = _cifar_members()
    if case == "record-size":
        members[CIFAR10_MEMBERS[-1]] = members[CIFAR10_MEMBERS[-1]][:-1]
    elif case == "missing-member":
        del members["cifar-10-batches-bin/data_batch_3.bin"]
    elif case == "label-range":
        b = bytearray(members[CIFAR10_MEMBERS[0]])
        b[3073] = 12
        members[CIFAR10_MEMBERS[0]] = bytes(b)
    elif case == "classes":
        members[CIFAR10_META] = b"cat\ndog\n"
    path = write_tar_gz(tmp_path / "cifar-10-binary.tar.gz", members)
    with pytest.raises(DataError, match=message) as e:
        load_raw("cifar10", tmp_path)
    assert str(path) in str(e.value)


def test_cifar10_rejects_a_truncated_archive(tmp_path):
    path = make_cifar10_binary(tmp_path, 20, 20, seed=0)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=rf"{path}: not a readable tar.gz"):
        read_cifar10_binary(path)


# =========================================================================== generators


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda d, seed: make_mnist_like(d, 25, 12, seed), "mnist"),
        (lambda d, seed: make_cifar10_binary(d, 5, 12, seed), "cifar10"),
    ],
)
def test_generators_are_deterministic_cover_all_classes_and_depend_on_the_label(tmp_path, make, name):
    make(tmp_path / "a", 0), make(tmp_path / "b", 0), make(tmp_path / "c", 1)
    for f in DATASETS[name].files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()
    x_train, y_train, x_test, y_test, _ = load_raw(name, tmp_path / "a")
    assert set(y_train.tolist()) == set(y_test.tolist()) == set(range(10))
    # nearest class mean on train classifies test perfectly: the images carry their label
    means = np.stack([x_train[y_train == k].reshape(-1, x_train[0].size).mean(0) for k in range(10)])
    dist = ((x_test.reshape(len(x_test), 1, -1).astype(float) - means[None]) ** 2).sum(-1)
    assert (dist.argmin(1) == y_test).all()
