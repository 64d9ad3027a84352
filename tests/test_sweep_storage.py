"""Where a sweep is kept (grutune.sweep.storage): its folder, its Tune experiments in order, its sweep.json, and a
sweep saved by grutune's earlier layout refused with what to do. None of it starts Ray."""

import pytest

from grutune.config import load_params
from grutune.data import load_prepared
from grutune.errors import GrutuneError
from grutune.sweep.storage import place, read_state, segments, write_state
from grutune.trials.classifier import classifier_sweep, run_classifier_sweep
from sweeps import tiny_writer


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
