"""The sweep driver (grutune.sweep.driver) on tiny real runs: real Ray Tune, Optuna (journal storage) and ASHA on
generated data, through the classifier's sweep. What a sweep records of each kind of trial (in Optuna and in its
rows), raising num_samples, resuming with today's concurrency, a cut journal or Tune state, and a budget in hours.

Every test here starts a local Ray.
"""

import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import ray

from grutune.config import load_params
from grutune.data import load_prepared
from grutune.trials.classifier import run_classifier_sweep, run_trial
from sweeps import TINY_SPACE, study_trials, tiny_writer
from tune_results import cpus_in_use, trial_results


@pytest.fixture(scope="session")
def tiny(write_params):
    return tiny_writer(write_params)


@pytest.fixture(scope="module")
def prepared(prepared_mnist) -> Path:
    return prepared_mnist(n_train=600, n_test=100, val_fraction=0.2)


@pytest.fixture(scope="module")
def local_ray():
    # Trial processes cannot import this test module: ship its functions (flaky_trial) by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # A Ray of its own ("local"), never one already on the machine (a ray.cluster_utils.Cluster of another run).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


# --------------------------------------------------------------------------- faults


def flaky_trial(config, *, data, settings):
    """The real trial, with faults keyed on the config: hidden 17 raises, hidden 19 gets a NaN loss."""
    if config["hidden_size"] == 17:
        raise RuntimeError("injected failure")
    if config["hidden_size"] != 19:
        return run_trial(config, data=data, settings=settings)
    import torch.nn.functional as F

    real = F.cross_entropy
    F.cross_entropy = lambda *a, **k: real(*a, **k) * float("nan")  # this trial only: trial processes are reused
    try:
        run_trial(config, data=data, settings=settings)
    finally:
        F.cross_entropy = real


@pytest.mark.ray
def test_nan_and_raising_trials_leave_the_sweep_complete_and_counted(tmp_path, prepared, local_ray, tiny):
    first = [{"hidden_size": h} for h in (16, 17, 19)]  # each kind of trial at least once, whatever TPE draws
    p = load_params(
        tiny(
            tmp_path / "params.yaml",
            search={"num_samples": 8, "points_to_evaluate": first},
            space={"hidden_size": {"choice": [16, 17, 19]}},
        )
    )
    result = run_classifier_sweep(p, load_prepared(prepared), state_dir=tmp_path / "state", trainable=flaky_trial)
    rows = result.trials
    by_hidden = {h: [r for r in rows if r["hidden_size"] == h] for h in (16, 17, 19)}
    assert [r["hidden_size"] for r in sorted(rows, key=lambda r: r["trial"])[:3]] == [16, 17, 19]
    assert {r["status"] for r in by_hidden[17]} == {"errored"}
    assert {r["status"] for r in by_hidden[19]} == {"failed"}
    assert {r["status"] for r in by_hidden[16]} <= {"completed", "pruned"}
    for r in by_hidden[17]:
        assert "injected failure" in Path(r["error"]).read_text()  # the traceback is kept in the trial's directory
    s = result.summary
    assert (s["errored"], s["failed"]) == (len(by_hidden[17]), len(by_hidden[19]))
    assert s["completed"] + s["pruned"] + s["failed"] + s["errored"] == s["trials"] == 8
    assert result.best["config"]["hidden_size"] == 16
    # Optuna holds exactly num_samples trials: a raising trial is FAIL; a diverged one is PRUNED at the worst value
    # (accuracy 0) at the epoch it diverged, marked `diverged`, so that TPE learns from it.
    trials = study_trials(tmp_path / "state")
    assert len(trials) == 8
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert sorted(t.params["hidden_size"] for t in failed) == [17] * len(by_hidden[17])
    diverged = [t for t in trials if t.user_attrs.get("diverged")]
    assert sorted(t.params["hidden_size"] for t in diverged) == [19] * len(by_hidden[19])
    assert all(t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values == {1: 0.0} for t in diverged)


# --------------------------------------------------------------------------- what Optuna sees, extending, packing


@pytest.mark.ray
def test_optuna_records_each_kind_of_trial_as_tune_ran_it(tmp_path, prepared, local_ray, tiny):
    """completed -> COMPLETE with its final epoch's value; pruned by ASHA -> PRUNED; failed (NaN) -> PRUNED at the
    worst value, marked diverged; errored (raised) -> FAIL. Every epoch of a trial that did not fail is an
    intermediate value, the last one included."""
    # One trial at a time, in this order: a good config runs to the end; one that barely learns is then below it
    # at ASHA's first rung and pruned; hidden 17 raises; hidden 19 diverges.
    points = [
        {"hidden_size": 24, "lr": 1e-2},
        {"hidden_size": 24, "lr": 1e-4},
        {"hidden_size": 17},
        {"hidden_size": 19},
    ]
    p = load_params(
        tiny(
            tmp_path / "params.yaml",
            search={
                "num_samples": 4,
                "max_epochs": 3,
                "grace_period": 1,
                "reduction_factor": 2,
                "max_failures": 0,
                "max_concurrent_trials": 1,
                "points_to_evaluate": points,
            },
            space={"hidden_size": {"choice": [16, 17, 19, 24]}, "lr": {"loguniform": [1e-4, 3e-2]}},
        )
    )
    result = run_classifier_sweep(p, load_prepared(prepared), state_dir=tmp_path / "state", trainable=flaky_trial)
    by_number = {t.number: t for t in study_trials(tmp_path / "state")}
    state = optuna.trial.TrialState
    expected = {"completed": state.COMPLETE, "pruned": state.PRUNED, "failed": state.PRUNED, "errored": state.FAIL}
    ordered = [r["status"] for r in sorted(result.trials, key=lambda r: r["trial"])]
    assert ordered == ["completed", "pruned", "errored", "failed"], ordered
    assert len(by_number) == len(result.trials) == 4
    for row in result.trials:
        t = by_number[row["trial"]]
        assert t.state == expected[row["status"]], row
        if row["status"] in ("completed", "pruned"):
            assert sorted(t.intermediate_values) == list(range(1, row["epochs"] + 1)), row
            assert math.isclose(max(t.intermediate_values.values()), row["best_val_accuracy"])
            assert t.value == t.intermediate_values[row["epochs"]]  # the final epoch's (pruned: Optuna's choice)
        if row["status"] == "failed":
            assert (
                t.user_attrs["diverged"] and t.value == 0.0 and t.intermediate_values[max(t.intermediate_values)] == 0
            )
        assert (row["epochs"] < 3) == (row["status"] == "pruned") or row["status"] in ("failed", "errored")
    # optuna-dashboard, opened on the sweep's journal as the README says, shows the same statuses.
    (journal,) = (tmp_path / "state").glob("*/optuna.journal")
    shown = dashboard_states(journal)
    assert shown == {
        r["trial"]: {"completed": "Complete", "pruned": "Pruned", "failed": "Pruned"}.get(r["status"], "Fail")
        for r in result.trials
    }


def dashboard_states(journal: Path) -> dict[int, str]:
    """{trial number: state} as optuna-dashboard's web API serves them for the journal's study."""
    import shutil
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    proc = subprocess.Popen(
        [exe, str(journal), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/0?after=0", timeout=5) as r:
                    return {t["number"]: t["state"] for t in json.load(r)["trials"]}
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.ray
def test_raising_num_samples_runs_exactly_the_missing_trials(tmp_path, prepared, local_ray, tiny):
    data, state = load_prepared(prepared), tmp_path / "state"
    first = run_classifier_sweep(
        load_params(tiny(tmp_path / "a.yaml", search={"num_samples": 3})), data, state_dir=state
    )
    before = trial_results(state)
    more = run_classifier_sweep(
        load_params(tiny(tmp_path / "b.yaml", search={"num_samples": 5})), data, state_dir=state
    )
    assert more.sweep_id == first.sweep_id
    after = trial_results(state)
    assert len(after) == 5 and all(after[name] == results for name, results in before.items())  # not run again
    assert [r["trial"] for r in more.trials] == [0, 1, 2, 3, 4] and more.trials[:3] == first.trials
    assert more.summary["trials"] == 5 and len(more.progress) == 5
    assert [t.number for t in study_trials(state)] == [0, 1, 2, 3, 4]  # one study: TPE kept its history


@pytest.mark.slow
def test_a_resumed_sweep_takes_the_concurrency_of_today_not_of_its_start(
    tmp_path, prepared_mnist, local_ray, tiny, caplog
):
    """Started one trial at a time, then extended with `max_concurrent_trials: 0` (fill the 2 CPUs): the new trials
    run two at a time. Tune alone would restore the limit of 1 it saved when the sweep started (a laptop's, say).
    Epochs of a few seconds, so that two trials at once show in the CPUs Ray has handed out."""
    caplog.set_level(logging.INFO, logger="grutune")  # the resume line is an INFO record
    data, state = load_prepared(prepared_mnist(n_train=12000, n_test=100, val_fraction=0.1)), tmp_path / "state"
    budget = {"train_subset": None, "max_concurrent_trials": 1}
    space = {"hidden_size": {"choice": [96, 128]}, "bidirectional": True}
    run_classifier_sweep(
        load_params(tiny(tmp_path / "a.yaml", search={"num_samples": 2, **budget}, space=space)), data, state_dir=state
    )
    with cpus_in_use(2) as used:
        more = run_classifier_sweep(
            load_params(
                tiny(tmp_path / "b.yaml", search={"num_samples": 4, **budget, "max_concurrent_trials": 0}, space=space)
            ),
            data,
            state_dir=state,
        )
    assert more.summary["trials"] == 4 and max(used) == 2
    assert "from 2 to 4 trials, 2 at a time (was 1)" in caplog.text


# --------------------------------------------------------------------------- cut state, budgets


@pytest.mark.ray
def test_a_cut_journal_resumes_a_real_sweep(tmp_path, prepared, local_ray, tiny, caplog):
    """Raising num_samples after the journal's last record was cut (what a kill or a full disk leaves): the journal
    is repaired, the sweep goes on to the new number, and the study holds exactly that many finished trials."""
    data, state = load_prepared(prepared), tmp_path / "state"
    run_classifier_sweep(load_params(tiny(tmp_path / "a.yaml", search={"num_samples": 2})), data, state_dir=state)
    (journal,) = state.glob("*/optuna.journal")
    text = journal.read_bytes()
    journal.write_bytes(text[: len(text) - 7])  # mid-way through the last record
    more = run_classifier_sweep(
        load_params(tiny(tmp_path / "b.yaml", search={"num_samples": 4})), data, state_dir=state
    )
    assert "its last record was cut" in caplog.text
    assert more.summary["trials"] == 4 and len(list(journal.parent.glob("optuna.journal.damaged-*"))) == 1
    trials = study_trials(state)
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)


@pytest.mark.ray
def test_a_tune_experiment_cut_off_while_written_is_set_aside_and_the_study_kept(
    tmp_path, prepared, local_ray, tiny, caplog
):
    """A kill while Tune writes an experiment's first state leaves a file Tune cannot read back. The experiment is
    moved aside and started again; the finished trials the study holds are handed on, not run again."""
    data, state = load_prepared(prepared), tmp_path / "state"
    first = run_classifier_sweep(
        load_params(tiny(tmp_path / "a.yaml", search={"num_samples": 3})), data, state_dir=state
    )
    (tuner_pkl,) = state.glob("*/tune-1/tuner.pkl")
    tuner_pkl.write_bytes(b"")
    before = trial_results(state, "*/tune-1/run_trial_*/result.json")
    again = run_classifier_sweep(
        load_params(tiny(tmp_path / "a.yaml", search={"num_samples": 3})), data, state_dir=state
    )
    assert "cannot be restored (EOFError" in caplog.text
    assert len(list(state.glob("*/tune-1.unreadable-*"))) == 1
    assert again.summary["trials"] == 3 and len(study_trials(state)) == 3
    assert sorted(r["best_val_accuracy"] for r in again.trials) == sorted(r["best_val_accuracy"] for r in first.trials)
    replayed = trial_results(state, "*/tune-1/run_trial_*/result.json")
    assert before and all("train_loss" not in r for rows in replayed.values() for r in rows)  # replays, no training


@pytest.mark.ray
def test_a_sweep_with_a_budget_in_hours_stops_within_one_trial_of_it_and_reports_its_cost(
    tmp_path, prepared, local_ray, tiny, caplog
):
    """search.budget.trial_hours ends the sweep before num_samples, within one trial's cost of the budget; every
    trial row carries its seconds and its price at price_per_hour, and the summary the sweep's total. The budget is
    half a trial-second: a few of these tiny trials on a fast machine, one on a slow one, and never all 30 (each
    trial is a Ray round trip of more than 1/60 s)."""
    budget_s = 0.5
    params = load_params(
        tiny(
            tmp_path / "p.yaml",
            search={
                "num_samples": 30,
                "max_concurrent_trials": 1,
                "budget": {"trial_hours": budget_s / 3600},
                "price_per_hour": {"cpu": 3.6},  # a dollar per 1,000 CPU-seconds
            },
        )
    )
    with caplog.at_level(logging.INFO, logger="grutune"):
        result = run_classifier_sweep(params, load_prepared(prepared), state_dir=tmp_path / "state")
    rows = result.trials
    spent = sum(r["train_s"] for r in rows)
    assert 1 <= len(rows) < 30 and budget_s - max(r["train_s"] for r in rows) <= spent  # it used its budget
    assert spent <= budget_s + max(r["train_s"] for r in rows)  # and stopped within one trial of it
    assert all(r["train_s"] > 0 and r["cpu_s"] == r["train_s"] and r["gpu_s"] == 0 for r in rows)
    assert all(r["cost_usd"] == pytest.approx(r["train_s"] / 1000, abs=1e-4) for r in rows)
    assert result.summary["trial_hours"] == pytest.approx(spent / 3600, abs=1e-4)
    assert result.summary["cost_usd"] == pytest.approx(spent / 1000, abs=0.01)
    assert "trial_hours pays for no further trial" in caplog.text


@pytest.mark.ray
def test_a_top_k_sweep_screens_every_trial_then_trains_the_best_to_the_end_within_its_budget(
    tmp_path, prepared, local_ray, tiny
):
    """search.scheduler top_k: the budget of 10 trial-epochs pays for 6 trials of 1 epoch and the best 2 of them on
    to epoch 3 (6 + 2 x 2 = 10; a 7th trial would need a 3rd to go on). The two that go on are the two best at
    epoch 1, trials wait at their screen without holding a slot (2 at once, 6 screened), and the others are
    PRUNED at epoch 1 in Optuna, as ASHA's stops are."""
    p = load_params(
        tiny(
            tmp_path / "params.yaml",
            search={
                "scheduler": "top_k",
                "num_samples": 20,
                "max_trial_epochs": 10,
                "max_epochs": 3,
                "grace_period": 1,
                "reduction_factor": 3,
                "max_concurrent_trials": 2,
            },
            space={"lr": {"loguniform": [1e-4, 3e-2]}},
        )
    )
    result = run_classifier_sweep(p, load_prepared(prepared), state_dir=tmp_path / "state")
    trials = study_trials(tmp_path / "state")
    state = optuna.trial.TrialState
    assert len(trials) == len(result.trials) == 6
    at_screen = {t.number: t.intermediate_values[1] for t in trials}
    on = {t.number for t in trials if t.state == state.COMPLETE}
    assert len(on) == 2 and min(at_screen[n] for n in on) >= max(v for n, v in at_screen.items() if n not in on), (
        at_screen,
        on,
    )
    for t in trials:
        assert sorted(t.intermediate_values) == ([1, 2, 3] if t.number in on else [1]), t
        assert t.state == (state.COMPLETE if t.number in on else state.PRUNED)
    assert result.summary["epochs_run"] == 10
    assert {r["status"] for r in result.trials} == {"completed", "pruned"}


@pytest.mark.ray
def test_a_top_k_sweep_asked_for_more_trials_screens_the_new_ones_in_an_experiment_of_their_own(
    tmp_path, prepared, local_ray, tiny
):
    data, state = load_prepared(prepared), tmp_path / "state"
    search = {"scheduler": "top_k", "max_epochs": 2, "grace_period": 1, "reduction_factor": 3}
    first = run_classifier_sweep(
        load_params(tiny(tmp_path / "a.yaml", search={**search, "num_samples": 3})), data, state_dir=state
    )
    more = run_classifier_sweep(
        load_params(tiny(tmp_path / "b.yaml", search={**search, "num_samples": 6})), data, state_dir=state
    )
    same = ("trial", "trial_id", "status", "epochs", "best_val_accuracy", *TINY_SPACE)  # not the timings
    assert more.sweep_id == first.sweep_id
    assert [{k: r[k] for k in same} for r in more.trials[:3]] == [{k: r[k] for k in same} for r in first.trials]
    trials = study_trials(state)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4, 5]
    for segment in (trials[:3], trials[3:]):  # one of each three goes on to epoch 2
        assert sorted(len(t.intermediate_values) for t in segment) == [1, 1, 2]
