"""The classifier's sweep (grutune.trials.classifier): its identity, and, on tiny real runs (Ray Tune, Optuna,
ASHA), a multi-objective sweep over what its trials measure of their models."""

import optuna
import pytest
import ray
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from grutune.config import load_params
from grutune.data import load_prepared
from grutune.trials.classifier import classifier_sweep, run_classifier_sweep
from sweeps import tiny_writer


@pytest.fixture(scope="session")
def tiny(write_params):
    return tiny_writer(write_params)


@pytest.fixture(scope="module")
def prepared(prepared_mnist):
    return prepared_mnist(n_train=600, n_test=100, val_fraction=0.2)


@pytest.fixture(scope="module")
def local_ray():
    # A Ray of its own ("local"), never one already on the machine (a ray.cluster_utils.Cluster of another run).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def data_named(name, content_hash):
    return type("Data", (), {"name": name, "content_hash": content_hash})()


def test_classifier_sweep_identity(tmp_path, tiny):
    """What decides a sweep's trials is its identity (the space, the per-trial budget, the data); retries, more
    trials and a larger spend budget extend the same sweep."""
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
    aa, bb = data_named("mnist", "sha256:aa"), data_named("mnist", "sha256:bb")
    sid = classifier_sweep(base, aa).sweep_id
    assert sid.startswith("mnist-") and sid == classifier_sweep(same, aa).sweep_id
    assert sid == classifier_sweep(more_trials, aa).sweep_id == classifier_sweep(more_money, aa).sweep_id
    assert (
        len(
            {
                sid,
                classifier_sweep(other_space, aa).sweep_id,
                classifier_sweep(other_budget, aa).sweep_id,
                classifier_sweep(base, bb).sweep_id,
            }
        )
        == 4
    )


# --------------------------------------------------------------------------- on Ray


@pytest.mark.ray
def test_a_multi_objective_sweep_stores_every_objective_and_picks_from_its_front(tmp_path, prepared, local_ray, tiny):
    """objectives [val_accuracy, params]: Optuna holds both values of each completed trial (the params of the model
    the trial really built), ASHA's stopped trials are PRUNED with their epochs' accuracy kept, the front is the
    non-dominated completed trials, and best.yaml is the point the pick rule names."""
    from grutune.metrics import dominates
    from grutune.objectives import TrialConfig
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
    result = run_classifier_sweep(p, data, state_dir=tmp_path / "state")
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
