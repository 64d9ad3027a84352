"""The search stage (pipeline/search.py) on a real small disk, as a user meets it: `search.storage` on a tmpfs that
fills after a few checkpoints, then space freed and the stage run again. Mounting a tmpfs needs root (CAP_SYS_ADMIN):
skipped, saying so, where it is not permitted. An end-to-end run: marked slow."""

import csv
import subprocess
from pathlib import Path

import optuna
import pytest

from sweeps import study_trials, tiny_writer
from test_search_stage import run_stage


@pytest.fixture(scope="session")
def tiny(write_params):
    return tiny_writer(write_params)


@pytest.fixture
def small_disk(tmp_path):
    """A real tmpfs of 700 KB: about half of what this tiny sweep writes (checkpoints, Tune's state, the journal)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_the_stage_stops_with_one_line_when_the_disk_fills_and_ends_with_every_trial_after_it_is_freed(
    tmp_path, prepared_mnist, small_disk, tiny
):
    storage = small_disk / "sweeps"
    tiny(
        tmp_path / "params.yaml",
        search={"storage": str(storage), "max_epochs": 3, "grace_period": 3, "max_failures": 2},
        space={"bidirectional": {"choice": [False, True]}, "cell": {"choice": ["gru", "rnn"]}},
    )
    prepared = prepared_mnist(n_train=600, n_test=100, val_fraction=0.2)

    first = run_stage(tmp_path, prepared)
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"error: search.storage: no room left in {storage}/mnist-"), last
    assert "No space left on device" in last and "then run `dvc repro` again" in last
    assert not [t for t in study_trials(storage) if t.state == optuna.trial.TrialState.FAIL]
    assert not (tmp_path / "out/trials.csv").exists()

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    second = run_stage(tmp_path, prepared)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "resuming sweep" in out, out[-3000:]
    rows = list(csv.DictReader(Path(tmp_path / "out/trials.csv").open()))
    assert len(rows) == 6 and {r["status"] for r in rows} <= {"completed", "pruned"}, [r["status"] for r in rows]
    trials = study_trials(storage)
    assert len(trials) == 6 and all(
        t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials
    )
    assert all(len(t.params) == 6 for t in trials), [t.params for t in trials]
