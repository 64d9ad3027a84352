"""fetch() against a real loopback HTTP server and local mirrors: what is accepted, what is rejected, what is left."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import shutil
from pathlib import Path

import pytest

from fakedata import checksums_yaml, file_hashes, make_cifar10_binary, make_mnist_like, serve_directory, unused_url
from grutune.data.download import MIRROR_ENV, fetch
from grutune.data.formats import load_raw
from grutune.data.registry import CHECKSUMS_ENV, DATASETS
from grutune.errors import DataError

MNIST_FILES = list(DATASETS["mnist"].files)
FIRST = MNIST_FILES[0]  # fetched first, so when it fails nothing at all may be in dest
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Point every official URL at a closed loopback port, and clear the env: tests never reach the internet."""
    for name, spec in DATASETS.items():
        monkeypatch.setitem(DATASETS, name, dataclasses.replace(spec, urls=(unused_url(),)))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.delenv(CHECKSUMS_ENV, raising=False)


@pytest.fixture
def src(tmp_path, monkeypatch):
    """Generated MNIST-format files, with GRUTUNE_CHECKSUMS set to their hashes."""
    src = tmp_path / "src"
    make_mnist_like(src, n_train=40, n_test=20, seed=0)
    (tmp_path / "sums.yaml").write_text(checksums_yaml("mnist", src))
    monkeypatch.setenv(CHECKSUMS_ENV, str(tmp_path / "sums.yaml"))
    return src


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def assert_no_temp_dirs(tmp_path: Path):
    assert not [p for p in tmp_path.iterdir() if ".fetch-" in p.name]


def test_good_files_are_fetched_over_http(tmp_path, src, caplog):
    caplog.set_level(logging.INFO)
    dest = tmp_path / "raw" / "mnist"
    requests = []
    with serve_directory(src, requests) as url:
        paths = fetch("mnist", dest, mirror=url, retries=0)
    assert paths == [dest / f for f in MNIST_FILES]
    assert files_in(dest) == sorted(MNIST_FILES)
    for f in MNIST_FILES:
        assert (dest / f).read_bytes() == (src / f).read_bytes()
    assert sorted(requests) == sorted(f"/{f}" for f in MNIST_FILES)
    assert_no_temp_dirs(dest.parent)
    err = caplog.text
    assert err.count(CHECKSUMS_ENV) == 1 and f"{url}{FIRST}" in err
    assert "Downloading" not in err and "SHA256" not in err  # pooch's own log lines are silenced


def test_the_mirror_env_var_is_the_default(tmp_path, src, monkeypatch):
    with serve_directory(src) as url:
        monkeypatch.setenv(MIRROR_ENV, url)
        fetch("mnist", tmp_path / "dest", retries=0)
    assert files_in(tmp_path / "dest") == sorted(MNIST_FILES)


def test_a_recompressed_gzip_is_accepted_through_its_content_hash(tmp_path, src):
    original = (src / FIRST).read_bytes()
    recompressed = gzip.compress(gzip.decompress(original), compresslevel=1, mtime=123456)
    assert recompressed != original
    served = tmp_path / "served"
    shutil.copytree(src, served)
    (served / FIRST).write_bytes(recompressed)
    with serve_directory(served) as url:
        fetch("mnist", tmp_path / "dest", mirror=url, retries=0)
    assert (tmp_path / "dest" / FIRST).read_bytes() == recompressed


def _corrupt(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


@pytest.mark.parametrize("case", ["corrupted", "truncated", "html", "404", "wrong-content"])
def test_bad_files_are_rejected_and_nothing_is_left(tmp_path, src, case):
    served = tmp_path / "served"
    shutil.copytree(src, served)
    good = (src / FIRST).read_bytes()
    if case == "corrupted":
        (served / FIRST).write_bytes(_corrupt(good))
    elif case == "truncated":
        (served / FIRST).write_bytes(good[: len(good) // 2])
    elif case == "html":
        (served / FIRST).write_bytes(b"<!DOCTYPE html>\n<html><body>Access denied</body></html>\n")
    elif case == "404":
        (served / FIRST).unlink()
    elif case == "wrong-content":  # a valid gzip of other data
        (served / FIRST).write_bytes(gzip.compress(b"\0\0\x08\x03" + b"\0" * 100))
    dest = tmp_path / "dest"
    with serve_directory(served) as url, pytest.raises(DataError) as e:
        fetch("mnist", dest, mirror=url, retries=0)
    msg = str(e.value)
    assert FIRST in msg and f"{url}{FIRST}" in msg
    assert DATASETS["mnist"].urls[0] in msg  # the official source was tried too, and said why it failed
    assert "ConnectionError" in msg
    expected = file_hashes(src / FIRST)
    if case == "404":
        assert "404" in msg
    else:
        actual = "sha256:" + hashlib.sha256((served / FIRST).read_bytes()).hexdigest()
        assert f"expected {expected['archive']}, got {actual}" in msg
    if case in ("truncated", "corrupted"):  # a flipped byte fails gzip's CRC
        assert "not a valid gzip file" in msg
    if case in ("html", "wrong-content"):
        assert f"decompressed content expected {expected['content']}, got sha256:" in msg
    if case == "html":
        assert "HTML" in msg
    assert files_in(dest) == []
    assert_no_temp_dirs(tmp_path)


def test_pinned_hashes_are_used_without_an_override(tmp_path, src, monkeypatch):
    monkeypatch.delenv(CHECKSUMS_ENV)
    with pytest.raises(DataError, match=r"expected md5:f68b3c2dcbeaaa9fbdd348bbdeb94873, got md5:"):
        fetch("mnist", tmp_path / "dest", mirror=str(src), retries=0)
    assert files_in(tmp_path / "dest") == []


def test_connection_refused_everywhere(tmp_path, src):
    with pytest.raises(DataError, match=r"from any of 2 source\(s\)") as e:
        fetch("mnist", tmp_path / "dest", mirror=unused_url(), retries=0)
    sources = [line for line in str(e.value).splitlines() if line.startswith("  - ")]
    assert len(sources) == 2 and all("ConnectionError" in s and FIRST in s for s in sources)
    assert files_in(tmp_path / "dest") == []


@pytest.mark.parametrize("as_url", [False, True], ids=["directory", "file-url"])
def test_a_local_directory_mirror(tmp_path, src, as_url):
    mirror = src.as_uri() if as_url else str(src)
    fetch("mnist", tmp_path / "dest", mirror=mirror, retries=0)
    assert files_in(tmp_path / "dest") == sorted(MNIST_FILES)
    missing = tmp_path / "empty"
    missing.mkdir()
    with pytest.raises(DataError, match=rf"{missing / FIRST}: FileNotFoundError"):
        fetch("mnist", tmp_path / "dest2", mirror=missing.as_uri() if as_url else str(missing), retries=0)


def test_the_second_source_is_used_when_the_first_fails(tmp_path, src, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    (bad / FIRST).write_bytes(_corrupt((src / FIRST).read_bytes()))
    with serve_directory(bad) as mirror, serve_directory(src) as official:
        monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], urls=(official,)))
        fetch("mnist", tmp_path / "dest", mirror=mirror, retries=0)
    for f in MNIST_FILES:
        assert (tmp_path / "dest" / f).read_bytes() == (src / f).read_bytes()
    err = caplog.text
    assert f"{FIRST} from {official}{FIRST}" in err and f"{MNIST_FILES[1]} from {mirror}" in err


def test_the_dataset_placeholder_in_the_mirror(tmp_path, src):
    shutil.copytree(src, tmp_path / "mirror" / "mnist")
    with serve_directory(tmp_path / "mirror") as url:
        fetch("mnist", tmp_path / "dest", mirror=url + "{dataset}/", retries=0)
    assert files_in(tmp_path / "dest") == sorted(MNIST_FILES)


def test_verified_files_are_not_downloaded_again_and_bad_ones_are_replaced(tmp_path, src):
    dest = tmp_path / "dest"
    requests = []
    with serve_directory(src, requests) as url:
        fetch("mnist", dest, mirror=url, retries=0)
        assert len(requests) == 4
        fetch("mnist", dest, mirror=url, retries=0)
        assert len(requests) == 4
        (dest / FIRST).write_bytes(b"garbage")
        fetch("mnist", dest, mirror=url, retries=0)
        assert requests[4:] == [f"/{FIRST}"]
    assert (dest / FIRST).read_bytes() == (src / FIRST).read_bytes()


def test_a_bad_present_file_is_removed_even_when_no_source_has_it(tmp_path, src):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / FIRST).write_bytes(b"garbage")
    with pytest.raises(DataError):
        fetch("mnist", dest, mirror=str(tmp_path / "nowhere"), retries=0)
    assert files_in(dest) == []


def test_cifar10_over_http(tmp_path, monkeypatch):
    make_cifar10_binary(tmp_path / "src", n_train_per_batch=4, n_test=10, seed=0)
    (tmp_path / "sums.yaml").write_text(checksums_yaml("cifar10", tmp_path / "src"))
    monkeypatch.setenv(CHECKSUMS_ENV, str(tmp_path / "sums.yaml"))
    with serve_directory(tmp_path / "src") as url:
        fetch("cifar10", tmp_path / "dest", mirror=url, retries=0)
    x_train, y_train, x_test, y_test, classes = load_raw("cifar10", tmp_path / "dest")
    assert x_train.shape == (20, 32, 32, 3) and len(y_test) == 10 and len(classes) == 10


def test_an_override_for_another_dataset_keeps_the_pinned_hashes(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    make_cifar10_binary(tmp_path / "src", 2, 10, seed=0)
    (tmp_path / "sums.yaml").write_text(checksums_yaml("cifar10", tmp_path / "src"))
    monkeypatch.setenv(CHECKSUMS_ENV, str(tmp_path / "sums.yaml"))
    make_mnist_like(tmp_path / "src", 20, 10, seed=0)
    with pytest.raises(DataError, match="expected md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        fetch("mnist", tmp_path / "dest", mirror=str(tmp_path / "src"), retries=0)
    assert CHECKSUMS_ENV not in caplog.text  # the override names cifar10 only (logged at WARNING when used)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian_is_accepted_by_its_pinned_content_hashes(tmp_path):
    """Debian recompressed the upstream .gz files: the archive md5s differ, the content sha256s must match."""
    fetch("fashion_mnist", tmp_path / "dest", mirror=str(DEBIAN_FASHION_MNIST), retries=0)
    x_train, y_train, x_test, y_test, classes = load_raw("fashion_mnist", tmp_path / "dest")
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert set(y_train.tolist()) == set(range(10)) and classes[9] == "Ankle boot"
    assert y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the dataset's well-known first labels
