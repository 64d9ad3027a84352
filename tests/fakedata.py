"""Tiny datasets in the real on-disk formats, checksum files for them, and a quiet loopback HTTP server.

Typical use (a test that fetches generated MNIST over HTTP):

    make_mnist_like(src, n_train=200, n_test=50, seed=0)
    make_cifar10_binary(src, n_train_per_batch=40, n_test=50, seed=0)  # no file names in common with MNIST
    sums = tmp_path / "sums.yaml"
    sums.write_text(checksums_yaml("mnist", src) + checksums_yaml("cifar10", src))
    monkeypatch.setenv("GRUTUNE_CHECKSUMS", str(sums))
    with serve_directory(src) as url:
        fetch("mnist", dest, mirror=url)  # or set GRUTUNE_DATA_MIRROR=url for a pipeline script

MNIST and Fashion-MNIST share file names: serve them from subdirectories and use "{dataset}" in the mirror,
e.g. GRUTUNE_DATA_MIRROR=http://127.0.0.1:PORT/{dataset}/ .

Images depend on the label (a fixed per-class pattern plus noise), so a model can learn them.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml

from grutune.data import CIFAR10_MEMBERS, CIFAR10_META, DATASETS

_IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}


def write_idx(path: str | Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write `array` as an IDX file (big-endian, like the originals); gzipped with mtime 0 so bytes are stable."""
    a = np.asarray(array)
    a = a.astype(a.dtype.newbyteorder(">"))
    header = bytes([0, 0, _IDX_CODES[a.dtype], a.ndim]) + np.array(a.shape, ">u4").tobytes()
    data = header + a.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def _labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """n labels covering all 10 classes as evenly as possible (all of them once n >= 10), shuffled."""
    return rng.permutation(np.arange(n) % 10).astype(np.uint8)


def _images(labels: np.ndarray, prototypes: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
    """Class prototype (upsampled blocks) at 0..180 plus uniform noise 0..60, as uint8."""
    base = prototypes[labels].repeat(scale, axis=-2).repeat(scale, axis=-1)  # (N, ..., h, w) -> (N, ..., H, W)
    noise = rng.integers(0, 61, size=base.shape)
    return (base * 180 + noise).astype(np.uint8)


# Fixed across seeds, so every generated dataset means the same thing; the seed only moves labels and noise.
_MNIST_PROTOTYPES = np.random.default_rng(1234).integers(0, 2, size=(10, 7, 7))  # 7x7 blocks of 4x4 pixels
_CIFAR_PROTOTYPES = np.random.default_rng(4321).integers(0, 2, size=(10, 3, 8, 8))  # per channel, 4x4 blocks


def make_mnist_like(directory: str | Path, n_train: int, n_test: int, seed: int) -> list[Path]:
    """Write the four official MNIST file names (gzipped IDX, 28x28 uint8) into `directory`; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = _labels(n, rng)
        x = _images(y, _MNIST_PROTOTYPES, 4, rng)  # (N, 28, 28)
        paths.append(write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", x))
        paths.append(write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", y))
    return paths


def cifar10_records(labels: np.ndarray, images_chw: np.ndarray) -> bytes:
    """The binary version's records: per image 1 label byte then 3072 pixel bytes (R, G, B planes of 32x32)."""
    n = len(labels)
    return np.concatenate(
        [labels.reshape(n, 1).astype(np.uint8), images_chw.reshape(n, 3 * 32 * 32).astype(np.uint8)], axis=1
    ).tobytes()


def write_tar_gz(path: str | Path, members: dict[str, bytes]) -> Path:
    """Write a deterministic tar.gz (fixed mtimes, owners and gzip header) holding `members` in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    path = Path(path)
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    return path


def make_cifar10_binary(directory: str | Path, n_train_per_batch: int, n_test: int, seed: int) -> Path:
    """Write cifar-10-binary.tar.gz with the real member layout (5 train batches, test batch, meta); return it."""
    rng = np.random.default_rng(seed)
    y_train, y_test = _labels(5 * n_train_per_batch, rng), _labels(n_test, rng)  # all classes across the batches
    members = {}
    for member, y in zip(CIFAR10_MEMBERS, [*np.split(y_train, 5), y_test]):
        members[member] = cifar10_records(y, _images(y, _CIFAR_PROTOTYPES, 4, rng))  # (N, 3, 32, 32)
    members[CIFAR10_META] = ("\n".join(DATASETS["cifar10"].classes) + "\n\n").encode()  # the original ends so
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return write_tar_gz(directory / "cifar-10-binary.tar.gz", members)


def file_hashes(path: str | Path) -> dict[str, str]:
    """{archive: sha256 of the file, content: sha256 of its decompressed bytes} in GRUTUNE_CHECKSUMS form."""
    data = Path(path).read_bytes()
    content = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return {
        "archive": "sha256:" + hashlib.sha256(data).hexdigest(),
        "content": "sha256:" + hashlib.sha256(content).hexdigest(),
    }


def checksums_yaml(dataset: str, directory: str | Path) -> str:
    """GRUTUNE_CHECKSUMS text for the files of `dataset` found in `directory`.

    The text is one top-level mapping {dataset: ...}, so texts for different datasets can simply be concatenated.
    """
    directory = Path(directory)
    entries = {f: file_hashes(directory / f) for f in DATASETS[dataset].files if (directory / f).is_file()}
    if not entries:
        raise FileNotFoundError(f"no {dataset} files in {directory}; expected {', '.join(DATASETS[dataset].files)}")
    return yaml.safe_dump({dataset: entries}, sort_keys=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; logs each request path into `requests` (if given) instead of printing it."""

    def __init__(self, *args, requests: list[str] | None = None, **kwargs):
        self._requests = requests
        super().__init__(*args, **kwargs)

    def send_head(self):
        if self._requests is not None:
            self._requests.append(self.path)
        return super().send_head()

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@contextlib.contextmanager
def serve_directory(directory: str | Path, requests: list[str] | None = None) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 (a free port) in a thread; yield its base URL ending in "/".

    Pass a list as `requests` to have every GET/HEAD path appended to it (to count downloads).
    """
    handler = functools.partial(_QuietHandler, directory=str(directory), requests=requests)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fakedata-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def unused_url() -> str:
    """A loopback base URL with nothing listening: connecting to it is refused at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
