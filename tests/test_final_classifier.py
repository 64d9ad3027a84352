"""The final classifier (grutune.final.classifier): retrained on train+val and tested, resumed from an epoch's
checkpoint as if it had not stopped, and as the train stage's job, in this process or as data-parallel Ray Train
workers."""

import io

import pytest
import ray
import torch

from grutune.config import FinalResources
from grutune.data import load_prepared
from grutune.final.classifier import ClassifierJob, retrain_and_test
from grutune.final.classifier import test_metrics as metrics_of  # not named test_*: no test
from grutune.final.ray_train import RunHooks, placement
from grutune.final.runner import InProcess, OnRayTrain
from grutune.objectives import TrialConfig
from tiny_models import CLASSIFIER

CPU = torch.device("cpu")


def test_a_final_run_resumed_from_an_epochs_checkpoint_ends_as_a_straight_run(prepared_mnist):
    """`retrain_and_test` with `checkpoint` and `resume`, as the train stage uses them on a cluster: a run restarted
    (in a fresh model, after other random draws) from its epoch-2 state ends with the same weights and test
    predictions as one that never stopped. Dropout and augmentation make this depend on the restored random state."""
    data = load_prepared(prepared_mnist(n_train=600, n_test=100))
    hp = TrialConfig(
        cell="gru",
        hidden_size=16,
        num_layers=1,
        bidirectional=False,
        dropout=0.3,
        backbone="none",
        lr=3e-3,
        weight_decay=1e-4,
        batch_size=64,
    )
    saved = []

    def checkpoint(state: dict) -> None:  # written at once, as a checkpoint is (the state holds live tensors)
        f = io.BytesIO()
        torch.save(state, f)
        saved.append(f.getvalue())

    kw = {"epochs": 4, "seed": 3, "device": torch.device("cpu"), "augment": True}
    straight = retrain_and_test(hp, data, **kw, hooks=RunHooks(checkpoint=checkpoint))
    states = [torch.load(io.BytesIO(b), weights_only=True) for b in saved]  # loaded as a checkpoint is
    assert [s["epoch"] for s in states] == [1, 2, 3, 4]
    torch.rand(1000)  # other random draws between the stop and the resume
    resumed = retrain_and_test(hp, data, **kw, hooks=RunHooks(resume=states[1]))
    assert [m["epoch"] for m in resumed.history] == [1, 2, 3, 4]
    assert [m["train_loss"] for m in resumed.history] == [m["train_loss"] for m in straight.history]
    for name, w in straight.model.state_dict().items():
        assert torch.equal(w, resumed.model.state_dict()[name]), name
    assert torch.equal(resumed.test["pred"], straight.test["pred"])
    # and the test can tell: the same resume with another random state (dropout's masks) ends elsewhere
    other_state = {**states[1], "rng": torch.Generator().manual_seed(99).get_state()}
    other = retrain_and_test(hp, data, **kw, hooks=RunHooks(resume=other_state))
    assert not torch.equal(other.model.state_dict()["head.weight"], straight.model.state_dict()["head.weight"])


def test_the_job_in_this_process_is_retrain_and_test_with_its_size_and_speed(prepared_mnist):
    """The train stage's job, run in this process: the model, curves and test predictions of `retrain_and_test` with
    the same seed, each epoch shown as it ends, and the model's size and latency measured where it trained."""
    data = load_prepared(prepared_mnist(n_train=600, n_test=100))
    shown = []
    done = InProcess(CPU).run(ClassifierJob(CLASSIFIER, data, epochs=2, seed=1, augment=True), on_epoch=shown.append)
    straight = retrain_and_test(CLASSIFIER, data, epochs=2, seed=1, device=CPU, augment=True)
    assert [m["epoch"] for m in shown] == [1, 2] and done.final.history == shown
    assert [m["train_loss"] for m in done.final.history] == [m["train_loss"] for m in straight.history]
    assert torch.equal(done.final.test["pred"], straight.test["pred"])
    for k, w in straight.model.state_dict().items():
        assert torch.equal(done.final.model.state_dict()[k], w), k
    assert done.cost["params"] == sum(p.numel() for p in straight.model.parameters())
    assert done.cost["latency_ms"] > 0 and done.cost["latency_batch_ms"] > 0
    assert "torch thread" in done.hardware and done.resumed_from_epoch == 0
    metrics = metrics_of(done.final.test, data)
    assert metrics["test_accuracy"] == straight.test["accuracy"] and metrics["test_loss"] == straight.test["loss"]
    assert list(metrics["per_class_accuracy"]) == list(data.classes)


@pytest.mark.ray
def test_two_data_parallel_workers_train_the_model_one_process_trains(prepared_mnist, tmp_path, monkeypatch):
    """`train.resources.num_workers: 2`: each worker takes half of every batch and DDP averages their gradients, so
    the two train the same model as one process over whole batches (up to float rounding). Without dropout and
    augmentation nothing else differs; a worker that kept its gradients to itself would end far from it."""
    monkeypatch.chdir(tmp_path)
    data = load_prepared(prepared_mnist(n_train=640, n_test=100, val_fraction=0.2))  # 512 + 128: whole batches
    hp = CLASSIFIER.model_copy(update={"dropout": 0.0})
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        where = placement(FinalResources(cpu=1, gpu=0, num_workers=2), key="train", storage=None, max_failures=0)
        assert str(where) == "2 Ray Train workers of {'cpu': 1, 'gpu': 0}"
        shown = []
        final = OnRayTrain(where).run(ClassifierJob(hp, data, epochs=2, seed=1, augment=False), shown.append).final
    finally:
        ray.shutdown()
    straight = retrain_and_test(hp, data, epochs=2, seed=1, device=CPU)
    assert [m["epoch"] for m in shown] == [1, 2]
    assert [m["train_loss"] for m in final.history] == pytest.approx(
        [m["train_loss"] for m in straight.history], rel=1e-4
    )
    for k, w in straight.model.state_dict().items():
        assert torch.allclose(final.model.state_dict()[k], w, atol=1e-4), k
