"""The GAN's sweep (grutune.trials.gan) on tiny real runs (Ray Tune, Optuna, ASHA): collapsed generators are
stopped, counted and never picked, and trials search over the generator kinds.

Every test here starts a local Ray.
"""

import json

import optuna
import pytest
import ray
import torch

from grutune.config import load_params
from grutune.data import load_prepared
from sweeps import study_trials

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def prepared(prepared_mnist):
    return prepared_mnist(n_train=600, n_test=100, val_fraction=0.2)


@pytest.fixture(scope="module")
def local_ray():
    # A Ray of its own ("local"), never one already on the machine (a ray.cluster_utils.Cluster of another run).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_gan_trials_that_collapse_are_stopped_and_counted_not_picked(tmp_path, prepared, local_ray, write_params):
    """With a diversity threshold no generator can meet, every GAN trial is stopped after its first epoch."""
    from grutune.errors import GrutuneError
    from grutune.models import RecurrentClassifier
    from grutune.trials.gan import run_gan_sweep

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
        run_gan_sweep(p, data, ckpt, "sha256:test", state_dir=tmp_path / "state")
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
    from grutune.gan import GENERATOR_NAMES
    from grutune.models import RecurrentClassifier
    from grutune.trials.gan import run_gan_sweep

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
    result = run_gan_sweep(
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


def test_a_gan_sweep_screened_by_top_k_keeps_the_lowest_fids_at_its_screen(tmp_path, prepared, local_ray, write_params):
    """gan_search.scheduler top_k minimises: of 3 trials screened for 1 epoch, the one with the lowest validation FID
    trains on to epoch 2; the others are PRUNED at epoch 1."""
    from grutune.models import RecurrentClassifier
    from grutune.trials.gan import run_gan_sweep

    p = load_params(
        write_params(
            tmp_path / "params.yaml",
            {
                "gan_search": {
                    "scheduler": "top_k",
                    "num_samples": 3,
                    "startup_trials": 3,
                    "max_epochs": 2,
                    "grace_period": 1,
                    "reduction_factor": 3,
                    "train_subset": 64,
                    "eval_samples": 32,
                    "min_diversity": 0.0,
                    "max_concurrent_trials": 2,
                    "resources": {"cpu": 1, "gpu": 0},
                    "points_to_evaluate": [],
                    "space": {
                        "lr_g": {"loguniform": [1e-4, 1e-2]},
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
    ckpt = {"model": clf.state_dict(), "model_kwargs": clf.kwargs}
    run_gan_sweep(p, load_prepared(prepared), ckpt, "sha256:test", state_dir=tmp_path / "state")
    trials = study_trials(tmp_path / "state")
    at_screen = {t.number: t.intermediate_values[1] for t in trials}
    (on,) = [t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 3 and at_screen[on] == min(at_screen.values()), at_screen
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in trials if t.number != on)
