"""Where a sweep is kept (grutune.sweep.storage): its folder, its Tune experiments in order, its sweep.json, a sweep
saved by grutune's earlier layout refused with what to do, and the journal's copy in cloud storage, which never goes
back in time. Only the tests marked `ray` start Ray (one local Ray of their own).

The cloud storage is pyarrow's local filesystem behind a file:// URI: the same pyarrow calls as for s3://, on a real
filesystem (Tune writes its experiments there through pyarrow too); the journals are real Optuna journals, written by
Optuna.
"""

import pickle

import optuna
import pytest
import ray
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune

from grutune.config import load_params
from grutune.data import load_prepared
from grutune.errors import GrutuneError
from grutune.sweep.binding import SweepRun, bind
from grutune.sweep.journal import TUNE_ID
from grutune.sweep.storage import JournalSync, place, read_state, segments, write_state
from grutune.trials.classifier import classifier_sweep, run_classifier_sweep
from sweeps import study_trials, tiny_writer


@pytest.fixture(scope="session")
def tiny(write_params):
    return tiny_writer(write_params)


def test_a_sweeps_folder_holds_its_experiments_in_order_and_its_state(tmp_path):
    """With no storage set, a sweep's folder is <state_dir>/<sweep id>, holding its journal and sweep.json; its Tune
    experiments are tune-1, tune-2, ... in number order (tune-10 after tune-2); an unreadable sweep.json reads as
    none."""
    where = place("mnist-abc", None, "search.storage", tmp_path / "state")
    assert where.uri == str((tmp_path / "state/mnist-abc").resolve()) and where.journal_uri is None
    assert where.local_dir.is_dir() and where.journal == where.local_dir / "optuna.journal"
    assert segments(where.uri) == [] and segments(str(tmp_path / "nowhere")) == []
    for name in ("tune-10", "tune-2", "tune-1", "tune-x", "other"):
        (where.local_dir / name).mkdir()
    (where.local_dir / "tune-3").write_text("a file, not an experiment")
    assert segments(where.uri) == ["tune-1", "tune-2", "tune-10"]
    assert read_state(where.local_dir) == {}
    write_state(where.local_dir, {"sweep_id": "mnist-abc", "num_samples": 4})
    assert read_state(where.local_dir) == {
        "format": "grutune-sweep",
        "version": 2,
        "sweep_id": "mnist-abc",
        "num_samples": 4,
    }
    (where.local_dir / "sweep.json").write_text("[not, a, mapping")
    assert read_state(where.local_dir) == {}


def test_a_sweep_saved_by_the_earlier_layout_is_refused_with_what_to_do(tmp_path, prepared_mnist, tiny):
    params = load_params(tiny(tmp_path / "params.yaml"))
    data = load_prepared(prepared_mnist(n_train=600, n_test=100, val_fraction=0.2))
    sid = classifier_sweep(params, data).sweep_id
    (tmp_path / "state" / sid).mkdir(parents=True)
    (tmp_path / "state" / f"{sid}.optuna.journal").write_text("")
    with pytest.raises(GrutuneError, match=rf"sweep {sid} .* was saved by an earlier grutune.*move .* away"):
        run_classifier_sweep(params, data, state_dir=tmp_path / "state")


# --------------------------------------------------------------------------- the journal's copy in cloud storage


def grown_journal(path, steps):
    """An Optuna journal at `path`, written by Optuna in `steps` stages; returns its bytes after each stage (every
    later one holds the earlier ones: a journal only grows)."""
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    stages = []
    for _ in range(steps):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.report(0.5, step=1)
        study.tell(trial, 0.6)
        stages.append(path.read_bytes())
    return stages


@pytest.fixture
def synced(tmp_path):
    """A JournalSync bound as the driver binds a sweep with cloud storage: the journal on this node, its copy at a
    file:// URI (pyarrow's local filesystem, as Tune's storage would be for s3://)."""
    local = tmp_path / "state/sweep/optuna.journal"
    remote = tmp_path / "bucket/grutune/sweep/optuna.journal"
    bind("sweep", SweepRun(journal=local, target=4, max_concurrent=1, segment="tune-1", journal_uri=f"file://{remote}"))
    return JournalSync("sweep"), local, remote


def test_a_resume_keeps_the_newer_journal_and_never_goes_back(tmp_path, synced):
    """The journal is append-only, so the longer copy is the newer: a local journal newer than its copy (a kill on
    the same head after tells the copy missed) is kept, not overwritten; an older or missing one is replaced by the
    copy; a copy cut mid-record counts only its whole records."""
    sync, local, remote = synced
    stages = grown_journal(tmp_path / "grown.journal", 3)
    remote.parent.mkdir(parents=True)
    local.parent.mkdir(parents=True)

    sync.download()  # no copy yet, no journal here: nothing to do
    assert not local.exists()

    remote.write_bytes(stages[0])
    sync.download()  # a new head: the copy comes down
    assert local.read_bytes() == stages[0]

    local.write_bytes(stages[2])  # killed after two more tells, which were never copied up
    sync.download()
    assert local.read_bytes() == stages[2]  # kept: the copy is older

    local.write_bytes(stages[1])  # a journal here older than the copy (the sweep went on elsewhere)
    remote.write_bytes(stages[2])
    sync.download()
    assert local.read_bytes() == stages[2]

    remote.write_bytes(stages[1] + stages[2][len(stages[1]) :][:7])  # a copy cut mid-record
    local.write_bytes(stages[2])
    sync.download()
    assert local.read_bytes() == stages[2]
    local.write_bytes(stages[1] + b'{"op_code": 4, "cut')  # the journal here cut mid-record: the whole ones count
    remote.write_bytes(stages[2])
    sync.download()
    assert local.read_bytes() == stages[2]


def test_journals_that_part_ways_stop_the_sweep_naming_both(tmp_path, synced):
    sync, local, remote = synced
    ours = grown_journal(tmp_path / "ours.journal", 2)
    theirs = grown_journal(tmp_path / "theirs.journal", 2)
    assert ours[0] != theirs[0]  # two studies: different ids and parameters
    local.parent.mkdir(parents=True)
    remote.parent.mkdir(parents=True)
    local.write_bytes(ours[1])
    remote.write_bytes(ours[0] + theirs[1][len(theirs[0]) :])  # the copy went on with other records
    with pytest.raises(GrutuneError, match=r"sweep sweep: its journal here .* and its copy at file://.* part after"):
        sync.download()
    assert local.read_bytes() == ours[1]  # nothing was overwritten


def test_the_copy_is_written_at_every_snapshot_tune_takes(tmp_path, synced):
    """Tune asks each callback for its state (`get_state`) when it takes a snapshot of the experiment, before it
    copies the snapshot up: the journal's copy is written then, so it is never older than the snapshot. Unchanged,
    it is not written again; the callback, pickled with the experiment, keeps only the study's name."""
    sync, local, remote = synced
    local.parent.mkdir(parents=True)
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(local))))
    assert sync.get_state() is None  # Tune's contract: no state of its own to keep
    assert remote.read_bytes() == local.read_bytes()
    study.tell(study.ask(), 0.1)
    remote.write_bytes(b"")  # not rewritten while the journal is unchanged: marked here to see it rewritten
    sync.get_state()
    assert remote.read_bytes() == local.read_bytes()
    remote.write_bytes(b"marker")
    sync.get_state()
    sync.on_experiment_end([])
    assert remote.read_bytes() == b"marker"  # nothing new to copy up
    restored = pickle.loads(pickle.dumps(sync))
    assert vars(restored) == {"study_name": "sweep", "_sent": None}
    restored.get_state()  # a restored callback copies up at its first snapshot
    assert remote.read_bytes() == local.read_bytes()


@pytest.fixture
def local_ray():
    # A Ray of its own ("local"), never one already on the machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.ray
def test_a_real_sweep_keeps_its_newer_journal_over_an_older_copy(tmp_path, prepared_mnist, tiny, local_ray):
    """A sweep with cloud storage (file://, through pyarrow as s3:// is): when it ends, the copy is the journal,
    and every trial that Tune's snapshot in the storage holds as finished is finished in the copy. Then the copy is
    set back to an earlier, whole record (tells it missed before a kill on the same head): the sweep, given one more
    trial, keeps the journal here and the two trials it holds, and leaves the copy equal to it again."""
    data = load_prepared(prepared_mnist(n_train=600, n_test=100, val_fraction=0.2))
    bucket, state = tmp_path / "bucket", tmp_path / "state"
    storage = {"num_samples": 2, "storage": f"file://{bucket}"}
    first = run_classifier_sweep(load_params(tiny(tmp_path / "a.yaml", search=storage)), data, state_dir=state)
    (journal,) = state.glob("*/optuna.journal")
    (copy,) = bucket.glob("*/optuna.journal")
    assert copy.read_bytes() == journal.read_bytes()
    snapshot = tune.ExperimentAnalysis(str(copy.parent / "tune-1"))
    finished = {t.trial_id for t in snapshot.trials if t.status == "TERMINATED"}
    in_copy = {t.user_attrs.get(TUNE_ID) for t in study_trials(bucket) if t.state.is_finished()}
    assert finished and finished <= in_copy

    ours = journal.read_bytes()
    records = ours.splitlines(keepends=True)
    copy.write_bytes(b"".join(records[: len(records) // 2]))  # older: half the records
    more = run_classifier_sweep(
        load_params(tiny(tmp_path / "b.yaml", search={**storage, "num_samples": 3})), data, state_dir=state
    )
    assert journal.read_bytes().startswith(ours)  # nothing here went back
    assert copy.read_bytes() == journal.read_bytes()
    assert more.summary["trials"] == 3
    kept = {r["trial_id"]: (r["status"], r["epochs"]) for r in first.trials}
    assert {r["trial_id"]: (r["status"], r["epochs"]) for r in more.trials if r["trial_id"] in kept} == kept
