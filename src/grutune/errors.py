"""User-facing errors: a pipeline script prints them as one message and exits non-zero, without a traceback."""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
from collections.abc import Callable

__all__ = [
    "Collapsed",
    "ConfigError",
    "DataError",
    "GrutuneError",
    "NonFiniteLoss",
    "PlainLines",
    "StorageFull",
    "cli",
    "full_reason",
    "is_storage_full",
    "storage_full_cause",
    "show_log",
]


class GrutuneError(Exception):
    """An error the user can fix (bad params, bad download, missing input); its message says how."""


class ConfigError(GrutuneError):
    """params.yaml is invalid; the message names the key and what is allowed."""


class DataError(GrutuneError):
    """A download or a data file failed verification or parsing; the message names the file."""


class StorageFull(GrutuneError):
    """A stage's storage has no room left (a full disk or quota): it stopped, keeping what was written, and its
    message names the place and the fix."""


_FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def is_storage_full(e: BaseException) -> bool:
    """Whether `e` is a write that failed for want of room: an OSError with ENOSPC or EDQUOT, also one raised by
    pyarrow (Ray Tune's storage), which may give the errno only in its message."""
    return isinstance(e, OSError) and (e.errno in _FULL or any(t in str(e) for t in _FULL_TEXT))


def storage_full_cause(error: BaseException) -> BaseException | None:
    """The write that failed for want of room behind `error` (a `StorageFull`, or an OSError `is_storage_full`
    knows), found along its chain of causes, as libraries re-raise what they met (Ray Tune as a TuneError chained
    to it); None where there is none."""
    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, StorageFull) or is_storage_full(e):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def full_reason(e: BaseException) -> str:
    """What `is_storage_full` found, in the system's words: "No space left on device" or "Disk quota exceeded"."""
    if isinstance(e, OSError) and e.errno in _FULL:
        return os.strerror(e.errno)
    return next((t for t in _FULL_TEXT if t in str(e)), _FULL_TEXT[0])


class NonFiniteLoss(RuntimeError):
    """A training loss became NaN or inf: the run diverged and is stopped at once (a trial reports it as failed)."""


class Collapsed(GrutuneError):
    """A GAN's generator draws (nearly) one image whatever the noise: a trial reports it as failed."""


class PlainLines(logging.StreamHandler):
    """grutune's log lines as a stage script prints them: the message alone, on stderr."""

    def __init__(self):
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))


def show_log(level: int = logging.INFO) -> None:
    """grutune's log (the `grutune` logger: downloads, sweeps resumed or repaired, resources, epochs) as plain lines
    on stderr, as a stage script shows it; other libraries' loggers are left as they are."""
    logger = logging.getLogger("grutune")
    if not any(isinstance(h, PlainLines) for h in logger.handlers):
        logger.addHandler(PlainLines())
    logger.setLevel(level)
    logger.propagate = False


def cli(main: Callable[..., None]) -> Callable[..., None]:
    """Wrap a pipeline script's main(): grutune's log lines on stderr as plain lines; GrutuneError -> message on
    stderr, exit 2; a write that failed for want of room anywhere else (a stage's outputs, say) -> one line saying
    so, exit 2; Ctrl-C -> exit 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        show_log()
        try:
            return main(*args, **kwargs)
        except GrutuneError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except Exception as e:
            if (full := storage_full_cause(e)) is None:
                raise
            where = f" writing {full.filename}" if getattr(full, "filename", None) else ""
            print(
                f"error: no room left{where}: {full_reason(full)}. Free space there, then run `dvc repro` again",
                file=sys.stderr,
            )
            raise SystemExit(2) from None

    return wrapper
