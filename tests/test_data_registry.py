"""The dataset registry (names, sources, pinned hashes) and the checksums override file."""

from __future__ import annotations

import pytest

from grutune.data.registry import CHECKSUMS_ENV, DATASETS, _check_hash_string, dataset_spec, expected_hashes
from grutune.errors import DataError

FIRST = list(DATASETS["mnist"].files)[0]


@pytest.mark.parametrize("name", list(DATASETS))
def test_registry_entries_are_well_formed(name):
    spec = DATASETS[name]
    assert spec.format in ("idx", "cifar10")
    assert spec.urls and all(u.startswith(("http://", "https://")) and u.endswith("/") for u in spec.urls)
    assert len(spec.classes) == len(set(spec.classes)) == 10
    for fname, hashes in spec.files.items():
        assert _check_hash_string(hashes.archive, fname) == hashes.archive
        assert hashes.content is None or _check_hash_string(hashes.content, fname, sha256_only=True)


def test_cifar10_is_the_binary_version_only():
    assert list(DATASETS["cifar10"].files) == ["cifar-10-binary.tar.gz"]


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(DataError, match="unknown dataset 'svhn'.*mnist, fashion_mnist, cifar10"):
        dataset_spec("svhn")


# =========================================================================== checksum overrides


@pytest.mark.parametrize(
    "text, message",
    [
        ("svhn: {}\n", "unknown dataset 'svhn'; valid: mnist, fashion_mnist, cifar10"),
        (
            "mnist: {train-images.gz: {archive: 'md5:" + "0" * 32 + "'}}\n",
            "unknown file 'train-images.gz'; valid: train-images-idx3-ubyte.gz",
        ),
        (f"mnist: {{{FIRST}: {{archive: 'md5:123'}}}}\n", "expected 32 hex digits after 'md5:'"),
        (f"mnist: {{{FIRST}: {{archive: 'crc32:1234'}}}}\n", "algorithm 'crc32' not allowed"),
        (
            f"mnist: {{{FIRST}: {{archive: 'md5:{'0' * 32}', content: 'md5:{'0' * 32}'}}}}\n",
            "algorithm 'md5' not allowed here; allowed: sha256",
        ),
        (f"mnist: {{{FIRST}: {{archive: 'md5:{'0' * 32}', size: 3}}}}\n", "expected {archive: 'alg:hex'"),
        ("[1, 2]\n", "expected a mapping"),
        ("mnist: [\n", "not valid YAML"),
    ],
)
def test_the_checksums_file_is_validated(tmp_path, monkeypatch, text, message):
    (tmp_path / "sums.yaml").write_text(text)
    monkeypatch.setenv(CHECKSUMS_ENV, str(tmp_path / "sums.yaml"))
    with pytest.raises(DataError, match=message) as e:
        expected_hashes("mnist")  # what fetch reads first
    assert "sums.yaml" in str(e.value)


def test_a_missing_checksums_file(tmp_path, monkeypatch):
    monkeypatch.setenv(CHECKSUMS_ENV, str(tmp_path / "nope.yaml"))
    with pytest.raises(DataError, match=rf"{CHECKSUMS_ENV}={tmp_path / 'nope.yaml'}: cannot read it"):
        expected_hashes("mnist")
