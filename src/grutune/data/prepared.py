"""The prepared dataset: a seeded train/val split written as one .npz with a content hash, and read back without pickle.

Named `prepared`, not `prepare`, so that `grutune.data.prepare` stays the function that writes it.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grutune.data.formats import load_raw
from grutune.errors import ConfigError, DataError
from grutune.io import atomic_path

__all__ = ["SPLIT_KEYS", "Prepared", "content_hash", "load_prepared", "prepare", "split_indices"]

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
