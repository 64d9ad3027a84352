"""A full disk under a sweep (grutune.sweep.full_storage's StorageGuard, its trainable's wrapper and storage errors, the
searcher's repair of a cut ask): the sweep stops with one message naming the storage and the fix, nothing is
told to Optuna for want of room, and after space is freed the sweep ends with all its trials, each with its whole
config. The fast tests work on real Optuna journals; the Ray test fills a real tmpfs mid-sweep (mounting one needs
root, CAP_SYS_ADMIN: it is skipped, saying so, where that is not permitted)."""

from __future__ import annotations

import errno
import json
import logging
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import ray
from ray import tune

from grutune.config import load_params
from grutune.data import load_prepared
from grutune.errors import StorageFull, cli, full_reason, is_storage_full, storage_full_cause
from grutune.sweep.full_storage import StorageGuard
from grutune.sweep.journal import repair_journal
from grutune.sweep.searcher import STORAGE_FULL
from grutune.trials.classifier import run_classifier_sweep
from sweeps import journal_trials, searcher_at, study_trials, tiny_writer

SET_PARAM = 5  # Optuna's journal op code for one hyperparameter of a trial (optuna.storages.journal's JournalOperation)


def cut_after_first_param(journal: Path, number: int) -> None:
    """Cut `journal` as a full disk cuts it in the middle of `Study.ask` for trial `number`: its first hyperparameter
    written whole, the next record half."""
    lines = journal.read_bytes().split(b"\n")
    first = next(
        i
        for i, line in enumerate(lines)
        if line and (r := json.loads(line))["op_code"] == SET_PARAM and r["trial_id"] == number
    )
    journal.write_bytes(b"\n".join(lines[: first + 1]) + b"\n" + lines[first + 1][: len(lines[first + 1]) // 2])


# --------------------------------------------------------------------------- a cut ask


def test_a_trial_cut_off_in_the_middle_of_its_ask_reaches_tune_with_its_whole_config(tmp_path):
    """A full disk while Optuna writes an ask leaves a trial with part of its hyperparameters. After the journal is
    repaired, the trial is handed out again with the part it has and the rest drawn; the study gets no extra trial
    and no FAIL."""
    s = searcher_at(tmp_path, target=3)
    s.suggest("a")
    s.on_trial_complete("a", {"epoch": 2, "val_accuracy": 0.5})
    s.suggest("b")  # the ask the disk cut
    cut_after_first_param(tmp_path / "s.journal", 1)
    assert repair_journal(tmp_path / "s.journal") is not None
    (kept,) = journal_trials(tmp_path)[1].params.items()  # what the cut ask wrote: one hyperparameter
    resumed = searcher_at(tmp_path, target=3, known=("a",))  # a new experiment of the sweep: Tune forgot "b"
    config = resumed.suggest("c")
    assert set(config) == {"lr", "cell"} and config[kept[0]] == kept[1]
    trials = journal_trials(tmp_path)
    assert len(trials) == 2 and trials[1].params == config and trials[1].user_attrs["tune_trial_id"] == "c"
    assert not [t for t in trials if t.state == optuna.trial.TrialState.FAIL]


def test_a_point_to_evaluate_cut_off_in_its_ask_gets_the_points_values(tmp_path):
    """A known-good point whose ask was cut gets the rest of the point, not values drawn at random."""
    point = {"lr": 0.005, "cell": "rnn"}
    s = searcher_at(tmp_path, target=2, points=[point])
    assert s.suggest("a") == point
    cut_after_first_param(tmp_path / "s.journal", 0)
    repair_journal(tmp_path / "s.journal")
    assert len(journal_trials(tmp_path)[0].params) == 1
    assert searcher_at(tmp_path, target=2, points=[point]).suggest("b") == point


# --------------------------------------------------------------------------- recognising a full disk


def test_a_full_disk_is_recognised_from_the_os_and_from_pyarrow():
    assert is_storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_storage_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    # pyarrow (Ray Tune's storage) names the errno only in its message
    e = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert is_storage_full(e) and full_reason(e) == "No space left on device"
    assert not is_storage_full(OSError(errno.ENOENT, "No such file or directory"))
    assert not is_storage_full(ValueError("No space left on device"))


def test_a_full_disk_is_found_behind_the_error_tune_raises_for_it():
    """Ray Tune re-raises what its loop met as a TuneError holding only the traceback's text, chained to it."""
    from ray.tune.error import TuneError

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise TuneError("Traceback ...")  # noqa: B904 (as Tune raises it: chained implicitly)
    except TuneError as e:
        assert storage_full_cause(e).errno == errno.ENOSPC
    assert storage_full_cause(TuneError("no storage here")) is None


def test_a_stage_that_meets_a_full_disk_says_so_in_one_line(capsys):
    @cli
    def stage():
        raise OSError(errno.ENOSPC, "No space left on device", "out/trials.csv")

    with pytest.raises(SystemExit) as stopped:
        stage()
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "error: no room left writing out/trials.csv: No space left on device. Free space there, then run "
        "`dvc repro` again"
    )


def test_the_guard_stops_on_a_trial_that_could_not_write_its_checkpoint():
    guard = StorageGuard("s")
    assert guard("t", {"epoch": 1, "val_accuracy": 0.5}) is False and guard.stop_all() is False
    with pytest.raises(StorageFull, match="could not write"):
        guard("t", {"epoch": 1, "val_accuracy": 0.5, STORAGE_FULL: "trial t could not write its checkpoint"})


def test_the_guard_stops_when_tune_could_not_write_its_snapshot(caplog):
    """Tune logs a snapshot it could not write, and goes on; the guard stops the sweep at its next step, and the
    record (a traceback) is not shown."""
    from grutune.sweep.full_storage import watch_storage

    guard = StorageGuard("s")
    with watch_storage("s"):
        logging.getLogger("ray.tune.execution.experiment_state").error(
            "Saving experiment state to storage failed with exception:",
            exc_info=OSError("Error writing bytes to file. Detail: [errno 28] No space left on device"),
        )
        logging.getLogger("ray.tune.execution.experiment_state").error("something else")
        with pytest.raises(StorageFull, match="Tune could not write its experiment's state: No space left"):
            guard.stop_all()
    assert "Saving experiment state" not in caplog.text and "something else" in caplog.text
    with watch_storage("s"):  # a new run starts with a clean slate
        assert guard.stop_all() is False


def test_a_journal_append_on_a_full_disk_fails_with_enospc(small_disk):
    """What the driver turns into its message: Optuna's JournalFileBackend appending to a journal on a full disk
    raises ENOSPC (a real tmpfs)."""
    s = searcher_at(small_disk, target=3)
    s.suggest("a")
    fill(small_disk)
    with pytest.raises(OSError) as raised:
        for i in range(1000):  # the journal's last page may hold a few more records
            s.on_trial_result("a", {"epoch": i + 1, "val_accuracy": 0.5})
    assert is_storage_full(raised.value)


# --------------------------------------------------------------------------- a real sweep on a real small disk


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MB tmpfs (mounting needs root); unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int = 0, name: str = "ballast") -> None:
    """Fill `disk` with a ballast file, to the last byte but `leave`."""
    with open(disk / name, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
        f.truncate(max(0, f.tell() - leave))


class FillOnce(tune.Callback):
    """Fills the disk when the `after`-th trial of the sweep completes, but for 12 KiB: room for a few of the
    journal's small appends, none for a checkpoint (26 KB and more); once (the marker is outside the disk)."""

    def __init__(self, disk: Path, marker: Path, after: int):
        self.disk, self.marker, self.after, self.seen = disk, marker, after, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.seen += 1
        if self.seen >= self.after and not self.marker.exists():
            self.marker.touch()
            fill(self.disk, leave=12 << 10)


@pytest.fixture(scope="session")
def tiny(write_params):
    return tiny_writer(write_params)


@pytest.fixture(scope="module")
def local_ray():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # trial processes cannot import this module
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


SPACE = {"bidirectional": {"choice": [False, True]}, "cell": {"choice": ["gru", "rnn"]}}


@pytest.mark.ray
def test_a_sweep_on_a_disk_that_fills_stops_cleanly_and_ends_with_every_trial_after_space_is_freed(
    tmp_path, small_disk, prepared_mnist, local_ray, tiny
):
    """6 trials on a real tmpfs that fills once 2 trials have finished. The sweep stops with our error, naming the
    storage and the fix; no trial is FAIL in Optuna. Run again on the full disk, it is refused before any training.
    With the space freed (and the disk enlarged), the sweep resumes and ends with 6 real results: no failed or
    errored trial, each with its whole config."""
    storage = small_disk / "sweeps"
    p = load_params(tiny(tmp_path / "params.yaml", search={"storage": str(storage), "max_failures": 2}, space=SPACE))
    data = load_prepared(prepared_mnist(n_train=600, n_test=100, val_fraction=0.2))
    filler = FillOnce(small_disk, tmp_path / "filled", after=2)

    with pytest.raises(StorageFull) as stopped:
        run_classifier_sweep(p, data, state_dir=tmp_path / "unused", callbacks=[filler])
    message = str(stopped.value)
    assert message.startswith(f"search.storage: no room left in {storage}/mnist-")
    assert "No space left on device" in message and "dvc repro" in message and "free space" in message
    trials = study_trials(storage)
    assert sum(t.state.is_finished() for t in trials) >= 2
    assert not [t for t in trials if t.state == optuna.trial.TrialState.FAIL], "a full disk is no verdict on a config"

    fill(small_disk, name="ballast-2")  # to the last byte
    with pytest.raises(StorageFull, match="no room left"):  # still full: refused at once, nothing trained
        run_classifier_sweep(p, data, state_dir=tmp_path / "unused", callbacks=[filler])
    assert len(study_trials(storage)) == len(trials)

    for ballast in small_disk.glob("ballast*"):
        ballast.unlink()
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    result = run_classifier_sweep(p, data, state_dir=tmp_path / "unused", callbacks=[filler])
    s = result.summary
    assert s["trials"] == 6 and s["completed"] + s["pruned"] == 6 and s["failed"] == s["errored"] == 0, s
    assert all(r["status"] in ("completed", "pruned") for r in result.trials)
    trials = study_trials(storage)
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    assert not [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    dimensions = {"hidden_size", "bidirectional", "cell", "dropout", "lr", "weight_decay"}
    assert all(set(t.params) == dimensions for t in trials), [t.params for t in trials]
