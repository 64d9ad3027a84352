"""Datasets: a registry of official sources and checksums, verified downloads, numpy-only parsers, split + .npz.

Only official archives are trusted: a file is accepted if its archive checksum matches the published one, or if
its decompressed content matches a pinned sha256 (so a recompressed redistribution, like Debian's, also works).
Nothing here unpickles anything: IDX and the CIFAR-10 *binary* version are read with np.frombuffer.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from grutune.errors import ConfigError, DataError
from grutune.io import atomic_path

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

log = logging.getLogger(__name__)

MIRROR_ENV = "GRUTUNE_DATA_MIRROR"  # a local directory or base URL tried before the official URLs
CHECKSUMS_ENV = "GRUTUNE_CHECKSUMS"  # a YAML file whose hashes replace the pinned ones (re-packaged mirrors, tests)


# =========================================================================== registry


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


# =========================================================================== checksums


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


def _file_digest(path: Path, alg: str) -> str:
    h = hashlib.new(alg)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{alg}:{h.hexdigest()}"


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _content_digest(path: Path) -> str:
    """sha256 of the decompressed bytes (of the bytes themselves if not gzip); DataError if the gzip is broken."""
    h = hashlib.sha256()
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"not a valid gzip file ({e})") from None
    return f"sha256:{h.hexdigest()}"


def verify_file(path: Path, hashes: FileHashes) -> str | None:
    """None if `path` is the file `hashes` describes, else why not (expected vs actual checksums)."""
    actual = _file_digest(path, hashes.archive.split(":", 1)[0])
    if actual == hashes.archive:
        return None
    why = f"checksum mismatch: expected {hashes.archive}, got {actual}"
    if hashes.content is not None:
        try:
            content = _content_digest(path)
        except DataError as e:
            return f"{why}; {e}"
        if content == hashes.content:
            return None
        why += f"; decompressed content expected {hashes.content}, got {content}"
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        why += " (the source returned an HTML/XML page, not the file)"
    return why


# =========================================================================== fetch


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Silence pooch's per-download info lines (we print our own, one per file)."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _sources(name: str, mirror: str | None) -> list[str]:
    """Base locations to try, in order: the mirror ("{dataset}" in it is replaced by the name), then official."""
    sources = []
    if mirror:
        sources.append(mirror.replace("{dataset}", name))
    sources.extend(dataset_spec(name).urls)
    return sources


def _download(base: str, fname: str, tmp_dir: Path, retries: int) -> Path:
    """Copy or download base/fname into tmp_dir, unverified. Raises OSError or requests' errors on failure."""
    scheme = urllib.parse.urlsplit(base).scheme.lower()
    if scheme in ("http", "https"):
        import pooch

        url = base.rstrip("/") + "/" + urllib.parse.quote(fname)
        pup = pooch.create(
            path=tmp_dir, base_url="", registry={fname: None}, urls={fname: url}, retry_if_failed=retries
        )
        return Path(pup.fetch(fname, progressbar=sys.stderr.isatty()))
    if scheme == "file":
        base = urllib.request.url2pathname(urllib.parse.urlsplit(base).path)
    elif scheme and len(scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise OSError(f"unsupported mirror scheme {scheme!r}; use a directory or an http(s):// or file:// URL")
    src = Path(base) / fname
    if not src.is_file():
        raise FileNotFoundError(f"no such file {src}")
    return Path(shutil.copyfile(src, tmp_dir / fname))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fetch(
    name: str,
    dest: str | os.PathLike,
    mirror: str | None = None,
    *,
    checksums: str | os.PathLike | None = None,
    retries: int = 2,
) -> list[Path]:
    """Put every official file of dataset `name` into `dest`, verified; return their paths in registry order.

    Sources, per file: `mirror` (default $GRUTUNE_DATA_MIRROR; "" for none: a directory or an http/https/file
    base URL holding the files under their official names), then the official URLs. Each download lands in a
    temporary directory beside `dest` and is moved in only once verified, so `dest` never holds a rejected or
    partial file. A file already in `dest` that verifies is kept. `retries`: extra HTTP attempts per source.
    """
    spec = dataset_spec(name)
    hashes = expected_hashes(name, checksums)
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV, "")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest.resolve()  # temporary directories go beside it: same filesystem, so os.replace is atomic
    paths = []
    for fname in spec.files:
        target = dest / fname
        if target.is_file():
            why = verify_file(target, hashes[fname])
            if why is None:
                log.info("%s: %s already present and verified", name, fname)
                paths.append(target)
                continue
            log.warning("%s: removing %s: %s", name, target, why)
            target.unlink()
        failures = []
        for base in _sources(name, mirror):
            where = base.rstrip("/") + "/" + fname
            with (
                tempfile.TemporaryDirectory(prefix=f".{staging.name}.fetch-", dir=staging.parent) as tmp,
                _quiet_pooch(),
            ):
                try:
                    got = _download(base, fname, Path(tmp), retries)
                except (OSError, ValueError) as e:  # requests' errors are OSErrors: 404, refused, reset, ...
                    failures.append(f"{where}: {type(e).__name__}: {e}")
                    continue
                why = verify_file(got, hashes[fname])
                if why is not None:
                    failures.append(f"{where}: {why}")
                    continue
                os.chmod(got, 0o666 & ~_umask())  # temp files are created 0600; give it the usual mode
                os.replace(got, target)
            log.info("%s: %s from %s", name, fname, where)
            paths.append(target)
            break
        else:
            lines = "\n".join(f"  - {f}" for f in failures)
            raise DataError(f"{name}: could not get a verified {fname} from any of {len(failures)} source(s):\n{lines}")
    return paths


# =========================================================================== parsers

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e})") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: not a valid gzip file ({e})") from None
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (gzipped or plain) into a native-endian array; DataError naming the file if malformed."""
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DataError(
            f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'}; expected 0000<dtype><ndim>)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DataError(
            f"{path}: unknown IDX dtype code 0x{code:02x}; valid: {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}"
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions but the file has {len(data)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: IDX payload is {len(data) - header} bytes, but shape {shape} of {dtype.name} needs {expected}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


CIFAR10_MEMBERS = tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)) + (
    "cifar-10-batches-bin/test_batch.bin",
)
CIFAR10_META = "cifar-10-batches-bin/batches.meta.txt"
_CIFAR10_RECORD = 1 + 3 * 32 * 32


def read_cifar10_binary(
    path: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read cifar-10-binary.tar.gz in memory (no extraction): (x_train, y_train, x_test, y_test, classes).

    Images come back uint8 (N, 32, 32, 3); labels uint8 as stored.
    """
    path = Path(path)
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in CIFAR10_MEMBERS + (CIFAR10_META,):
                try:
                    info = tar.getmember(member)
                except KeyError:
                    raise DataError(
                        f"{path}: member {member} missing; a CIFAR-10 binary archive has "
                        f"{', '.join(CIFAR10_MEMBERS + (CIFAR10_META,))}"
                    ) from None
                f = tar.extractfile(info) if info.isfile() else None
                if f is None:
                    raise DataError(f"{path}: member {member} is not a regular file")
                blobs[member] = f.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable tar.gz ({type(e).__name__}: {e})") from None

    def records(member: str) -> tuple[np.ndarray, np.ndarray]:
        raw = blobs[member]
        if not raw or len(raw) % _CIFAR10_RECORD:
            raise DataError(
                f"{path}: {member} is {len(raw)} bytes, not a positive multiple of the "
                f"{_CIFAR10_RECORD}-byte record (1 label + 3x32x32 pixels)"
            )
        rec = np.frombuffer(raw, np.uint8).reshape(-1, _CIFAR10_RECORD)
        # (N, 3072) channel-major -> (N, 3, 32, 32) -> (N, 32, 32, 3)
        x = np.ascontiguousarray(rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        return x, rec[:, 0].copy()

    train = [records(m) for m in CIFAR10_MEMBERS[:-1]]
    x_test, y_test = records(CIFAR10_MEMBERS[-1])
    classes = tuple(
        line.strip() for line in blobs[CIFAR10_META].decode("ascii", "replace").splitlines() if line.strip()
    )
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test, classes)


def load_raw(
    name: str, raw_dir: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Parse the fetched files of `name` in `raw_dir`: (x_train, y_train, x_test, y_test, classes).

    Images uint8 (N, H, W, C) (MNIST-style gets C=1), labels int64 in [0, num_classes).
    """
    spec = dataset_spec(name)
    raw_dir = Path(raw_dir)
    missing = [f for f in spec.files if not (raw_dir / f).is_file()]
    if missing:
        raise DataError(f"{raw_dir}: missing {', '.join(missing)} (run the fetch stage for {name} first)")
    if spec.format == "idx":
        parts = []
        for prefix in ("train", "t10k"):
            xf, yf = raw_dir / f"{prefix}-images-idx3-ubyte.gz", raw_dir / f"{prefix}-labels-idx1-ubyte.gz"
            x, y = read_idx(xf), read_idx(yf)
            if x.dtype != np.uint8 or x.shape[1:] != spec.image_shape[:2]:
                raise DataError(
                    f"{xf}: expected uint8 images of shape (N, {spec.image_shape[0]}, "
                    f"{spec.image_shape[1]}), got {x.dtype} {x.shape}"
                )
            if y.dtype != np.uint8 or y.ndim != 1:
                raise DataError(f"{yf}: expected a 1-d uint8 label array, got {y.dtype} {y.shape}")
            parts.append((x[..., None], y, yf))  # (N, H, W) -> (N, H, W, 1)
        classes = spec.classes
    elif spec.format == "cifar10":
        archive = raw_dir / next(iter(spec.files))
        x_train, y_train, x_test, y_test, classes = read_cifar10_binary(archive)
        if classes != spec.classes:
            raise DataError(f"{archive}: batches.meta.txt lists classes {list(classes)}, expected {list(spec.classes)}")
        parts = [(x_train, y_train, archive), (x_test, y_test, archive)]
    else:  # pragma: no cover - the registry is static
        raise DataError(f"{name}: unknown format {spec.format!r}")

    out = []
    for x, y, where in parts:
        if len(x) != len(y):
            raise DataError(f"{where}: {len(y)} labels for {len(x)} images")
        if len(y) and int(y.max()) >= len(classes):
            raise DataError(f"{where}: label {int(y.max())} out of range; {name} has classes 0..{len(classes) - 1}")
        out += [x, y.astype(np.int64)]
    return out[0], out[1], out[2], out[3], classes


# =========================================================================== prepare

SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_HASHED_KEYS = ("dataset", *SPLIT_KEYS, "classes")  # the fixed order content_hash covers


def content_hash(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over each array's name, dtype, shape and bytes, in a fixed key order: names the data exactly."""
    h = hashlib.sha256()
    for key in _HASHED_KEYS:
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return f"sha256:{h.hexdigest()}"


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint (train, val) index arrays over range(n), each sorted; val has round(val_fraction * n)."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"prepare.val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, round(val_fraction * n))
    if n_val >= n:
        raise DataError(f"val_fraction={val_fraction} of {n} training images leaves none to train on")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def prepare(name: str, raw_dir: str | os.PathLike, out_path: str | os.PathLike, val_fraction: float, seed: int) -> dict:
    """Parse the raw files, carve a seeded validation split from train, write one .npz; return a small summary."""
    x_train, y_train, x_test, y_test, classes = load_raw(name, raw_dir)
    train_idx, val_idx = split_indices(len(y_train), val_fraction, seed)
    arrays = {
        "dataset": np.array(name),
        "x_train": x_train[train_idx],
        "y_train": y_train[train_idx],
        "x_val": x_train[val_idx],
        "y_val": y_train[val_idx],
        "x_test": x_test,
        "y_test": y_test,
        "classes": np.array(classes, dtype=str),  # unicode, not object: loads with allow_pickle=False
    }
    digest = content_hash(arrays)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:  # a file object: savez would append ".npz" to a name
        np.savez(f, **arrays, content_hash=np.array(digest))
    return {
        "dataset": name,
        "content_hash": digest,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "n_test": len(y_test),
        "image_shape": list(x_train.shape[1:]),
        "classes": list(classes),
    }


@dataclass(frozen=True)
class Prepared:
    """A prepared dataset: uint8 NHWC images and int64 labels per split, as written by `prepare`."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    content_hash: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_prepared(path: str | os.PathLike, verify: bool = True, name: str | None = None) -> Prepared:
    """Load a `prepare` output without pickle; with `verify`, recompute the content hash and refuse a mismatch;
    with `name`, refuse a file that holds another dataset."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in (*_HASHED_KEYS, "content_hash") if k not in npz.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing}; is it a `prepare` output?")
            arrays = {k: npz[k] for k in (*_HASHED_KEYS, "content_hash")}
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the prepare stage first)") from None
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile/numpy raise many types for a corrupt file
        # numpy reads a file that is no zip archive as a pickle and then advises allow_pickle=True: never that here
        cause = "not a zip archive" if not zipfile.is_zipfile(path) else f"{type(e).__name__}: {e}"
        raise DataError(f"{path}: not a readable .npz ({cause}); re-run the prepare stage") from None
    stored = str(arrays["content_hash"])
    if verify and content_hash(arrays) != stored:
        raise DataError(
            f"{path}: content hash mismatch: stored {stored}, computed {content_hash(arrays)}; "
            f"the file is corrupt, re-run prepare"
        )
    if name is not None and str(arrays["dataset"]) != name:
        raise DataError(
            f"{path} holds dataset {str(arrays['dataset'])!r}, not {name!r}: pass the prepare stage's "
            f"output for {name!r}"
        )
    return Prepared(
        name=str(arrays["dataset"]),
        **{k: arrays[k] for k in SPLIT_KEYS},
        classes=tuple(str(c) for c in arrays["classes"]),
        content_hash=stored,
    )
