"""The search stage on tiny real runs: real Ray Tune, Optuna (journal storage) and ASHA, on generated data.

Covers the search space conversion, a sweep's identity, resume after SIGKILL, a changed space starting a new sweep,
and diverging / raising trials that leave the sweep complete and counted.
"""

import csv
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import ray
import torch
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune

from grutune.config import load_params
from grutune.data import load_prepared
from grutune.search import run_search, sweep_id
from grutune.sweep import tune_param_space
from grutune.trials import run_trial
from tune_results import cpus_in_use, peak_concurrency, trial_results

ROOT = Path(__file__).resolve().parents[1]
TINY_SEARCH = {
    "num_samples": 6,
    "startup_trials": 10,
    "max_epochs": 2,
    "grace_period": 2,
    "train_subset": 512,
    "max_concurrent_trials": 2,
    "max_failures": 1,
    "resources": {"cpu": 1, "gpu": 0},
}
TINY_SPACE = {
    "hidden_size": {"choice": [16, 24]},
    "num_layers": 1,
    "backbone": "none",
    "batch_size": 64,
    "bidirectional": False,
}


@pytest.fixture(scope="session")
def tiny(write_params):
    """tiny(path, search=None, space=None): params with the tiny search budget above, changed by `search`/`space`."""
    return lambda path, search=None, space=None: write_params(
        path, {"search": {**TINY_SEARCH, **(search or {}), "space": {**TINY_SPACE, **(space or {})}}}
    )


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


def study_trials(journal_dir: Path):
    (journal,) = journal_dir.glob("*/optuna.journal")
    study = optuna.load_study(study_name=None, storage=JournalStorage(JournalFileBackend(str(journal))))
    return study.get_trials(deepcopy=False)


# --------------------------------------------------------------------------- pure functions


def test_tune_param_space_converts_every_kind(tmp_path, tiny):
    p = load_params(
        tiny(
            tmp_path / "params.yaml",
            space={
                "hidden_size": {"int": [16, 32]},
                "lr": {"loguniform": [1e-4, 1e-2]},
                "dropout": {"uniform": [0.0, 0.5]},
                "cell": {"choice": ["gru", "lstm"]},
                "backbone": "conv",
            },
        )
    )
    space = tune_param_space(p.search.space)
    assert isinstance(space["hidden_size"], tune.search.sample.Integer)
    assert (space["hidden_size"].lower, space["hidden_size"].upper) == (16, 33)  # randint's high is exclusive
    assert isinstance(space["lr"].get_sampler(), tune.search.sample.LogUniform)
    assert (space["dropout"].lower, space["dropout"].upper) == (0.0, 0.5)
    assert space["cell"].categories == ["gru", "lstm"]
    assert space["backbone"] == "conv"


def test_sweep_identity(tmp_path, tiny):
    base = load_params(tiny(tmp_path / "a.yaml"))
    same = load_params(tiny(tmp_path / "b.yaml", search={"max_failures": 5}))  # retries: not identity
    other_space = load_params(tiny(tmp_path / "c.yaml", space={"hidden_size": {"choice": [16, 32]}}))
    other_budget = load_params(tiny(tmp_path / "d.yaml", search={"max_epochs": 3}))
    more_trials = load_params(tiny(tmp_path / "e.yaml", search={"num_samples": 7}))  # extends the same sweep
    more_money = load_params(  # so does a larger budget
        tiny(
            tmp_path / "f.yaml", search={"budget": {"dollars": 5}, "price_per_hour": {"gpu": 2}, "max_trial_epochs": 9}
        )
    )
    sid = sweep_id(base, "mnist", "sha256:aa")
    assert sid.startswith("mnist-") and sid == sweep_id(same, "mnist", "sha256:aa")
    assert sid == sweep_id(more_trials, "mnist", "sha256:aa") == sweep_id(more_money, "mnist", "sha256:aa")
    assert (
        len(
            {
                sid,
                sweep_id(other_space, "mnist", "sha256:aa"),
                sweep_id(other_budget, "mnist", "sha256:aa"),
                sweep_id(base, "mnist", "sha256:bb"),
            }
        )
        == 4
    )


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


def test_nan_and_raising_trials_leave_the_sweep_complete_and_counted(tmp_path, prepared, local_ray, tiny):
    first = [{"hidden_size": h} for h in (16, 17, 19)]  # each kind of trial at least once, whatever TPE draws
    p = load_params(
        tiny(
            tmp_path / "params.yaml",
            search={"num_samples": 8, "points_to_evaluate": first},
            space={"hidden_size": {"choice": [16, 17, 19]}},
        )
    )
    result = run_search(p, load_prepared(prepared), state_dir=tmp_path / "state", trainable_fn=flaky_trial)
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


def test_a_trial_that_never_reported_keeps_its_config_and_counts_as_errored(tmp_path, tiny):
    """A trial whose process died before it reported (its node was lost while the trial was being handed a process)
    has no config in Tune's Result: the row takes it from the experiment's trial configs, and counts it errored."""
    from ray.exceptions import RayActorError

    from grutune.search import classifier_sweep
    from grutune.sweep_results import trial_rows

    params = load_params(tiny(tmp_path / "params.yaml"))
    data = type("Data", (), {"name": "mnist", "content_hash": "sha256:aa"})()
    sweep = classifier_sweep(params, data)
    path = tmp_path / "run_trial_c4b7dfbe_5_batch_size=64"
    path.mkdir()
    lost = tune.Result(metrics={"trial_id": "c4b7dfbe"}, checkpoint=None, error=RayActorError(), path=str(path))
    assert lost.config is None
    config = {
        "cell": "lstm",
        "hidden_size": 16,
        "num_layers": 1,
        "backbone": "none",
        "bidirectional": False,
        "dropout": 0.28,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "batch_size": 64,
    }
    [row] = trial_rows([lost], sweep, {}, {"c4b7dfbe": config})
    assert row["status"] == "errored" and row["trial_id"] == "c4b7dfbe" and row["epochs"] == 0
    assert {k: row[k] for k in config} == config and math.isnan(row["best_val_accuracy"])


# --------------------------------------------------------------------------- resume and identity


def run_stage(cwd: Path, prepared: Path, **popen):
    cmd = [
        sys.executable,
        str(ROOT / "pipeline/search.py"),
        "mnist",
        str(prepared),
        "--best",
        "out/best.yaml",
        "--trials",
        "out/trials.csv",
        "--metrics",
        "metrics.json",
        "--progress",
        "progress.csv",
        "--progress-time",
        "progress_time.csv",
        "--pareto",
        "out/pareto.csv",
    ]
    # A Ray of the stage's own (RAY_ADDRESS=local), whatever else runs on the machine
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "RAY_ADDRESS": "local"}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finished_trials(text: str) -> set[str]:
    return set(re.findall(r"Trial run_trial_(\w+) completed after", text))


def started_trials(text: str) -> set[str]:
    return set(re.findall(r"Trial run_trial_(\w+) started with configuration", text))


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_the_sweep(tmp_path, prepared, tiny):
    path = tiny(
        tmp_path / "params.yaml",
        search={"max_epochs": 3, "grace_period": 3},
        space={"hidden_size": {"choice": [16, 24, 32]}},
    )
    raw = yaml.safe_load(path.read_text())
    raw["tracking"]["wandb"] = True  # offline here: one W&B run per trial, whatever the kill did
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = run_stage(tmp_path, prepared)
    out, deadline = "", time.time() + 300
    for line in proc.stdout:  # kill the driver once two trials have finished
        out += line
        if len(finished_trials(out)) >= 2 or time.time() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_done = finished_trials(out)
    assert len(first_done) >= 2 and not (tmp_path / "out/best.yaml").exists()

    second = run_stage(tmp_path, prepared)
    out2, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out2[-3000:]
    assert "resuming sweep" in out2
    # Finished trials are not trained again: no epoch of theirs is reported twice.
    # (A trial launched just before the kill, which Tune's last snapshot missed, leaves a directory with no
    # result.json: Tune relaunches its Optuna trial under a new id. It trained nothing, so it has nothing to check.)
    for trial_dir in (tmp_path / ".grutune/sweeps").glob("mnist-*/tune-*/run_trial_*/result.json"):
        trial_dir = trial_dir.parent
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        epochs = [r["epoch"] for r in results]
        trained = [r["epoch"] for r in results if "train_loss" in r]  # a replay re-reports, it trains nothing
        assert len(trained) == len(set(trained)), f"{trial_dir.name} retrained epochs {trained}"
        if any(t in trial_dir.name for t in first_done):  # a replayed trial re-reports its last epoch only
            assert epochs == sorted(epochs) and set(epochs) <= {1, 2, 3}
    assert (tmp_path / "out/best.yaml").exists()
    rows = list(csv.DictReader((tmp_path / "out/trials.csv").open()))
    assert len(rows) == 6
    assert all(r["status"] == "completed" and r["epochs"] == "3" for r in rows if r["trial_id"] in first_done), (
        first_done,
        [(r["trial_id"], r["status"], r["epochs"], r["error"] and Path(r["error"]).read_text()[:1500]) for r in rows],
        [(t.user_attrs, t.state, t.intermediate_values) for t in study_trials(tmp_path / ".grutune/sweeps")],
    )
    trials = study_trials(tmp_path / ".grutune/sweeps")
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials), [
        (t.number, t.state.name, t.user_attrs, sorted(t.intermediate_values)) for t in trials
    ]
    configs = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(configs)) == len(configs), "a restored sampler must not draw the same config again"
    # W&B: a trial resumed after the kill reopened its own run (a stable id), so each trial has exactly one run id;
    # the summary of val_accuracy is its best value.
    from grutune.tracking import trial_run_id
    from wandb_records import read_run

    runs = [read_run(f) for f in tmp_path.glob("wandb/offline-run-*/run-*.wandb")]
    runs = [r for r in runs if r.get("job_type") == "trial"]
    ids: dict[str, set] = {}
    for r in runs:
        ids.setdefault(r["name"], set()).add(r["id"])
    assert ids and all(
        v == {trial_run_id(r["group"], name)} for name, v in ids.items() for r in runs if r["name"] == name
    )
    assert len(ids) >= len(rows) - 2  # (what a killed W&B process had not written yet is lost: offline mode)
    assert all(r["summaries"].get("val_accuracy") == ["max"] for r in runs)


@pytest.mark.slow
def test_a_changed_space_starts_a_new_sweep_and_a_finished_one_does_nothing(tmp_path, prepared, tiny):
    tiny(tmp_path / "params.yaml", search={"num_samples": 2})
    first, _ = run_stage(tmp_path, prepared).communicate(timeout=600)
    (sweep,) = (tmp_path / ".grutune/sweeps").glob("mnist-*")
    trials_csv = (tmp_path / "out/trials.csv").read_text()

    again, _ = run_stage(tmp_path, prepared).communicate(timeout=600)
    assert "resuming sweep" in again and not started_trials(again)
    assert (tmp_path / "out/trials.csv").read_text() == trials_csv

    tiny(tmp_path / "params.yaml", search={"num_samples": 2}, space={"hidden_size": {"choice": [20, 28]}})
    changed, _ = run_stage(tmp_path, prepared).communicate(timeout=600)
    assert "resuming sweep" not in changed and len(started_trials(changed)) == 2
    sweeps = sorted(p.name for p in (tmp_path / ".grutune/sweeps").iterdir() if p.is_dir())
    assert len(sweeps) == 2 and sweep.name in sweeps
    best = yaml.safe_load((tmp_path / "out/best.yaml").read_text())
    assert best["config"]["hidden_size"] in (20, 28) and best["sweep_id"] != sweep.name


# --------------------------------------------------------------------------- GAN sweep


def test_gan_trials_that_collapse_are_stopped_and_counted_not_picked(tmp_path, prepared, local_ray, write_params):
    """With a diversity threshold no generator can meet, every GAN trial is stopped after its first epoch."""
    from grutune.errors import GrutuneError
    from grutune.models import RecurrentClassifier
    from grutune.search import run_gan_search

    p = load_params(
        write_params(
            tmp_path / "params.yaml",
            {
                "gan_search": {
                    "num_samples": 2,
                    "max_epochs": 3,
                    "grace_period": 3,
                    "train_subset": 128,
                    "eval_samples": 64,
                    "min_diversity": 10.0,
                    "max_failures": 0,
                    "resources": {"cpu": 1, "gpu": 0},
                    "space": {"hidden_size": 16, "num_layers": 1, "backbone": "none"},
                },
                "gan": {"batch_size": 32, "noise_dim": 8},
            },
        )
    )
    data = load_prepared(prepared)
    clf = RecurrentClassifier(
        in_shape=(28, 28, 1),
        num_classes=10,
        cell="gru",
        hidden_size=8,
        num_layers=1,
        bidirectional=False,
        dropout=0.0,
        backbone="none",
    )
    ckpt = {"model": clf.state_dict(), "model_kwargs": clf.kwargs}
    with pytest.raises(GrutuneError, match="no trial of sweep gan-mnist-.* succeeded"):
        run_gan_search(p, data, ckpt, "sha256:test", state_dir=tmp_path / "state")
    trials = study_trials(tmp_path / "state")
    # Collapsed: PRUNED at the worst FID at the epoch it collapsed, so TPE learns the region is bad (FAIL would hide it)
    assert len(trials) == 2 and all(
        t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["diverged"] and t.intermediate_values == {1: 1e12}
        for t in trials
    )
    result_files = list((tmp_path / "state").glob("gan-mnist-*/tune-*/run_gan_trial_*/result.json"))
    assert len(result_files) == 2
    for result_file in result_files:
        (last,) = [json.loads(line) for line in result_file.read_text().splitlines()]
        assert last["diverged"] == 1 and "collapsed" in last["error"] and last["epoch"] == 1


def test_the_gan_sweep_searches_over_generator_kinds(tmp_path, prepared, local_ray, write_params):
    """Trials draw the generator kind from the space, and each trial trains the kind it drew."""
    from grutune.gan_models import GENERATOR_NAMES
    from grutune.models import RecurrentClassifier
    from grutune.search import run_gan_search

    p = load_params(
        write_params(
            tmp_path / "params.yaml",
            {
                "gan_search": {
                    "num_samples": 6,
                    "startup_trials": 6,
                    "max_epochs": 1,
                    "grace_period": 1,
                    "train_subset": 64,
                    "eval_samples": 32,
                    "min_diversity": 0.0,
                    "max_concurrent_trials": 2,
                    "resources": {"cpu": 1, "gpu": 0},
                    "space": {
                        "generator": {"choice": list(GENERATOR_NAMES)},
                        "hidden_size": 16,
                        "num_layers": 1,
                        "backbone": "none",
                    },
                },
                "gan": {"batch_size": 32, "noise_dim": 8},
            },
        )
    )
    clf = RecurrentClassifier(
        in_shape=(28, 28, 1),
        num_classes=10,
        cell="gru",
        hidden_size=8,
        num_layers=1,
        bidirectional=False,
        dropout=0.0,
        backbone="none",
    )
    result = run_gan_search(
        p,
        load_prepared(prepared),
        {"model": clf.state_dict(), "model_kwargs": clf.kwargs},
        "sha256:test",
        state_dir=tmp_path / "state",
    )
    kinds = [r["generator"] for r in result.trials]
    assert len(kinds) == 6 and len(set(kinds)) >= 2 and set(kinds) <= set(GENERATOR_NAMES)
    assert result.best["config"]["generator"] in kinds
    for ckpt in (tmp_path / "state").glob("gan-mnist-*/tune-*/run_gan_trial_*/checkpoint_*/checkpoint.pt"):
        state = torch.load(ckpt, weights_only=True)
        assert state["generator_kwargs"]["kind"] == state["config"]["generator"]
        assert "generator_ema" in state  # params.yaml's recipe samples from an EMA of G


# --------------------------------------------------------------------------- what Optuna sees, extending, packing


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
    result = run_search(p, load_prepared(prepared), state_dir=tmp_path / "state", trainable_fn=flaky_trial)
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


def test_a_multi_objective_sweep_stores_every_objective_and_picks_from_its_front(tmp_path, prepared, local_ray, tiny):
    """objectives [val_accuracy, params]: Optuna holds both values of each completed trial (the params of the model
    the trial really built), ASHA's stopped trials are PRUNED with their epochs' accuracy kept, the front is the
    non-dominated completed trials, and best.yaml is the point the pick rule names."""
    from grutune.config import TrialConfig
    from grutune.metrics import dominates
    from grutune.training import new_classifier

    p = load_params(
        tiny(
            tmp_path / "params.yaml",
            search={
                "num_samples": 8,
                "max_epochs": 2,
                "grace_period": 1,
                "reduction_factor": 2,
                "objectives": ["val_accuracy", "params"],
                "pick": "smallest",
                "pick_within": 0.1,
            },
            space={"hidden_size": {"choice": [8, 16, 32, 64]}},
        )
    )
    data = load_prepared(prepared)
    result = run_search(p, data, state_dir=tmp_path / "state")
    (journal,) = (tmp_path / "state").glob("*/optuna.journal")
    study = optuna.load_study(study_name=None, storage=JournalStorage(JournalFileBackend(str(journal))))
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    by_number = {t.number: t for t in study.trials}
    state = optuna.trial.TrialState
    assert {r["status"] for r in result.trials} == {"completed", "pruned"}
    for row in result.trials:
        t = by_number[row["trial"]]
        hp = TrialConfig(**{k: row[k] for k in TrialConfig.model_fields})
        model, _ = new_classifier(hp, in_shape=data.image_shape, num_classes=10, device=torch.device("cpu"))
        assert row["params"] == sum(q.numel() for q in model.parameters()) and row["latency_ms"] > 0
        steps = {int(k.removeprefix("value@epoch")): v for k, v in t.user_attrs.items() if k.startswith("value@")}
        assert sorted(steps) == list(range(1, row["epochs"] + 1)) and max(steps.values()) == row["best_val_accuracy"]
        if row["status"] == "completed":
            assert t.state == state.COMPLETE and t.values == [steps[2], row["params"]]
        else:
            assert t.state == state.PRUNED and t.values is None
    completed = [r for r in result.trials if r["status"] == "completed"]
    point = lambda r: (r["best_val_accuracy"], r["params"])  # noqa: E731
    front_ids = {r["trial_id"] for r in result.front}
    for r in completed:  # the front is exactly the completed trials no other completed trial dominates
        beaten = any(dominates(point(q), point(r), (1, -1)) for q in completed)
        assert (r["trial_id"] in front_ids) == (not beaten), r
    (picked,) = [r for r in result.front if r["picked"]]
    top = max(r["best_val_accuracy"] for r in result.front)
    near = [r for r in result.front if r["best_val_accuracy"] >= top - 0.1]
    assert picked["params"] == min(r["params"] for r in near)
    assert result.best["trial_id"] == picked["trial_id"] and result.best["params"] == picked["params"]
    assert result.best["pick"] == "smallest" and "params" in result.best["reason"]
    assert result.summary["pareto_points"] == len(result.front)


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


def test_raising_num_samples_runs_exactly_the_missing_trials(tmp_path, prepared, local_ray, tiny):
    data, state = load_prepared(prepared), tmp_path / "state"
    first = run_search(load_params(tiny(tmp_path / "a.yaml", search={"num_samples": 3})), data, state_dir=state)
    before = trial_results(state)
    more = run_search(load_params(tiny(tmp_path / "b.yaml", search={"num_samples": 5})), data, state_dir=state)
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
    run_search(
        load_params(tiny(tmp_path / "a.yaml", search={"num_samples": 2, **budget}, space=space)), data, state_dir=state
    )
    with cpus_in_use(2) as used:
        more = run_search(
            load_params(
                tiny(tmp_path / "b.yaml", search={"num_samples": 4, **budget, "max_concurrent_trials": 0}, space=space)
            ),
            data,
            state_dir=state,
        )
    assert more.summary["trials"] == 4 and max(used) == 2
    assert "from 2 to 4 trials, 2 at a time (was 1)" in caplog.text


@pytest.mark.slow
def test_the_default_resources_run_one_trial_per_core(tmp_path, prepared_mnist, tiny):
    """With params.yaml's resources, a machine's cores each train a trial at once (epochs of a few seconds, so
    that Tune's whole-second timestamps can show it)."""
    default = yaml.safe_load((ROOT / "params.yaml").read_text())["search"]["resources"]
    tiny(
        tmp_path / "params.yaml",
        search={
            "num_samples": 4,
            "max_epochs": 2,
            "grace_period": 2,
            "train_subset": None,
            "max_concurrent_trials": 0,
            "resources": default,
        },
        space={"hidden_size": {"choice": [96, 128]}, "bidirectional": True},
    )
    out, _ = run_stage(tmp_path, prepared_mnist(n_train=12000, n_test=100, val_fraction=0.1)).communicate(timeout=600)
    assert "best of 4 trials" in out, out[-3000:]
    assert peak_concurrency(trial_results(tmp_path / ".grutune/sweeps")) >= min(os.cpu_count(), 4)


def searcher_at(
    tmp_path,
    *,
    target=10,
    max_concurrent=4,
    segment="tune-1",
    max_epochs=2,
    known=(),
    max_trial_epochs=None,
    min_trial_epochs=1,
    points=(),
    max_trial_seconds=None,
):
    """grutune's searcher over the journal s.journal, bound as the sweep driver binds it (outside Tune)."""
    from grutune.recovery import GrutuneSearcher, SweepRun, bind

    bind(
        "s",
        SweepRun(
            journal=tmp_path / "s.journal",
            target=target,
            max_concurrent=max_concurrent,
            segment=segment,
            known=frozenset(known),
            max_trial_epochs=max_trial_epochs,
            min_trial_epochs=min_trial_epochs,
            max_trial_seconds=max_trial_seconds,
        ),
    )
    return GrutuneSearcher(
        study_name="s",
        space={"lr": ("loguniform", [1e-4, 1e-2]), "cell": ("choice", ["gru", "rnn"])},
        seed=0,
        metric="val_accuracy",
        mode="max",
        max_epochs=max_epochs,
        startup_trials=2,
        points_to_evaluate=points,
    )


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


def journal_study(tmp_path):
    return optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "s.journal"))))


def journal_trials(tmp_path):
    return optuna.load_study(
        study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "s.journal")))
    ).get_trials(deepcopy=False)


def test_a_trial_created_and_finished_after_the_snapshot_is_handed_on_not_run_again(tmp_path):
    """Tune's snapshot predates a trial that then ran to the end. On restore, Tune re-creates a trial in its place:
    that trial gets the finished one's config and replays its result, and the study keeps one trial, not two."""
    from grutune.recovery import finished_result, journal_progress

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
    assert progress["new"] == (2, 0.6, 0, True, {}) and "old" not in progress


def test_a_sweep_restored_twice_keeps_the_trials_finished_before_the_first_restore(tmp_path):
    """Restored again (a sweep interrupted twice, or extended after a resume), trials finished before the first
    restore are still Tune's own: new Tune trials get new configs, and nothing is aliased."""
    from grutune.recovery import ALIAS

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
    study = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "s.journal"))))
    assert len(study.trials) == 3 and not [k for k in study.user_attrs if k.startswith(ALIAS)]
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED", "COMPLETE"] and study.trials[2].value == 0.7


def test_the_searcher_stops_at_the_bound_target_and_concurrency_and_its_state_names_no_path(tmp_path):
    """It hands out at most max_concurrent trials at once and FINISHED once the study holds `target` trials; its
    saved state and its pickle (what Tune keeps) name no path; a trial asked for before a kill is handed out again."""
    import pickle

    from ray.tune.search import Searcher

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


def test_a_newer_state_file_is_refused_by_name(tmp_path):
    from grutune.errors import GrutuneError

    s = searcher_at(tmp_path)
    (tmp_path / "state.json").write_text(
        json.dumps({"format": "grutune-searcher", "version": 99, "live": {}, "done": []})
    )
    with pytest.raises(GrutuneError, match=r"state.json: searcher state version 99"):
        s.restore(str(tmp_path / "state.json"))


# --------------------------------------------------------------------------- a sweep's folder is its own


def finish_all(searcher, epochs=2) -> int:
    """Drive a bound searcher as Tune would, one trial at a time, until it says FINISHED; return trials run."""
    from ray.tune.search import Searcher

    n = 0
    while (config := searcher.suggest(f"t{n}")) != Searcher.FINISHED:
        assert config is not None
        searcher.on_trial_result(f"t{n}", {"epoch": 1, "val_accuracy": 0.1 * n})
        searcher.on_trial_complete(f"t{n}", {"epoch": epochs, "val_accuracy": 0.1 * n})
        n += 1
    return n


def test_a_journal_cut_anywhere_in_its_last_record_is_repaired_and_resumes_to_num_samples(tmp_path):
    """Every byte offset of the last record: the journal is cut back to its last whole record (the original kept
    beside it), Optuna reads it, and a searcher on it ends with exactly num_samples finished trials."""
    from ray.tune.search import Searcher

    from grutune.recovery import repair_journal

    (tmp_path / "whole").mkdir()
    whole = searcher_at(tmp_path / "whole", target=3)
    for n in range(3):  # three trials, as Tune drives them; the journal's last record is the third one's end
        whole.suggest(f"t{n}")
        whole.on_trial_result(f"t{n}", {"epoch": 1, "val_accuracy": 0.1 * n})
        whole.on_trial_complete(f"t{n}", {"epoch": 2, "val_accuracy": 0.1 * n})
    whole.save(str(tmp_path / "finished.json"))  # Tune's snapshot when the sweep ended
    data = (tmp_path / "whole/s.journal").read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1  # the last record: the last trial's tell (COMPLETE)
    assert data.endswith(b"\n") and len(data) - start > 20
    for cut in range(start + 1, len(data)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / "s.journal").write_bytes(data[:cut])
        backup = repair_journal(d / "s.journal")
        assert backup is not None and backup.read_bytes() == data[:cut], cut
        assert (d / "s.journal").read_bytes() == data[:start], cut
        trials = journal_trials(d)
        assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "RUNNING"], cut
        # Tune's snapshot says the cut trial finished: restored, the searcher tells Optuna again what the journal
        # holds of it, and asks for nothing more.
        restored = searcher_at(d, target=3)
        restored.restore(str(tmp_path / "finished.json"))
        assert restored.suggest("t3") == Searcher.FINISHED
        assert [(t.state.name, t.value) for t in journal_trials(d)] == [
            (t.state.name, t.value) for t in journal_trials(tmp_path / "whole")
        ], cut
        # A trial Tune never recorded as finished (a new experiment on the study) is handed out again, and no more.
        (d / "s.journal").write_bytes(data[:start])
        assert finish_all(searcher_at(d, target=3, segment="tune-2", known={"t0", "t1", "t2"})) == 1
        assert [t.state.name for t in journal_trials(d)] == ["COMPLETE"] * 3, cut
    assert repair_journal(tmp_path / "whole/s.journal") is None  # a whole journal is left alone


def test_a_journal_damaged_before_its_last_record_stops_with_one_line(tmp_path):
    from grutune.errors import GrutuneError
    from grutune.recovery import repair_journal

    (tmp_path / "whole").mkdir()
    finish_all(searcher_at(tmp_path / "whole", target=2))
    lines = (tmp_path / "whole/s.journal").read_bytes().split(b"\n")
    lines[1] = lines[1][:5]
    (tmp_path / "s.journal").write_bytes(b"\n".join(lines))
    with pytest.raises(GrutuneError, match=r"s.journal: record 2 of \d+ is damaged.*restore the file from a backup"):
        repair_journal(tmp_path / "s.journal")


def test_storage_under_a_file_is_refused_naming_the_key(tmp_path, tiny, monkeypatch):
    from grutune.errors import ConfigError

    (tmp_path / "README.md").write_text("a file")
    monkeypatch.chdir(tmp_path)
    for storage in ("README.md/sweeps", "README.md"):
        with pytest.raises(
            ConfigError,
            match=rf"search.storage: .*{storage} cannot hold sweeps: .*README.md is a "
            r"file, not a directory",
        ):
            load_params(tiny(tmp_path / "params.yaml", search={"storage": storage}))
    assert load_params(tiny(tmp_path / "params.yaml", search={"storage": "sweeps/here"})).search.storage


def test_a_cut_journal_resumes_a_real_sweep(tmp_path, prepared, local_ray, tiny, caplog):
    """Raising num_samples after the journal's last record was cut (what a kill or a full disk leaves): the journal
    is repaired, the sweep goes on to the new number, and the study holds exactly that many finished trials."""
    data, state = load_prepared(prepared), tmp_path / "state"
    run_search(load_params(tiny(tmp_path / "a.yaml", search={"num_samples": 2})), data, state_dir=state)
    (journal,) = state.glob("*/optuna.journal")
    text = journal.read_bytes()
    journal.write_bytes(text[: len(text) - 7])  # mid-way through the last record
    more = run_search(load_params(tiny(tmp_path / "b.yaml", search={"num_samples": 4})), data, state_dir=state)
    assert "its last record was cut" in caplog.text
    assert more.summary["trials"] == 4 and len(list(journal.parent.glob("optuna.journal.damaged-*"))) == 1
    trials = study_trials(state)
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)


@pytest.mark.slow
def test_a_copied_project_extends_its_own_sweep_and_never_the_originals(tmp_path, prepared, tiny):
    """After a finished sweep the project is copied to another path and num_samples raised there: the copy's study
    gets the new trials, the original's is untouched (its saved state names no path of the original)."""
    import shutil

    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    tiny(original / "params.yaml", search={"num_samples": 3})
    out, _ = run_stage(original, prepared).communicate(timeout=600)
    assert "best of 3 trials" in out, out[-3000:]
    shutil.copytree(original, copy)
    (journal,) = (original / ".grutune/sweeps").glob("*/optuna.journal")
    before = journal.read_bytes()
    ours = [*journal.parent.glob("*.json*"), journal, *journal.parent.glob("tune-*/searcher-state-*")]
    assert len(ours) >= 3 and not [p for p in ours if str(original).encode() in p.read_bytes()]
    tiny(copy / "params.yaml", search={"num_samples": 5})
    out, _ = run_stage(copy, prepared).communicate(timeout=600)
    assert "best of 5 trials" in out and "from 3 to 5 trials" in out, out[-3000:]
    assert journal.read_bytes() == before and len(study_trials(original / ".grutune/sweeps")) == 3
    trials = study_trials(copy / ".grutune/sweeps")
    assert len(trials) == 5 and all(t.state.is_finished() for t in trials)
    rows = list(csv.DictReader((copy / "out/trials.csv").open()))
    assert len(rows) == 5 and not list((original / "out").glob("*.tmp"))


def test_an_experiment_restored_elsewhere_creates_no_trials(tmp_path):
    """Tune gives trials it creates after a restore the experiment's original path, so an experiment restored
    after its sweep moved says FINISHED at once: its restored trials run on, and the sweep's next experiment, at
    the new place, creates the rest."""
    from ray.tune.search import Searcher

    from grutune.recovery import GrutuneSearcher, SweepRun, bind, location

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


def test_a_tune_experiment_cut_off_while_written_is_set_aside_and_the_study_kept(
    tmp_path, prepared, local_ray, tiny, caplog
):
    """A kill while Tune writes an experiment's first state leaves a file Tune cannot read back. The experiment is
    moved aside and started again; the finished trials the study holds are handed on, not run again."""
    data, state = load_prepared(prepared), tmp_path / "state"
    first = run_search(load_params(tiny(tmp_path / "a.yaml", search={"num_samples": 3})), data, state_dir=state)
    (tuner_pkl,) = state.glob("*/tune-1/tuner.pkl")
    tuner_pkl.write_bytes(b"")
    before = trial_results(state, "*/tune-1/run_trial_*/result.json")
    again = run_search(load_params(tiny(tmp_path / "a.yaml", search={"num_samples": 3})), data, state_dir=state)
    assert "cannot be restored (EOFError" in caplog.text
    assert len(list(state.glob("*/tune-1.unreadable-*"))) == 1
    assert again.summary["trials"] == 3 and len(study_trials(state)) == 3
    assert sorted(r["best_val_accuracy"] for r in again.trials) == sorted(r["best_val_accuracy"] for r in first.trials)
    replayed = trial_results(state, "*/tune-1/run_trial_*/result.json")
    assert before and all("train_loss" not in r for rows in replayed.values() for r in rows)  # replays, no training


def test_a_budget_of_trial_epochs_ends_the_sweep_before_num_samples(tmp_path):
    """max_trial_epochs: the searcher creates a trial only while the epochs run so far and the new trial's first
    (ASHA's grace period) fit in the budget, whatever num_samples says; each trial below runs 2 epochs."""
    assert finish_all(searcher_at(tmp_path, target=100, max_trial_epochs=7)) == 4  # 2+2+2+1 fit; 2+2+2+2+1 do not
    assert len(journal_trials(tmp_path)) == 4
    (tmp_path / "g").mkdir()
    assert finish_all(searcher_at(tmp_path / "g", target=100, max_trial_epochs=7, min_trial_epochs=2)) == 3


def test_a_budget_keeps_room_for_running_trials_to_finish(tmp_path):
    """With trials in flight, a new trial must fit beside every running trial run to the end (ASHA may promote
    them all), so the end of the budget goes to promoted trials, not to new ones cut off at once. While a running
    trial may still free budget, the searcher waits; it says FINISHED only when none can."""
    from ray.tune.search import Searcher

    s = searcher_at(tmp_path, target=100, max_concurrent=10, max_epochs=3, max_trial_epochs=8, min_trial_epochs=1)
    assert all(isinstance(s.suggest(t), dict) for t in "abc")  # 3 + 3, and c's first epoch: 7 <= 8
    assert s.suggest("d") is None  # 3 + 3 + 3 + 1 > 8, though nothing has run yet
    s.on_trial_result("a", {"epoch": 1, "val_accuracy": 0.5})
    s.on_trial_complete("a", {"epoch": 1, "val_accuracy": 0.5})  # ASHA stopped a at its first rung: 1 + 3 + 3 + 1
    assert isinstance(s.suggest("d"), dict)
    assert s.suggest("e") is None
    for t in "bcd":
        s.on_trial_complete(t, {"epoch": 3, "val_accuracy": 0.6})
    assert s.suggest("e") == Searcher.FINISHED  # 1 + 3 + 3 + 3 = 10: nothing running, and no room
    assert len(journal_trials(tmp_path)) == 4


def test_a_budget_of_trial_seconds_charges_each_epoch_at_the_pace_measured(tmp_path):
    """A time budget (search.budget, as trial-seconds): a new trial must fit beside every running trial run to the
    end at its own measured pace, plus the new trial's first epochs at the sweep's pace. Before anything is measured
    nothing can be charged; after that the searcher waits while a running trial may free budget, and says FINISHED
    when none runs."""
    from ray.tune.search import Searcher

    s = searcher_at(tmp_path, target=100, max_concurrent=10, max_epochs=2, max_trial_seconds=25)
    assert isinstance(s.suggest("a"), dict) and isinstance(s.suggest("b"), dict)  # nothing measured yet
    s.on_trial_result("a", {"epoch": 1, "val_accuracy": 0.5, "time_total_s": 5.0})
    assert isinstance(s.suggest("c"), dict)  # a: 5 + 1 more epoch at 5; b: 2 epochs at 5; c's first: 5 -> 25
    assert s.suggest("d") is None  # + c's 2 epochs at 5 = 35 > 25: wait, a running trial may stop early
    s.on_trial_complete("a", {"epoch": 1, "val_accuracy": 0.5, "time_total_s": 5.0})  # ASHA stopped a: 5 + 10 + 10 + 5
    assert s.suggest("d") is None
    for t in "bc":
        s.on_trial_result(t, {"epoch": 1, "val_accuracy": 0.6, "time_total_s": 2.0})
        s.on_trial_complete(t, {"epoch": 2, "val_accuracy": 0.6, "time_total_s": 4.0})
    assert isinstance(s.suggest("d"), dict)  # 5 + 4 + 4 spent, pace 13/5 a epoch: 13 + 2.6 <= 25
    s.on_trial_complete("d", {"epoch": 2, "val_accuracy": 0.7, "time_total_s": 12.0})
    assert s.suggest("e") == Searcher.FINISHED  # 25 spent, nothing running: no room
    assert [t.user_attrs.get("seconds") for t in journal_trials(tmp_path)] == [5.0, 4.0, 4.0, 12.0]


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
        result = run_search(params, load_prepared(prepared), state_dir=tmp_path / "state")
    rows = result.trials
    spent = sum(r["train_s"] for r in rows)
    assert 1 <= len(rows) < 30 and budget_s - max(r["train_s"] for r in rows) <= spent  # it used its budget
    assert spent <= budget_s + max(r["train_s"] for r in rows)  # and stopped within one trial of it
    assert all(r["train_s"] > 0 and r["cpu_s"] == r["train_s"] and r["gpu_s"] == 0 for r in rows)
    assert all(r["cost_usd"] == pytest.approx(r["train_s"] / 1000, abs=1e-4) for r in rows)
    assert result.summary["trial_hours"] == pytest.approx(spent / 3600, abs=1e-4)
    assert result.summary["cost_usd"] == pytest.approx(spent / 1000, abs=0.01)
    assert "trial_hours pays for no further trial" in caplog.text


def test_a_sweep_saved_by_the_earlier_layout_is_refused_with_what_to_do(tmp_path, prepared, tiny):
    from grutune.errors import GrutuneError

    params = load_params(tiny(tmp_path / "params.yaml"))
    data = load_prepared(prepared)
    sid = sweep_id(params, data.name, data.content_hash)
    (tmp_path / "state" / sid).mkdir(parents=True)
    (tmp_path / "state" / f"{sid}.optuna.journal").write_text("")
    with pytest.raises(GrutuneError, match=rf"sweep {sid} .* was saved by an earlier grutune.*move .* away"):
        run_search(params, data, state_dir=tmp_path / "state")
