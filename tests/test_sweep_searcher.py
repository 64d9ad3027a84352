"""grutune's Tune searcher (grutune.sweep.searcher) driven as Tune drives it, outside Tune: the recovery protocol
(snapshots, restores, orphans, moved sweeps), points to evaluate, the bound target and concurrency, its state file."""

import json
import math
import pickle

import optuna
import pytest
from ray.tune.search import Searcher

from grutune.errors import GrutuneError
from grutune.sweep.binding import SweepRun, bind, location
from grutune.sweep.journal import ALIAS, created_all, finished_result, journal_progress
from grutune.sweep.searcher import GrutuneSearcher
from sweeps import journal_study, journal_trials, searcher_at


def test_points_to_evaluate_come_first_in_order_and_a_resumed_study_goes_on_with_the_next(tmp_path):
    """Known-good configs come first, in order (a partial one gets the rest drawn). Resumed after a kill, the study
    goes on with the next point; one enqueued but never asked for (a kill in between) is handed out once, not
    twice; and the study never holds more trials than num_samples."""
    points = [{"lr": 0.005, "cell": "rnn"}, {"cell": "gru"}, {"lr": 0.0002}]
    s = searcher_at(tmp_path, target=4, points=points)
    first, second = s.suggest("a"), s.suggest("b")
    assert first == {"lr": 0.005, "cell": "rnn"} and second["cell"] == "gru"
    for t in "ab":
        s.on_trial_complete(t, {"epoch": 2, "val_accuracy": 0.5})
    s.save(str(tmp_path / "snapshot.json"))  # Tune's snapshot, then a kill just after the next point was enqueued
    journal_study(tmp_path).enqueue_trial(points[2])
    resumed = searcher_at(tmp_path, target=4, points=points)
    resumed.restore(str(tmp_path / "snapshot.json"))
    third = resumed.suggest("c")
    assert third["lr"] == 0.0002
    resumed.on_trial_complete("c", {"epoch": 2, "val_accuracy": 0.5})
    fourth = resumed.suggest("d")
    assert fourth["lr"] != 0.0002  # drawn: every point has been handed out
    resumed.on_trial_complete("d", {"epoch": 2, "val_accuracy": 0.5})
    assert resumed.suggest("e") == "FINISHED"
    trials = journal_trials(tmp_path)
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_a_trial_created_and_finished_after_the_snapshot_is_handed_on_not_run_again(tmp_path):
    """Tune's snapshot predates a trial that then ran to the end. On restore, Tune re-creates a trial in its place:
    that trial gets the finished one's config and replays its result, and the study keeps one trial, not two."""
    first = searcher_at(tmp_path)
    first.save(str(tmp_path / "snapshot.json"))  # Tune's last snapshot: before the trial below existed
    config = first.suggest("old")
    first.on_trial_result("old", {"epoch": 1, "val_accuracy": 0.4})
    first.on_trial_complete("old", {"epoch": 2, "val_accuracy": 0.6})

    restored = searcher_at(tmp_path)
    restored.restore(str(tmp_path / "snapshot.json"))
    assert restored.suggest("new") == config
    restored.on_trial_result("new", {"epoch": 1, "val_accuracy": 0.1})  # the replay is not told to Optuna again
    restored.on_trial_complete("new", {"epoch": 2, "val_accuracy": 0.1})
    fresh = restored.suggest("third")  # the next trial is a new one
    assert fresh is not None and fresh != config
    study = journal_trials(tmp_path)
    assert len(study) == 2 and study[0].state == optuna.trial.TrialState.COMPLETE and study[0].value == 0.6
    assert study[0].intermediate_values == {1: 0.4, 2: 0.6}
    assert finished_result(str(tmp_path / "s.journal"), "s", "new", "val_accuracy") == {"epoch": 2, "val_accuracy": 0.6}
    progress = journal_progress(tmp_path / "s.journal", "s", lambda a, b: math.isnan(b) or a > b)
    assert progress["new"] == (2, 0.6, 0, True, {}, 0.0) and "old" not in progress  # it reported no seconds


def test_a_sweep_restored_twice_keeps_the_trials_finished_before_the_first_restore(tmp_path):
    """Restored again (a sweep interrupted twice, or extended after a resume), trials finished before the first
    restore are still Tune's own: new Tune trials get new configs, and nothing is aliased."""
    first = searcher_at(tmp_path)
    done = first.suggest("a")
    first.on_trial_complete("a", {"epoch": 1, "val_accuracy": 0.5})
    first.save(str(tmp_path / "one.json"))
    second = searcher_at(tmp_path)
    second.restore(str(tmp_path / "one.json"))
    second.suggest("b")
    second.on_trial_complete("b", {"epoch": 1, "val_accuracy": 0.6})
    second.save(str(tmp_path / "two.json"))
    third = searcher_at(tmp_path)
    third.restore(str(tmp_path / "two.json"))
    fresh = third.suggest("c")
    assert fresh != done
    third.on_trial_complete("c", {"epoch": 2, "val_accuracy": 0.7})
    study = journal_study(tmp_path)
    assert len(study.trials) == 3 and not [k for k in study.user_attrs if k.startswith(ALIAS)]
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED", "COMPLETE"] and study.trials[2].value == 0.7


def test_the_searcher_stops_at_the_bound_target_and_concurrency_and_its_state_names_no_path(tmp_path):
    """It hands out at most max_concurrent trials at once and FINISHED once the study holds `target` trials; its
    saved state and its pickle (what Tune keeps) name no path; a trial asked for before a kill is handed out again."""
    s = searcher_at(tmp_path, target=3, max_concurrent=2)
    a, b = s.suggest("a"), s.suggest("b")
    assert a and b and s.suggest("c") is None  # two at once
    s.save(str(tmp_path / "state.json"))
    s.on_trial_complete("a", {"epoch": 2, "val_accuracy": 0.5})
    c = s.suggest("c")
    assert c is not None and s.suggest("d") is None
    s.on_trial_complete("b", {"epoch": 2, "val_accuracy": 0.6})
    assert s.suggest("d") == Searcher.FINISHED  # 3 trials in the study
    state = (tmp_path / "state.json").read_text()
    assert json.loads(state)["format"] == "grutune-searcher" and str(tmp_path) not in state
    assert str(tmp_path).encode() not in pickle.dumps(s)
    # Killed after "c" was asked for but before Tune recorded it: restored from the snapshot of before, the
    # searcher hands c's Optuna trial to the next Tune trial rather than asking for a fourth.
    restored = searcher_at(tmp_path, target=3, max_concurrent=2)
    restored.restore(str(tmp_path / "state.json"))
    assert restored.suggest("e") == c
    assert len(journal_trials(tmp_path)) == 3


def test_an_experiment_says_it_created_all_its_trials_when_it_hands_out_its_last(tmp_path):
    """Tune asks an experiment of `tune_samples` trials for none after the last, so its searcher never says FINISHED:
    it writes that the experiment created all its trials (what the driver reads to tell a complete experiment from
    an interrupted one) when it hands out the last, also one restored after a kill. Without `tune_samples` (an
    experiment that runs until FINISHED) it writes so when it says FINISHED."""
    s = searcher_at(tmp_path, target=10, tune_samples=3)
    s.suggest("a")
    s.save(str(tmp_path / "snapshot.json"))
    s.suggest("b")  # then a kill: Tune's snapshot has only a
    restored = searcher_at(tmp_path, target=10, tune_samples=3)  # Tune unpickles the searcher it started with
    restored.restore(str(tmp_path / "snapshot.json"))
    assert restored.suggest("c") is not None and not created_all(journal_study(tmp_path), "tune-1")
    assert restored.suggest("d") is not None and created_all(journal_study(tmp_path), "tune-1")
    assert len(journal_trials(tmp_path)) == 3  # a, b (handed to c) and d: Tune's three

    (tmp_path / "until_finished").mkdir()
    n = searcher_at(tmp_path / "until_finished", target=2)
    assert n.suggest("a") and n.suggest("b") and not created_all(journal_study(tmp_path / "until_finished"), "tune-1")
    n.on_trial_complete("a", {"epoch": 2, "val_accuracy": 0.5})
    assert n.suggest("c") == Searcher.FINISHED and created_all(journal_study(tmp_path / "until_finished"), "tune-1")


def test_a_newer_state_file_is_refused_by_name(tmp_path):
    s = searcher_at(tmp_path)
    (tmp_path / "state.json").write_text(
        json.dumps({"format": "grutune-searcher", "version": 99, "live": {}, "done": []})
    )
    with pytest.raises(GrutuneError, match=r"state.json: searcher state version 99"):
        s.restore(str(tmp_path / "state.json"))


def test_an_experiment_restored_elsewhere_creates_no_trials(tmp_path):
    """Tune gives trials it creates after a restore the experiment's original path, so an experiment restored
    after its sweep moved says FINISHED at once: its restored trials run on, and the sweep's next experiment, at
    the new place, creates the rest."""

    def searcher(where):
        bind(
            "s",
            SweepRun(
                journal=tmp_path / "s.journal", target=4, max_concurrent=4, segment="tune-1", origin=location(where)
            ),
        )
        return GrutuneSearcher(
            study_name="s",
            space={"lr": ("loguniform", [1e-4, 1e-2])},
            seed=0,
            metric="val_accuracy",
            mode="max",
            max_epochs=1,
            startup_trials=2,
            origin=location("/old/project/.grutune/sweeps/s"),
        )

    first = searcher("/old/project/.grutune/sweeps/s")
    first.suggest("a")
    first.save(str(tmp_path / "state.json"))
    same = searcher("/old/project/.grutune/sweeps/s")
    same.restore(str(tmp_path / "state.json"))
    assert isinstance(same.suggest("b"), dict)
    moved = searcher("/new/project/.grutune/sweeps/s")
    moved.restore(str(tmp_path / "state.json"))
    assert moved.suggest("c") == Searcher.FINISHED
    moved.on_trial_complete("a", {"epoch": 1, "val_accuracy": 0.5})  # its restored trial still reaches Optuna
    assert journal_trials(tmp_path)[0].state == optuna.trial.TrialState.COMPLETE


def test_a_trial_keeps_the_columns_it_measured_with_its_first_epoch(tmp_path):
    """What a trial reports besides the metric is kept in the journal (user attributes cost:<column>) for the columns
    the searcher is given (a sweep's `Objective.columns`), once, from its first epoch; other keys are not kept."""
    bind("s", SweepRun(journal=tmp_path / "s.journal", target=1, max_concurrent=1, segment="tune-1"))
    s = GrutuneSearcher(
        study_name="s",
        space={"lr": ("loguniform", [1e-4, 1e-2])},
        seed=0,
        metric="val_accuracy",
        mode="max",
        max_epochs=2,
        startup_trials=1,
        columns=("params", "latency_ms"),
    )
    s.suggest("a")
    s.on_trial_result("a", {"epoch": 1, "val_accuracy": 0.5, "params": 1000, "latency_ms": 0.5, "node_id": 7})
    s.on_trial_complete("a", {"epoch": 2, "val_accuracy": 0.6, "params": 2000, "latency_ms": 0.9})
    (t,) = journal_trials(tmp_path)
    assert {k: v for k, v in t.user_attrs.items() if k.startswith("cost:")} == {
        "cost:params": 1000.0,
        "cost:latency_ms": 0.5,
    }
    assert finished_result(str(tmp_path / "s.journal"), "s", "a", "val_accuracy") == {
        "epoch": 2,
        "val_accuracy": 0.6,
        "params": 1000.0,
        "latency_ms": 0.5,
    }
