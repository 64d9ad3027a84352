"""The protocol of a final stage's job on Ray Train (grutune.final.ray_train): run names, the worker's placement,
and a failure of the work itself told apart from a lost worker. A job's result on Ray Train against the same job in
this process: tests/test_final_runner.py; the multi-node case (a GPU worker, a node lost mid-training, `dvc repro
train@mnist`) is in tests/test_cluster.py."""

import shutil
from pathlib import Path

import pytest
import ray
import torch

from grutune.cluster import assigned_device
from grutune.config import FinalResources
from grutune.data import load_prepared
from grutune.final.ray_train import code_digest, placement, run_name
from tiny_models import CLASSIFIER


def test_run_names_change_with_every_input_that_decides_the_result():
    base = {"hp": CLASSIFIER.model_dump(), "data": "abc", "epochs": 3, "seed": 0, "augment": False}
    name = run_name("train-mnist", **base)
    assert name == run_name("train-mnist", **dict(reversed(base.items())))  # not on the order of the keys
    for key, other in [("data", "abd"), ("epochs", 4), ("seed", 1), ("augment", True)]:
        assert run_name("train-mnist", **{**base, key: other}) != name, key
    assert run_name("train-cifar10", **base) != name


def test_run_names_change_with_grutune_s_code(tmp_path, monkeypatch):
    """A finished run on the cluster is not handed back to changed code (say, a generator that starts otherwise), in
    a subpackage's module too."""
    import grutune
    import grutune.final.ray_train

    package = Path(grutune.__file__).parent
    copy = tmp_path / "grutune"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_digest(copy) == code_digest()
    models = copy / "gan" / "models.py"
    models.write_text(models.read_text().replace("a=0.2", "a=0.1"))
    changed = code_digest(copy)
    assert changed != code_digest()
    base = {"hp": CLASSIFIER.model_dump(), "data": "abc", "epochs": 3, "seed": 0}
    name = run_name("gan-mnist", **base)
    monkeypatch.setattr(grutune.final.ray_train, "code_digest", lambda: changed)
    assert run_name("gan-mnist", **base) != name


@pytest.fixture
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.ray
def test_work_gets_the_device_ray_assigned_it_not_every_gpu_it_can_see():
    """A task that asked for no GPU trains on the CPU even where torch sees a GPU (Ray 2.5x no longer hides it); one
    that holds a GPU trains on it where CUDA is there, and on the CPU where the node only declares one (as here on a
    CPU machine, and in the cluster tests' fake GPU nodes)."""
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        device = ray.remote(lambda: str(assigned_device()))
        without = ray.get(device.options(num_gpus=0).remote())
        holding = ray.get(device.options(num_gpus=1).remote())
    finally:
        ray.shutdown()
    assert without == "cpu"
    assert holding == ("cuda:0" if torch.cuda.is_available() else "cpu")


@pytest.mark.ray
def test_a_final_stage_with_cpu_null_and_no_gpu_takes_every_cpu_of_the_largest_node(local_ray):
    where = placement(FinalResources(gpu=0), key="train", storage="s3://bucket/grutune", max_failures=1)
    assert where.resources == {"cpu": 2, "gpu": 0}
    assert where.storage == "s3://bucket/grutune/final"


@pytest.mark.ray
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
    # (storage every node reaches: a folder on this machine's disk is refused where the autoscaler adds nodes)
    where = placement(FinalResources(cpu_fallback=True), key="train", storage="s3://bucket/g", max_failures=1)
    assert where.resources == {"cpu": 8, "gpu": 0}


@pytest.mark.ray
def test_a_gan_that_collapses_on_a_worker_fails_the_stage_as_on_a_laptop_without_retries(
    local_ray, prepared_mnist, tmp_path, monkeypatch, caplog
):
    """A failure of the work itself (every scored epoch collapsed) is not a lost node: Ray Train must not run the
    training again `max_failures` times; the stage gets the same GrutuneError as on a laptop."""
    from grutune.errors import GrutuneError
    from grutune.final.runner import OnRayTrain
    from grutune.gan.final import GanJob, portable
    from grutune.gan.training import Recipe
    from tiny_models import gan_config, gan_settings, scoring_classifier

    monkeypatch.chdir(tmp_path)
    data = load_prepared(prepared_mnist(n_train=600, n_test=100))
    settings = gan_settings(subset=64, eval_samples=20, min_diversity=10.0)
    job = GanJob(gan_config(), Recipe(batch_size=32), settings, portable(scoring_classifier()), data)
    where = placement(FinalResources(cpu=1, gpu=0), key="gan", storage=None, max_failures=3)
    shown = []
    with pytest.raises(GrutuneError, match="the GAN collapsed at every scored epoch"):
        OnRayTrain(where).run(job, on_epoch=shown.append)
    assert [m["epoch"] for m in shown] == [1, 2]  # trained once
    assert "lost its worker" not in caplog.text
