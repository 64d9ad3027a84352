"""A full storage under a sweep: a write that fails for want of room stops the sweep as a kill would, and the stage
says so in one line, naming the key, the place and the fix; nothing is told to Optuna (protocol step 7 in
grutune.sweep.recovery).

`guarded` wraps a trainable so that a trial whose write failed reports `STORAGE_FULL`; `StorageGuard`, a Tune
`Stopper`, stops the sweep on that result or on a failed write of Tune's own (noted by `watch_storage`);
`storage_errors` turns what reached the driver into the one message.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
from pathlib import Path

from ray import tune

from grutune.errors import GrutuneError, StorageFull, full_reason, is_storage_full, storage_full_cause
from grutune.sweep.searcher import STORAGE_FULL
from grutune.sweep.storage import SweepPlace

__all__ = ["StorageGuard", "full_seen", "guarded", "storage_errors", "watch_storage"]


def guarded(trainable, metric: str):
    """`trainable`, reporting `STORAGE_FULL` (with `metric`, which Tune requires of every result, as NaN) where a
    write failed for want of room: a checkpoint Tune could not persist, say. `StorageGuard` stops the sweep on that
    result. The trial code stays as it is, so a sweep's identity does not change for it."""

    @functools.wraps(trainable)
    def guarded(config, **kwargs):
        try:
            return trainable(config, **kwargs)
        except Exception as e:
            if (full := storage_full_cause(e)) is None:
                raise
            why = f"trial {tune.get_context().get_trial_id()} could not write its checkpoint: {full_reason(full)}"
            tune.report({metric: float("nan"), STORAGE_FULL: why})
            raise StorageFull(why) from None  # reached only without the guard (a sweep started before it)

    return guarded


class StorageGuard(tune.Stopper):
    """Stops the sweep, as a kill would, at the first write that failed for want of room: a trial's (the trial
    reports `STORAGE_FULL`: `guarded`), or Tune's experiment snapshot (`watch_storage`). It raises out of Tune's loop
    before the scheduler or the searcher sees the result, so nothing is told to Optuna: the trial stays RUNNING in
    the journal and resumes from its last whole checkpoint on the next run (protocol in grutune.sweep.recovery).
    Pickled with the experiment, it holds only the study's name."""

    def __init__(self, study_name: str):
        self.study_name = study_name

    def __call__(self, trial_id: str, result: dict) -> bool:
        if result.get(STORAGE_FULL):
            raise StorageFull(str(result[STORAGE_FULL]))
        return self.stop_all()

    def stop_all(self) -> bool:
        if (why := _FULL_SEEN.get(self.study_name)) is not None:
            raise StorageFull(why)
        return False


_FULL_SEEN: dict[str, str] = {}  # study -> the write Tune failed for want of room, in this process


class _TuneSyncFull(logging.Filter):
    """Notes a failed write of Tune's own (its experiment snapshot and result files, which Tune logs and goes on
    from) that failed for want of room, so `StorageGuard` stops the sweep; such records are dropped, as the
    stage's one line says it all."""

    def __init__(self, study_name: str):
        super().__init__()
        self.study_name = study_name

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else OSError(record.getMessage())  # the syncer's: a text
        if is_storage_full(error):
            why = f"Tune could not write its experiment's state: {full_reason(error)}"
            _FULL_SEEN.setdefault(self.study_name, why)
            return False
        return True


_TUNE_WRITERS = ("ray.tune.execution.experiment_state", "ray.train._internal.syncer")  # loggers of Tune's syncs


@contextlib.contextmanager
def watch_storage(study_name: str):
    watch = _TuneSyncFull(study_name)
    _FULL_SEEN.pop(study_name, None)
    for name in _TUNE_WRITERS:
        logging.getLogger(name).addFilter(watch)
    try:
        yield
    finally:
        for name in _TUNE_WRITERS:
            logging.getLogger(name).removeFilter(watch)


@contextlib.contextmanager
def storage_errors(key: str, where: SweepPlace):
    """A write to the sweep's storage (`where`, set by the params key `key`) that failed for want of room (a trial's
    checkpoint, the journal, Tune's or our own state) or on a read-only storage, as one message naming the place and
    the fix. The sweep has stopped as a kill would stop it: what was written is kept, and the next run resumes it."""
    try:
        yield
    except Exception as error:
        e = storage_full_cause(error) or error  # Tune re-raises what its loop met as a TuneError, chained to it
        if isinstance(e, StorageFull):
            raise StorageFull(full_message(key, where, str(e))) from None
        if isinstance(e, OSError) and is_storage_full(e):
            what = f"writing {e.filename}: {full_reason(e)}" if e.filename else full_reason(e)
            raise StorageFull(full_message(key, where, what)) from None
        if isinstance(e, OSError) and e.errno == errno.EROFS:
            raise GrutuneError(
                f"{key}: cannot write the sweep's state to {e.filename or where.local_dir} ({e.strerror}): set "
                f"{key} to a storage you can write to"
            ) from None
        raise


def full_message(key: str, where: SweepPlace, what: str) -> str:
    place_ = where.uri if where.local_dir == Path(where.uri) else f"{where.uri} (and {where.local_dir})"
    return (
        f"{key}: no room left in {place_}: {what}. The sweep stopped and keeps everything it finished; free space "
        f"there (or set {key} to a storage with room), then run `dvc repro` again: the sweep resumes where it stopped"
    )


def full_seen(study_name: str) -> str | None:
    """The write of Tune's own that failed for want of room in this process's run of the study, if one did."""
    return _FULL_SEEN.get(study_name)
