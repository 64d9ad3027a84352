"""Datasets, from official sources to the arrays a model trains on.

`registry` names the datasets and their pinned checksums, `download` fetches and verifies their files, `formats`
parses them (no pickle), and `prepared` writes and reads the split .npz. The names below are the public face.
"""

from grutune.data.download import MIRROR_ENV, fetch, verify_file
from grutune.data.formats import CIFAR10_MEMBERS, CIFAR10_META, load_raw, read_cifar10_binary, read_idx
from grutune.data.prepared import SPLIT_KEYS, Prepared, content_hash, load_prepared, prepare, split_indices
from grutune.data.registry import (
    CHECKSUMS_ENV,
    DATASETS,
    DatasetSpec,
    FileHashes,
    dataset_spec,
    expected_hashes,
    load_checksums,
)

__all__ = [
    "CHECKSUMS_ENV",
    "CIFAR10_MEMBERS",
    "CIFAR10_META",
    "DATASETS",
    "DatasetSpec",
    "FileHashes",
    "MIRROR_ENV",
    "Prepared",
    "SPLIT_KEYS",
    "content_hash",
    "dataset_spec",
    "expected_hashes",
    "fetch",
    "load_checksums",
    "load_prepared",
    "load_raw",
    "prepare",
    "read_cifar10_binary",
    "read_idx",
    "split_indices",
    "verify_file",
]
