"""Parsers for the raw files: IDX (MNIST, Fashion-MNIST) and the CIFAR-10 binary version, into numpy arrays.

Nothing here unpickles anything: both formats are read with np.frombuffer (the pickled CIFAR-10 python version is
not supported), and a malformed file raises DataError naming it.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

from grutune.data.registry import dataset_spec
from grutune.errors import DataError

__all__ = ["CIFAR10_MEMBERS", "CIFAR10_META", "load_raw", "read_cifar10_binary", "read_idx"]

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
