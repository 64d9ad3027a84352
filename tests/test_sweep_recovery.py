"""The crash-recovery rules (grutune.sweep.recovery): the searcher's state file, how the journal's trials are sorted
against what Tune's snapshot knows, and how a trial is finished from what the journal holds of it. The searcher that
applies them is tested in test_sweep_searcher.py, with real Tune experiments in the Ray tier."""

from __future__ import annotations

import json

import optuna
import pytest

from grutune.errors import GrutuneError
from grutune.sweep.journal import COST, TUNE_ID
from grutune.sweep.recovery import FORMAT, VERSION, load_state, recover, retell, save_state

RUNNING, COMPLETE, PRUNED, FAIL = (optuna.trial.TrialState[s] for s in ("RUNNING", "COMPLETE", "PRUNED", "FAIL"))


def _study(directions=("maximize",)) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=list(directions))


def _trial(study: optuna.Study, tune_id: str | None, steps: dict[int, float] | None = None, **attrs) -> int:
    t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    if tune_id is not None:
        t.set_user_attr(TUNE_ID, tune_id)
    for k, v in attrs.items():
        t.set_user_attr(k, v)
    for step, value in (steps or {}).items():
        t.report(value, step)
    return t.number


def test_the_state_file_round_trips_and_names_no_path(tmp_path):
    path = tmp_path / "searcher-state.json"
    save_state(path, "fashion_mnist-abc", {"t1": 0, "t2": 3}, {"t0", "t9"})
    state = json.loads(path.read_text())
    assert state == {
        "format": FORMAT,
        "version": VERSION,
        "study": "fashion_mnist-abc",
        "live": {"t1": 0, "t2": 3},
        "done": ["t0", "t9"],
    }
    assert str(tmp_path) not in path.read_text()
    assert load_state(path) == ({"t1": 0, "t2": 3}, {"t0", "t9"})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # written through a temporary file, none left


@pytest.mark.parametrize(
    "text, says",
    [
        ("{not json", r"state.json: not a grutune searcher state \("),
        ('["a list"]', r"state.json: not a grutune searcher state$"),
        ('{"format": "tune-searcher"}', r"state.json: not a grutune searcher state \(format 'tune-searcher'\)"),
        (json.dumps({"format": FORMAT, "version": 99}), r"state.json: searcher state version 99, but this grutune"),
    ],
)
def test_anything_else_is_refused_naming_the_file(tmp_path, text, says):
    (tmp_path / "state.json").write_text(text)
    with pytest.raises(GrutuneError, match=says):
        load_state(tmp_path / "state.json")


def test_the_journal_sorts_trials_by_what_happened_after_the_snapshot():
    """Tune's snapshot knew t1 and t2 as running and t3 as finished; t5 ran in an earlier experiment; the journal
    has moved on since."""
    study = _study()
    finished_since = _trial(study, "t1", {1: 0.5})
    study.tell(finished_since, 0.5)
    _trial(study, "t2", {1: 0.4})  # still running: Tune resumes it, nothing to do
    untold = _trial(study, "t3", {1: 0.6})  # Tune finished it, but the tell was cut
    orphan = _trial(study, None)  # asked for, never handed to Tune
    created_and_finished = _trial(study, "t4", {1: 0.7})
    study.tell(created_and_finished, 0.7)
    earlier = _trial(study, "t5", {1: 0.3})
    study.tell(earlier, 0.3)
    aliased = _trial(study, "t6", {1: 0.2})  # already handed to a re-created trial
    study.tell(aliased, 0.2)
    study.enqueue_trial({"x": 0.5})  # WAITING: not an orphan

    r = recover(
        study.get_trials(deepcopy=False), live={"t1": 0, "t2": 1}, done={"t3"}, aliased={"t6"}, known=frozenset({"t5"})
    )
    assert r.finished == ["t1"]
    assert [t.number for t in r.untold] == [untold]
    assert r.orphans == [orphan]
    assert [t.number for t in r.finished_orphans] == [created_and_finished]


@pytest.mark.parametrize(
    "steps, epochs, state, value",  # Optuna takes a PRUNED trial's last intermediate value as its value
    [({}, 0, FAIL, None), ({1: 0.5, 2: 0.6}, 2, PRUNED, 0.6), ({1: 0.5, 2: 0.6, 3: 0.65}, 3, COMPLETE, 0.65)],
)
def test_a_trial_is_finished_from_what_the_journal_holds(steps, epochs, state, value):
    study = _study()
    number = _trial(study, "t1", steps, epochs=epochs)
    retell(study, study.get_trials(deepcopy=False)[number], max_epochs=3, cost_names=())
    t = study.get_trials()[number]
    assert t.state == state
    assert t.value == value


def test_a_multi_objective_trial_needs_its_costs_to_complete():
    study = _study(("maximize", "minimize"))
    with_cost = _trial(study, "t1", epochs=3, **{"value@epoch3": 0.8, COST + "params": 1000.0})
    without = _trial(study, "t2", epochs=3, **{"value@epoch3": 0.9})
    for number in (with_cost, without):
        retell(study, study.get_trials(deepcopy=False)[number], max_epochs=3, cost_names=("params",))
    done = study.get_trials()
    assert done[with_cost].state == COMPLETE and done[with_cost].values == [0.8, 1000.0]
    assert done[without].state == FAIL
