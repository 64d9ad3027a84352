"""The seam between a final stage and where it runs (grutune.final.runner): `runner_for` chooses this process without
a running Ray, and both kinds of runner run the same job to the same result."""

import os
import subprocess
import sys

import numpy as np
import psutil
import pytest
import ray
import torch

from grutune.config import FinalResources
from grutune.data import load_prepared
from grutune.final.classifier import ClassifierJob
from grutune.final.ray_train import placement
from grutune.final.runner import InProcess, OnRayTrain
from tiny_models import CLASSIFIER

CPU = torch.device("cpu")
# Where a stage's runner runs it, chosen as the train stage chooses, and whether that started or joined a Ray.
CHOOSE = (
    "import ray; from grutune.config import TrainParams; from grutune.final.runner import runner_for; "
    "runner = runner_for(TrainParams(epochs=1, augment=False), key='train', storage=None); "
    "print(type(runner).__name__, ray.is_initialized())"
)


def test_a_stage_without_a_running_ray_runs_in_its_process_and_starts_no_ray_and_prints_nothing(tmp_path):
    """On a laptop (no RAY_ADDRESS, no `ray start`), the runner is this process, chosen quietly, with no Ray left
    behind."""
    if any(p.info["name"] == "gcs_server" for p in psutil.process_iter(["name"])):
        # Ray's own lookup ("auto", as `ray.init()` does) finds any Ray on the machine by its processes
        pytest.skip("another Ray runs on this machine: a stage would join it, as Ray's lookup does")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.run(
        [sys.executable, "-c", CHOOSE],
        env={**env, "RAY_TMPDIR": str(tmp_path)},  # a temp dir no cluster registered itself in
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["InProcess", "False"]
    assert proc.stderr == ""


@pytest.mark.ray
def test_ray_address_local_keeps_a_final_stage_in_its_own_process_whatever_runs_on_the_machine():
    """RAY_ADDRESS=local, Ray's way of asking for a Ray of one's own: a final stage joins nothing and starts nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    with_ray = subprocess.Popen(  # another Ray on the machine, which a plain lookup would find
        [
            sys.executable,
            "-c",
            "import ray, sys; ray.init(num_cpus=1, include_dashboard=False); print(1, flush=True); sys.stdin.read()",
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert with_ray.stdout.readline().strip() == "1"  # its Ray is up
        proc = subprocess.run(
            [sys.executable, "-c", CHOOSE],
            env={**env, "RAY_ADDRESS": "local"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        with_ray.stdin.close()
        with_ray.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["InProcess", "False"] and proc.stderr == ""


@pytest.fixture
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def one_thread(run):
    """`run()` with torch on one thread, as a Ray Train worker holding one CPU runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.ray
def test_both_kinds_run_the_classifier_job_to_the_same_result(local_ray, prepared_mnist, tmp_path, monkeypatch):
    """The train stage's job on a CPU Ray Train worker: the model, curves and test predictions that come back are
    those of the same job in this process with the worker's one thread, and the checkpoints are under
    <storage>/final."""
    monkeypatch.chdir(tmp_path)
    data = load_prepared(prepared_mnist(n_train=600, n_test=100))
    job = ClassifierJob(CLASSIFIER, data, epochs=2, seed=1, augment=True)
    where = placement(FinalResources(cpu=1, gpu=0), key="train", storage=None, max_failures=0)
    assert where.resources == {"cpu": 1, "gpu": 0} and where.storage == f"{tmp_path.resolve()}/.grutune/final"
    shown = []
    remote = OnRayTrain(where).run(job, on_epoch=shown.append)
    here = one_thread(lambda: InProcess(CPU).run(job))
    assert str(OnRayTrain(where)) == "the Ray cluster (one Ray Train worker of {'cpu': 1, 'gpu': 0})"
    assert [m["epoch"] for m in shown] == [1, 2]  # each epoch shown here as the worker reported it
    final, straight = remote.final, here.final
    assert torch.equal(final.test["pred"], straight.test["pred"])
    assert [m["train_loss"] for m in final.history] == pytest.approx([m["train_loss"] for m in straight.history])
    for k, w in straight.model.state_dict().items():
        assert torch.allclose(final.model.state_dict()[k], w, atol=1e-6), k
    assert remote.cost["params"] == here.cost["params"] == sum(p.numel() for p in straight.model.parameters())
    assert remote.resumed_from_epoch == 0 and "torch thread" in remote.hardware
    (run,) = (tmp_path / ".grutune/final").glob("train-mnist-*")
    assert len([c for c in run.glob("checkpoint_*") if c.is_dir()]) == 2  # the last two of its three reports kept


@pytest.mark.ray
def test_both_kinds_run_the_gan_jobs_to_the_same_result(local_ray, prepared_mnist, tmp_path, monkeypatch):
    """The gan and gan_eval stages' jobs on CPU workers: the kept epoch, its generator, and the test scores and grids
    that come back are those of the same jobs in this process with one thread."""
    from grutune.gan.final import GanEvalJob, GanJob, portable
    from grutune.gan.training import Recipe
    from tiny_models import gan_config, gan_settings, scoring_classifier

    monkeypatch.chdir(tmp_path)
    data = load_prepared(prepared_mnist(n_train=600, n_test=100))
    clf = portable(scoring_classifier())
    job = GanJob(gan_config(), Recipe(batch_size=32, ema_decay=0.9), gan_settings(), clf, data)
    where = placement(FinalResources(cpu=1, gpu=0), key="gan", storage=None, max_failures=0)
    shown = []
    remote = OnRayTrain(where).run(job, on_epoch=shown.append)
    scores = OnRayTrain(where).run(GanEvalJob(portable(remote.G), clf, data, eval_samples=50, seed=0))
    here = one_thread(lambda: InProcess(CPU).run(job))
    here_eval = GanEvalJob(portable(here.G), clf, data, eval_samples=50, seed=0)
    here_scores = one_thread(lambda: InProcess(CPU).run(here_eval))
    assert [m["epoch"] for m in shown] == [1, 2]  # each epoch shown here as the worker reported it
    assert (remote.best_epoch, remote.val_fid) == pytest.approx((here.best_epoch, here.val_fid), rel=1e-6)
    assert scores.metrics["fid"] == pytest.approx(here_scores.metrics["fid"], rel=1e-6)
    assert np.allclose(scores.grid, here_scores.grid, atol=1e-5)
    assert np.allclose(scores.by_class, here_scores.by_class, atol=1e-5)
    assert sorted(c.name.split("-")[1] for c in (tmp_path / ".grutune/final").iterdir()) == ["eval", "mnist"]
