"""The train/val split, the prepared .npz and its content hash, and reading it back."""

from __future__ import annotations

import numpy as np
import pytest

import grutune.data
from fakedata import make_mnist_like, write_idx
from grutune.data.formats import load_raw, read_idx
from grutune.data.prepared import load_prepared, prepare, split_indices
from grutune.data.registry import DATASETS
from grutune.errors import ConfigError, DataError


def test_the_public_face_names_the_functions_not_the_modules():
    """`from grutune.data import prepare` is the function (the module is `prepared`, so the names cannot clash)."""
    assert grutune.data.prepare is prepare and grutune.data.load_prepared is load_prepared
    assert set(grutune.data.__all__) <= set(dir(grutune.data))


def test_split_indices_sizes_disjoint_and_seeded():
    train, val = split_indices(103, 0.1, seed=3)
    assert len(val) == 10 and len(train) == 93
    assert not set(train) & set(val) and set(train) | set(val) == set(range(103))
    again = split_indices(103, 0.1, seed=3)
    np.testing.assert_array_equal(val, again[1])
    assert not np.array_equal(val, split_indices(103, 0.1, seed=4)[1])


def test_split_indices_limits():
    assert len(split_indices(5, 0.01, 0)[1]) == 1  # at least one validation image
    with pytest.raises(DataError, match="leaves none to train on"):
        split_indices(5, 0.95, 0)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match="prepare.val_fraction must be in"):
            split_indices(5, bad, 0)


@pytest.fixture
def raw_mnist(tmp_path):
    make_mnist_like(tmp_path / "raw", n_train=60, n_test=20, seed=0)
    return tmp_path / "raw"


def test_prepare_writes_the_split_and_a_summary(tmp_path, raw_mnist):
    meta = prepare("mnist", raw_mnist, tmp_path / "out" / "mnist.npz", val_fraction=0.25, seed=7)
    assert meta == {
        "dataset": "mnist",
        "content_hash": meta["content_hash"],
        "n_train": 45,
        "n_val": 15,
        "n_test": 20,
        "image_shape": [28, 28, 1],
        "classes": list("0123456789"),
    }
    assert meta["content_hash"].startswith("sha256:")
    x_train, y_train, x_test, y_test, _ = load_raw("mnist", raw_mnist)
    train_idx, val_idx = split_indices(60, 0.25, 7)
    with np.load(tmp_path / "out" / "mnist.npz", allow_pickle=False) as npz:
        assert {"x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "classes", "content_hash"} <= set(npz)
        assert npz["classes"].dtype.kind == "U" and npz["content_hash"].shape == ()
        np.testing.assert_array_equal(npz["x_val"], x_train[val_idx])
        np.testing.assert_array_equal(npz["y_train"], y_train[train_idx])
        np.testing.assert_array_equal(npz["x_test"], x_test)
        assert str(npz["content_hash"]) == meta["content_hash"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mnist.npz"]  # no temp file left behind


def test_prepare_is_deterministic_and_the_hash_tracks_the_data(tmp_path, raw_mnist):
    a = prepare("mnist", raw_mnist, tmp_path / "a.npz", 0.2, seed=0)
    b = prepare("mnist", raw_mnist, tmp_path / "b.npz", 0.2, seed=0)
    assert a["content_hash"] == b["content_hash"]
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert prepare("mnist", raw_mnist, tmp_path / "c.npz", 0.2, seed=1)["content_hash"] != a["content_hash"]
    # one pixel changed in the raw data -> a different hash
    x = read_idx(raw_mnist / "t10k-images-idx3-ubyte.gz")
    x[3, 10, 10] ^= 1
    write_idx(raw_mnist / "t10k-images-idx3-ubyte.gz", x)
    assert prepare("mnist", raw_mnist, tmp_path / "d.npz", 0.2, seed=0)["content_hash"] != a["content_hash"]


def test_load_prepared(tmp_path, raw_mnist):
    meta = prepare("mnist", raw_mnist, tmp_path / "p.npz", 0.1, seed=0)
    p = load_prepared(tmp_path / "p.npz")
    assert p.name == "mnist" and p.content_hash == meta["content_hash"]
    assert p.classes == DATASETS["mnist"].classes and p.num_classes == 10 and p.image_shape == (28, 28, 1)
    assert (len(p.x_train), len(p.x_val), len(p.x_test)) == (54, 6, 20)
    for x, y in ((p.x_train, p.y_train), (p.x_val, p.y_val), (p.x_test, p.y_test)):
        assert x.dtype == np.uint8 and x.ndim == 4 and y.dtype == np.int64 and len(x) == len(y)


def test_load_prepared_errors_name_the_path(tmp_path, raw_mnist):
    with pytest.raises(DataError, match=rf"{tmp_path / 'none.npz'}: not found"):
        load_prepared(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=rf"{junk}: not a readable .npz") as err:
        load_prepared(junk)
    assert "allow_pickle" not in str(err.value)  # numpy's advice to unpickle is not passed on
    good = tmp_path / "good.npz"
    prepare("mnist", raw_mnist, good, 0.1, seed=0)
    with np.load(good, allow_pickle=False) as npz:
        arrays = dict(npz)
    arrays["y_test"] = (arrays["y_test"] + 1) % 10
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(DataError, match="content hash mismatch"):
        load_prepared(tmp_path / "tampered.npz")
    del arrays["x_val"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(DataError, match=r"missing arrays \['x_val'\]"):
        load_prepared(tmp_path / "partial.npz")
