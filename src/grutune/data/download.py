"""Downloads: put a dataset's official files into a directory, each verified against its expected hashes.

Sources are tried in order (a mirror, then the official URLs); HTTP goes through pooch. A file is moved into place
only once verified, so the directory never holds a rejected or partial file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

from grutune.data.registry import FileHashes, dataset_spec, expected_hashes
from grutune.errors import DataError

__all__ = ["MIRROR_ENV", "fetch", "verify_file"]

log = logging.getLogger(__name__)

MIRROR_ENV = "GRUTUNE_DATA_MIRROR"  # a local directory or base URL tried before the official URLs


# =========================================================================== verification


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
