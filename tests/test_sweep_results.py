"""A finished sweep's rows (grutune.sweep.results), from Tune's results and what the journal knows of each trial."""

import math

import pytest
from ray import tune

from grutune.config import load_params
from grutune.sweep.results import trial_rows
from grutune.trials.classifier import classifier_sweep
from sweeps import tiny_writer


@pytest.fixture(scope="session")
def tiny(write_params):
    return tiny_writer(write_params)


def test_a_trial_that_never_reported_keeps_its_config_and_counts_as_errored(tmp_path, tiny):
    """A trial whose process died before it reported (its node was lost while the trial was being handed a process)
    has no config in Tune's Result: the row takes it from the experiment's trial configs, and counts it errored."""
    from ray.exceptions import RayActorError

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


def test_a_trial_without_a_result_file_takes_its_epochs_and_seconds_from_the_journal(tmp_path, tiny):
    """A trial that Tune stopped while it waited at its top_k screen may have no result file yet when the rows are
    read: its epochs, best value and training seconds come from the journal, not 0."""
    params = load_params(tiny(tmp_path / "params.yaml", search={"max_epochs": 3}))
    data = type("Data", (), {"name": "mnist", "content_hash": "sha256:aa"})()
    sweep = classifier_sweep(params, data)
    path = tmp_path / "run_trial_5e1f00aa_2_batch_size=64"
    path.mkdir()
    waited = tune.Result(metrics={"trial_id": "5e1f00aa"}, checkpoint=None, error=None, path=str(path))
    journal = {"5e1f00aa": (1, 0.71, 2, True, {"params": 1234.0}, 12.5)}
    [row] = trial_rows([waited], sweep, journal, {"5e1f00aa": {"lr": 1e-3}}, {"cpu": 2.0})
    assert (row["trial"], row["status"], row["epochs"], row["best_val_accuracy"]) == (2, "pruned", 1, 0.71)
    assert (row["train_s"], row["cpu_s"], row["params"]) == (12.5, 25.0, 1234.0)
