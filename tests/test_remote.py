"""The final stages' work as a Ray Train worker (remote.py) on a local Ray, and how a stage decides to use a cluster.

The multi-node case (a GPU worker, a node lost mid-training, `dvc repro train@mnist`) is in tests/test_cluster.py.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import ray
import torch

from grutune.config import FinalResources, TrialConfig
from grutune.data import load_prepared
from grutune.remote import code_digest, placement, run_name, train_classifier
from grutune.training import retrain_and_test

HP = TrialConfig(
    cell="gru",
    hidden_size=16,
    num_layers=1,
    bidirectional=False,
    dropout=0.2,
    backbone="none",
    lr=3e-3,
    weight_decay=1e-4,
    batch_size=64,
)


def test_a_stage_without_a_running_ray_does_not_join_or_start_one_and_prints_nothing(tmp_path):
    """On a laptop (no RAY_ADDRESS, no `ray start`), join_cluster says no, quietly, and leaves no Ray behind."""
    if any(p.info["name"] == "gcs_server" for p in psutil.process_iter(["name"])):
        # Ray's own lookup ("auto", as `ray.init()` does) finds any Ray on the machine by its processes
        pytest.skip("another Ray runs on this machine: a stage would join it, as Ray's lookup does")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    code = "import ray; from grutune.cluster import join_cluster; print(join_cluster(), ray.is_initialized())"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "RAY_TMPDIR": str(tmp_path)},  # a temp dir no cluster registered itself in
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
    assert proc.stderr == ""


def test_ray_address_local_keeps_a_final_stage_in_its_own_process_whatever_runs_on_the_machine(tmp_path):
    """RAY_ADDRESS=local, Ray's way of asking for a Ray of one's own: a final stage joins nothing and starts nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    code = "import ray; from grutune.cluster import join_cluster; print(join_cluster(), ray.is_initialized())"
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
            [sys.executable, "-c", code],
            env={**env, "RAY_ADDRESS": "local"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        with_ray.stdin.close()
        with_ray.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"] and proc.stderr == ""


def test_run_names_change_with_every_input_that_decides_the_result():
    base = {"hp": HP.model_dump(), "data": "abc", "epochs": 3, "seed": 0, "augment": False}
    name = run_name("train-mnist", **base)
    assert name == run_name("train-mnist", **dict(reversed(base.items())))  # not on the order of the keys
    for key, other in [("data", "abd"), ("epochs", 4), ("seed", 1), ("augment", True)]:
        assert run_name("train-mnist", **{**base, key: other}) != name, key
    assert run_name("train-cifar10", **base) != name


def test_run_names_change_with_grutune_s_code(tmp_path, monkeypatch):
    """A finished run on the cluster is not handed back to changed code (say, a generator that starts otherwise)."""
    import grutune
    import grutune.remote

    package = Path(grutune.__file__).parent
    copy = tmp_path / "grutune"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_digest(copy) == code_digest()
    (copy / "gan_models.py").write_text((copy / "gan_models.py").read_text().replace("a=0.2", "a=0.1"))
    changed = code_digest(copy)
    assert changed != code_digest()
    base = {"hp": HP.model_dump(), "data": "abc", "epochs": 3, "seed": 0}
    name = run_name("gan-mnist", **base)
    monkeypatch.setattr(grutune.remote, "code_digest", lambda: changed)
    assert run_name("gan-mnist", **base) != name


@pytest.fixture
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_the_classifier_trained_by_a_ray_train_worker_is_the_one_trained_in_process(
    local_ray, prepared_mnist, tmp_path, monkeypatch
):
    """`train_classifier` on a CPU worker: the model, curves and test predictions that come back are those of
    `retrain_and_test` in this process with the worker's one thread, and the checkpoints are under <storage>/final."""
    monkeypatch.chdir(tmp_path)
    data = load_prepared(prepared_mnist(n_train=600, n_test=100))
    where = placement(FinalResources(cpu=1, gpu=0), key="train", storage=None, max_failures=0)
    assert where.resources == {"cpu": 1, "gpu": 0} and where.storage == f"{tmp_path.resolve()}/.grutune/final"
    final, measured = train_classifier(HP, data, epochs=2, seed=1, augment=True, where=where)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = retrain_and_test(HP, data, epochs=2, seed=1, device=torch.device("cpu"), augment=True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(final.test["pred"], straight.test["pred"])
    assert [m["train_loss"] for m in final.history] == pytest.approx([m["train_loss"] for m in straight.history])
    for k, w in straight.model.state_dict().items():
        assert torch.allclose(final.model.state_dict()[k], w, atol=1e-6), k
    assert measured["params"] == sum(p.numel() for p in straight.model.parameters())
    assert measured["resumed_from_epoch"] == 0 and "torch thread" in measured["hardware"]
    (run,) = (tmp_path / ".grutune/final").glob("train-mnist-*")
    assert len([c for c in run.glob("checkpoint_*") if c.is_dir()]) == 2  # the last two of its three reports kept


def test_a_final_stage_with_cpu_null_and_no_gpu_takes_every_cpu_of_the_largest_node(local_ray):
    where = placement(FinalResources(gpu=0), key="train", storage="s3://bucket/grutune", max_failures=1)
    assert where.resources == {"cpu": 2, "gpu": 0}
    assert where.storage == "s3://bucket/grutune/final"


def test_the_gan_and_its_scores_from_ray_train_workers_are_those_of_this_process(
    local_ray, prepared_mnist, tmp_path, monkeypatch
):
    """`train_gan` and `evaluate_gan_on` on CPU workers: the kept epoch, its generator, and the test scores and
    grids that come back are what `train_best` and `evaluate_gan` give in this process with one thread."""
    from grutune.config import GanTrialConfig
    from grutune.gan import Recipe, class_grid, evaluate_gan, train_best
    from grutune.models import RecurrentClassifier
    from grutune.remote_gan import evaluate_gan_on, train_gan
    from grutune.training import Split

    monkeypatch.chdir(tmp_path)
    data = load_prepared(prepared_mnist(n_train=600, n_test=100))
    torch.manual_seed(0)
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
    hp = GanTrialConfig(generator="deconv", hidden_size=16, num_layers=1, backbone="none", lr_g=2e-3, lr_d=2e-3)
    recipe = Recipe(batch_size=32, ema_decay=0.9)
    settings = dict(epochs=2, noise_dim=8, subset=128, eval_samples=50, eval_every=1, min_diversity=0.0, seed=0)
    where = placement(FinalResources(cpu=1, gpu=0), key="gan", storage=None, max_failures=0)
    shown = []
    remote = train_gan(hp, recipe, clf, data, settings=settings, where=where, on_epoch=shown.append)
    metrics, grid, by_class = evaluate_gan_on(where, remote.G, clf, data, eval_samples=50, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = train_best(hp, recipe, clf, data, **settings, device=torch.device("cpu"))
        here_metrics, here_grid = evaluate_gan(here.G, clf, data, eval_samples=50, seed=0, device=torch.device("cpu"))
        here_by_class = class_grid(here.G, clf, Split.of(data.x_test, data.y_test, torch.device("cpu")), seed=0)
    finally:
        torch.set_num_threads(threads)
    assert [m["epoch"] for m in shown] == [1, 2]  # each epoch shown here as the worker reported it
    assert (remote.best_epoch, remote.val_fid) == pytest.approx((here.best_epoch, here.val_fid), rel=1e-6)
    assert metrics["fid"] == pytest.approx(here_metrics["fid"], rel=1e-6)
    assert np.allclose(grid, here_grid, atol=1e-5) and np.allclose(by_class, here_by_class, atol=1e-5)


def test_two_data_parallel_workers_train_the_model_one_process_trains(local_ray, prepared_mnist, tmp_path, monkeypatch):
    """`train.resources.num_workers: 2`: each worker takes half of every batch and DDP averages their gradients, so
    the two train the same model as one process over whole batches (up to float rounding). Without dropout and
    augmentation nothing else differs; a worker that kept its gradients to itself would end far from it."""
    monkeypatch.chdir(tmp_path)
    data = load_prepared(prepared_mnist(n_train=640, n_test=100, val_fraction=0.2))  # 512 + 128: whole batches
    hp = HP.model_copy(update={"dropout": 0.0})
    where = placement(FinalResources(cpu=1, gpu=0, num_workers=2), key="train", storage=None, max_failures=0)
    assert str(where) == "2 Ray Train workers of {'cpu': 1, 'gpu': 0}"
    shown = []
    final, _ = train_classifier(hp, data, epochs=2, seed=1, augment=False, where=where, on_epoch=shown.append)
    straight = retrain_and_test(hp, data, epochs=2, seed=1, device=torch.device("cpu"))
    assert [m["epoch"] for m in shown] == [1, 2]
    assert [m["train_loss"] for m in final.history] == pytest.approx(
        [m["train_loss"] for m in straight.history], rel=1e-4
    )
    for k, w in straight.model.state_dict().items():
        assert torch.allclose(final.model.state_dict()[k], w, atol=1e-4), k


def test_a_gpu_the_autoscaler_can_never_add_is_an_error_and_cpu_fallback_takes_a_whole_node(
    local_ray, tmp_path, monkeypatch
):
    """The autoscaler's config is seen and has no GPU node type: a final stage asking for a GPU stops with an error
    naming the settings (no waiting for ever, no quiet downgrade); with cpu_fallback it takes every CPU of the
    largest node type the autoscaler can add."""
    import yaml

    from grutune.errors import ConfigError

    config = tmp_path / "autoscaler.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "head_node_type": "head",
                "available_node_types": {
                    "head": {"resources": {"CPU": 0}, "max_workers": 0},
                    "cpu8": {"resources": {"CPU": 8}, "max_workers": 2},
                },
            }
        )
    )
    monkeypatch.setenv("GRUTUNE_AUTOSCALING_CONFIG", str(config))
    with pytest.raises(ConfigError) as e:
        placement(FinalResources(), key="train", storage=None, max_failures=1)
    assert "train.resources.gpu: 0" in str(e.value) and "train.resources.cpu_fallback: true" in str(e.value)
    assert str(config) in str(e.value)
    where = placement(FinalResources(cpu_fallback=True), key="train", storage=None, max_failures=1)
    assert where.resources == {"cpu": 8, "gpu": 0}


def test_a_gan_that_collapses_on_a_worker_fails_the_stage_as_on_a_laptop_without_retries(
    local_ray, prepared_mnist, tmp_path, monkeypatch, caplog
):
    """A failure of the work itself (every scored epoch collapsed) is not a lost node: Ray Train must not run the
    training again `max_failures` times; the stage gets the same GrutuneError as on a laptop."""
    from grutune.config import GanTrialConfig
    from grutune.errors import GrutuneError
    from grutune.gan import Recipe
    from grutune.models import RecurrentClassifier
    from grutune.remote_gan import train_gan

    monkeypatch.chdir(tmp_path)
    data = load_prepared(prepared_mnist(n_train=600, n_test=100))
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
    hp = GanTrialConfig(generator="deconv", hidden_size=16, num_layers=1, backbone="none", lr_g=2e-3, lr_d=2e-3)
    settings = dict(epochs=2, noise_dim=8, subset=64, eval_samples=20, eval_every=1, min_diversity=10.0, seed=0)
    where = placement(FinalResources(cpu=1, gpu=0), key="gan", storage=None, max_failures=3)
    shown = []
    with pytest.raises(GrutuneError, match="the GAN collapsed at every scored epoch"):
        train_gan(hp, Recipe(batch_size=32), clf, data, settings=settings, where=where, on_epoch=shown.append)
    assert [m["epoch"] for m in shown] == [1, 2]  # trained once
    assert "lost its worker" not in caplog.text
