"""The datasets grutune knows, by name: official sources, classes, image shape, and the pinned checksums of each file.

Only official archives are trusted: a file is accepted if its archive checksum matches the published one, or if
its decompressed content matches a pinned sha256 (so a recompressed redistribution, like Debian's, also works).
A YAML file named by $GRUTUNE_CHECKSUMS may replace the pinned hashes (re-packaged mirrors, tests).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from grutune.errors import DataError

__all__ = [
    "CHECKSUMS_ENV",
    "DATASETS",
    "DatasetSpec",
    "FileHashes",
    "dataset_spec",
    "expected_hashes",
    "load_checksums",
]

log = logging.getLogger(__name__)

CHECKSUMS_ENV = "GRUTUNE_CHECKSUMS"  # a YAML file whose hashes replace the pinned ones (re-packaged mirrors, tests)


@dataclass(frozen=True)
class FileHashes:
    """How to recognise one official file: the published archive checksum, and/or the sha256 of its content.

    `archive` is "<algorithm>:<hex>" of the file as downloaded; `content` is "sha256:<hex>" of the decompressed
    bytes (None where no trustworthy published value exists: then only the archive checksum is accepted).
    """

    archive: str
    content: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    format: str  # "idx" or "cifar10" (the binary version: 1 label byte + 3x32x32 channel-major pixels per record)
    urls: tuple[str, ...]  # official base URLs, tried in order
    files: dict[str, FileHashes]  # official file name -> hashes
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, C)
    flip: bool  # a mirrored image is still an image of its class (augmentation may flip it left-right)


DATASETS: dict[str, DatasetSpec] = {
    # Archive md5s: the values torchvision pins. Content sha256s of the decompressed IDX files: published by
    # several independent projects (e.g. MNIST loaders and Makefiles that pin the uncompressed files).
    "mnist": DatasetSpec(
        format="idx",
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        files={
            "train-images-idx3-ubyte.gz": FileHashes(
                "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "sha256:ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            "train-labels-idx1-ubyte.gz": FileHashes(
                "md5:d53e105ee54ea40749a09fcbcd1e9432",
                "sha256:65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
            "t10k-images-idx3-ubyte.gz": FileHashes(
                "md5:9fb629c4189551a2d022fa330f9573f3",
                "sha256:0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            "t10k-labels-idx1-ubyte.gz": FileHashes(
                "md5:ec29112dd5afa0611ce80d1b7f02629c",
                "sha256:ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        },
        classes=tuple(str(d) for d in range(10)),
        image_shape=(28, 28, 1),
        flip=False,  # a mirrored 2, 3, 4, 5, 7 or 9 is no digit
    ),
    # Content sha256s computed from Debian's dataset-fashion-mnist (recompressed, same content) and matching
    # values published by other projects for the uncompressed upstream files.
    "fashion_mnist": DatasetSpec(
        format="idx",
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files={
            "train-images-idx3-ubyte.gz": FileHashes(
                "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "sha256:c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            "train-labels-idx1-ubyte.gz": FileHashes(
                "md5:25c81989df183df01b3e8a0aad5dffbe",
                "sha256:bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            "t10k-images-idx3-ubyte.gz": FileHashes(
                "md5:bef4ecab320f06d8554ea6380940ec79",
                "sha256:5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            "t10k-labels-idx1-ubyte.gz": FileHashes(
                "md5:bb300cfdad3c16e7a12a480ee83cd310",
                "sha256:0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        },
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        image_shape=(28, 28, 1),
        flip=True,
    ),
    # The binary version only (the python version is pickled). No published sha256 of the decompressed tar was
    # found, so only the archive md5 from the dataset's home page is accepted.
    "cifar10": DatasetSpec(
        format="cifar10",
        urls=("https://www.cs.toronto.edu/~kriz/",),
        files={"cifar-10-binary.tar.gz": FileHashes("md5:c32a1d4ab5d03f1284b67883e8d87530", None)},
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        image_shape=(32, 32, 3),
        flip=True,
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry for `name`; an unknown name raises DataError listing the valid ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}") from None


# =========================================================================== checksum overrides


def _check_hash_string(value: object, where: str, *, sha256_only: bool = False) -> str:
    """Refuse anything but "<algorithm>:<hex digest of the right length>"."""
    if not isinstance(value, str) or ":" not in value:
        raise DataError(f"{where}: expected '<algorithm>:<hex>' (e.g. 'sha256:...'), got {value!r}")
    alg, digest = value.split(":", 1)
    allowed = ("sha256",) if sha256_only else ("md5", "sha1", "sha256", "sha512")
    if alg not in allowed:
        raise DataError(f"{where}: algorithm {alg!r} not allowed here; allowed: {', '.join(allowed)}")
    size = hashlib.new(alg).digest_size * 2
    if len(digest) != size or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise DataError(f"{where}: expected {size} hex digits after '{alg}:', got {digest!r}")
    return f"{alg}:{digest.lower()}"


def load_checksums(path: str | os.PathLike) -> dict[str, dict[str, FileHashes]]:
    """Read a checksums override file: {dataset: {filename: {archive: "alg:hex", content: "sha256:hex" | null}}}."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise DataError(f"{CHECKSUMS_ENV}={path}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise DataError(f"{CHECKSUMS_ENV}={path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: expected a mapping {{dataset: {{filename: {{archive, content}}}}}}")
    out: dict[str, dict[str, FileHashes]] = {}
    for dataset, files in raw.items():
        if dataset not in DATASETS:
            raise DataError(f"{path}: unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
        official = DATASETS[dataset].files
        if not isinstance(files, dict) or not files:
            raise DataError(f"{path}: {dataset}: expected a mapping of file name -> {{archive, content}}")
        out[dataset] = {}
        for fname, entry in files.items():
            where = f"{path}: {dataset}.{fname}"
            if fname not in official:
                raise DataError(f"{path}: {dataset}: unknown file {fname!r}; valid: {', '.join(official)}")
            if not isinstance(entry, dict) or set(entry) - {"archive", "content"} or "archive" not in entry:
                raise DataError(
                    f"{where}: expected {{archive: 'alg:hex', content: 'sha256:hex' or null}}, got {entry!r}"
                )
            content = entry.get("content")
            out[dataset][fname] = FileHashes(
                archive=_check_hash_string(entry["archive"], f"{where}.archive"),
                content=None if content is None else _check_hash_string(content, f"{where}.content", sha256_only=True),
            )
    return out


def expected_hashes(name: str, checksums: str | os.PathLike | None = None) -> dict[str, FileHashes]:
    """The hashes `fetch` accepts for each file of `name`: pinned, with any override from `checksums` on top.

    `checksums` defaults to $GRUTUNE_CHECKSUMS; "" means none. Using an override prints one line saying so.
    """
    files = dict(dataset_spec(name).files)
    if checksums is None:
        checksums = os.environ.get(CHECKSUMS_ENV, "")
    if checksums:
        overrides = load_checksums(checksums)
        if name in overrides:
            files.update(overrides[name])
            log.warning(
                "%s: using checksums for %s from %s (%s), not the pinned ones",
                name,
                ", ".join(overrides[name]),
                checksums,
                CHECKSUMS_ENV,
            )
    return files
