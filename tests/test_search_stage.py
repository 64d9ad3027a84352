"""The search stage (pipeline/search.py) run as DVC runs it, in a process of its own with a Ray of its own: resume
after SIGKILL, a changed space starting a new sweep, a finished sweep doing nothing, a copied project extending its
own sweep, and the default resources filling the machine's cores. End-to-end runs: marked slow.
"""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweeps import study_trials, tiny_writer
from tune_results import peak_concurrency, trial_results

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny(write_params):
    return tiny_writer(write_params)


@pytest.fixture(scope="module")
def prepared(prepared_mnist) -> Path:
    return prepared_mnist(n_train=600, n_test=100, val_fraction=0.2)


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
        "--details",
        "details.json",
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
def test_a_top_k_sweep_killed_during_its_screen_resumes_and_trains_the_best_of_the_screen_to_the_end(
    tmp_path, prepared, tiny
):
    """Killed while trials wait at their screen; resumed, the screen is decided from the journal's readings: the two
    best at epoch 1 of all six go on to epoch 3, every other trial is PRUNED, no trial is lost or added."""
    tiny(
        tmp_path / "params.yaml",
        search={"scheduler": "top_k", "max_epochs": 3, "grace_period": 1, "reduction_factor": 3},
        space={"lr": {"loguniform": [1e-4, 3e-2]}},
    )
    proc = run_stage(tmp_path, prepared)
    sweeps, deadline = tmp_path / ".grutune/sweeps", time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill it once three trials wait at their screen
        journals = list(sweeps.glob("*/optuna.journal"))
        if journals and sum(1 in t.intermediate_values for t in study_trials(sweeps)) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    assert not (tmp_path / "out/best.yaml").exists(), out[-2000:]

    second = run_stage(tmp_path, prepared)
    out2, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out2[-3000:]
    assert "resuming sweep" in out2 and "Traceback" not in out2
    trials = study_trials(sweeps)
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    at_screen = {t.number: t.intermediate_values[1] for t in trials}
    complete = {t.number for t in trials if t.state.name == "COMPLETE"}
    seen = [(t.number, t.state.name, t.intermediate_values) for t in trials]
    assert len(complete) == 2, seen
    assert min(at_screen[n] for n in complete) >= max(v for n, v in at_screen.items() if n not in complete), seen
    assert all(sorted(t.intermediate_values) == [1, 2, 3] for t in trials if t.number in complete)
    # a trial that waited at its screen when the sweep was killed trains one epoch more after the restart
    assert all(t.state.name == "PRUNED" and max(t.intermediate_values) <= 2 for t in trials if t.number not in complete)
    rows = list(csv.DictReader((tmp_path / "out/trials.csv").open()))
    assert sorted(r["status"] for r in rows) == ["completed"] * 2 + ["pruned"] * 4


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
