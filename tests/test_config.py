"""params.yaml validation: every bad value fails with a message naming the key and what is allowed."""

import copy
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
import yaml

from grutune.config import load_params
from grutune.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())


def write(tmp_path, mutate) -> Path:
    raw = copy.deepcopy(DEFAULT)
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def error_for(tmp_path, mutate) -> str:
    with pytest.raises(ConfigError) as e:
        load_params(write(tmp_path, mutate))
    return str(e.value)


def test_default_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.datasets == ("mnist", "cifar10")
    assert p.search.space["lr"] == ("loguniform", [1e-4, 1e-2])
    assert p.search.space["num_layers"] == ("int", [1, 3])


def test_params_are_frozen():
    p = load_params(ROOT / "params.yaml")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        p.search.num_samples = 3


@pytest.mark.parametrize(
    "mutate, key, allowed",
    [
        (lambda r: r.update(datasets=["mnist", "svhn"]), "datasets.1", "mnist, fashion_mnist, cifar10"),
        (lambda r: r["gan"].update(dataset="svhn"), "gan.dataset", "mnist, fashion_mnist, cifar10"),
    ],
)
def test_unknown_dataset_name(tmp_path, mutate, key, allowed):
    msg = error_for(tmp_path, mutate)
    assert key in msg and "svhn" in msg and allowed in msg


def test_gan_dataset_must_be_searched(tmp_path):
    msg = error_for(tmp_path, lambda r: r["gan"].update(dataset="fashion_mnist"))
    assert "gan.dataset 'fashion_mnist' must be one of datasets ['mnist', 'cifar10']" in msg


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda r: r.update(epochs=3), "epochs"),
        (lambda r: r["search"].update(num_sample=3), "search.num_sample"),
        (lambda r: r["search"]["resources"].update(tpu=1), "search.resources.tpu"),
    ],
)
def test_unknown_key(tmp_path, mutate, key):
    msg = error_for(tmp_path, mutate)
    assert f"{key}: unknown key" in msg
    assert "allowed here:" in msg


def test_unknown_key_lists_the_allowed_ones(tmp_path):
    msg = error_for(tmp_path, lambda r: r["search"].update(num_sample=3))
    assert "num_samples, max_epochs" in msg


def test_missing_key(tmp_path):
    msg = error_for(tmp_path, lambda r: r["train"].pop("epochs"))
    assert "train.epochs: Field required" in msg


@pytest.mark.parametrize(
    "mutate, key, got",
    [
        (lambda r: r["search"].update(num_samples="many"), "search.num_samples", "'many'"),
        (lambda r: r["search"].update(max_epochs=2.5), "search.max_epochs", "2.5"),
        (lambda r: r["tracking"].update(wandb="sometimes"), "tracking.wandb", "'sometimes'"),
        (lambda r: r.update(datasets="mnist"), "datasets", "'mnist'"),
    ],
)
def test_wrong_type(tmp_path, mutate, key, got):
    msg = error_for(tmp_path, mutate)
    assert key in msg and got in msg


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda r: r["search"].update(num_samples=0), "search.num_samples: Input should be greater than 0"),
        (lambda r: r["search"]["space"].update(lr={"loguniform": [-1e-3, 1e-2]}), "lr.loguniform"),
        (lambda r: r["search"]["space"].update(lr={"loguniform": [1e-2, 1e-4]}), "low must be below high"),
        (lambda r: r["search"]["space"].update(dropout={"uniform": [0.0, 1.5]}), "dropout.uniform"),
        (lambda r: r["search"]["space"].update(cell={"choice": ["gru", "transformer"]}), "allowed: gru, lstm, rnn"),
        (lambda r: r["search"]["space"].update(backbone="vit"), "allowed: none, conv, resnet"),
        (lambda r: r["search"]["space"].update(hidden_size={"uniform": [16, 64]}), "hidden_size.uniform"),
        (lambda r: r["search"]["space"].update(lr={"normal": [0, 1]}), "lr: a dimension is one of"),
        (lambda r: r["search"]["space"].update(depth=3), "unknown hyperparameter(s) ['depth']"),
        (lambda r: r["search"]["space"].pop("lr"), "missing hyperparameter(s) ['lr']"),
        (lambda r: r["search"].update(grace_period=50), "grace_period (50) must not exceed max_epochs"),
        (lambda r: r["search"]["resources"].update(gpu=1.5), "search.resources.gpu"),
        (lambda r: r["search"]["resources"].update(memory="lots"), "search.resources.memory: could not parse value"),
        (lambda r: r["prepare"].update(val_fraction=1.0), "prepare.val_fraction: Input should be less than 1"),
        (lambda r: r["gan_search"]["space"].update(lr_g={"loguniform": [-1e-3, 1e-2]}), "lr_g.loguniform"),
        (lambda r: r["gan_search"]["space"].update(backbone="vit"), "allowed: none, conv, resnet"),
        (lambda r: r["gan_search"]["space"].update(dropout=0.1), "unknown hyperparameter(s) ['dropout']"),
        (lambda r: r["gan_search"].update(min_diversity=-0.5), "gan_search.min_diversity"),
        (lambda r: r.update(datasets=[]), "datasets"),
        (lambda r: r.update(datasets=["mnist", "mnist"]), "must not repeat"),
        (
            lambda r: r["search"].update(startup_trials=1.5),
            "search.startup_trials: must be a number of trials (1, 2, ...) or a share of num_samples between 0 and 1 "
            "(got 1.5)",
        ),
        (lambda r: r["search"].update(startup_trials=0), "search.startup_trials: must be a number of trials"),
        (lambda r: r["search"].update(max_trial_epochs=0), "search.max_trial_epochs: Input should be greater than 0"),
        (
            lambda r: r["search"]["budget"].update(gpu_hours=-1),
            "search.budget.gpu_hours: Input should be greater than 0",
        ),
        (
            lambda r: r["search"]["budget"].update(hours=2),
            "search.budget.hours: unknown key; allowed here: trial_hours, cpu_hours, gpu_hours, dollars",
        ),
        (lambda r: r["gan_search"]["price_per_hour"].update(gpu=-2), "gan_search.price_per_hour.gpu: Input should be"),
        (
            lambda r: r["search"]["budget"].update(dollars=10),
            "search: budget.dollars needs a price: set price_per_hour.gpu (dollars per GPU-hour a trial holds)",
        ),
        (
            lambda r: r["search"].update(scheduler="hyperband"),
            "search.scheduler: Input should be 'asha' or 'top_k'",
        ),
        (
            lambda r: (r["search"].update(scheduler="top_k"), r["search"]["budget"].update(cpu_hours=2)),
            "search: scheduler top_k plans its trials before they run, in trial-epochs, and budget.cpu_hours is "
            "measured while they run",
        ),
    ],
)
def test_impossible_value(tmp_path, mutate, needle):
    assert needle in error_for(tmp_path, mutate)


def test_space_errors_name_the_key_path(tmp_path):
    msg = error_for(tmp_path, lambda r: r["search"]["space"].update(lr={"loguniform": [-1e-3, 1e-2]}))
    assert "search.space:" in msg and "lr.loguniform" in msg and "-0.001" in msg


def test_every_error_is_reported_at_once(tmp_path):
    def two(r):
        r["search"]["num_samples"] = 0
        r["train"]["epochs"] = -1

    msg = error_for(tmp_path, two)
    assert "2 invalid values" in msg and "search.num_samples" in msg and "train.epochs" in msg


def test_yaml_1_1_float_strings_are_read_as_numbers(tmp_path):
    # PyYAML reads `1e-3` (no dot) as a string; it is a valid learning rate all the same.
    path = write(tmp_path, lambda r: None)
    path.write_text(path.read_text().replace("val_fraction: 0.1", "val_fraction: 1e-1"))
    assert load_params(path).prepare.val_fraction == 0.1


def test_fixed_values_in_the_space(tmp_path):
    p = load_params(write(tmp_path, lambda r: r["search"]["space"].update(backbone="none", num_layers=2)))
    assert p.search.space["backbone"] == "none" and p.search.space["num_layers"] == 2


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("search: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize(
    "stage_args",
    [
        ["pipeline/fetch.py", "mnist", "data/raw/mnist"],
        [
            "pipeline/search.py",
            "mnist",
            "data/prepared/mnist.npz",
            "--best",
            "search/mnist/best.yaml",
            "--trials",
            "search/mnist/trials.csv",
            "--metrics",
            "metrics/mnist/search.json",
            "--details",
            "metrics/mnist/search_details.json",
            "--progress",
            "p.csv",
            "--progress-time",
            "pt.csv",
            "--pareto",
            "pareto.csv",
        ],
        [
            "pipeline/gan.py",
            "data/prepared/mnist.npz",
            "models/mnist/classifier.pt",
            "search/gan/best.yaml",
            "models/gan.pt",
            "--log",
            "metrics/gan_log.csv",
        ],
        [
            "pipeline/gan_eval.py",
            "data/prepared/mnist.npz",
            "models/mnist/classifier.pt",
            "models/gan.pt",
            "--metrics",
            "metrics/gan.json",
            "--details",
            "metrics/gan_details.json",
            "--samples",
            "s.png",
            "--class-samples",
            "c.png",
        ],
        [
            "pipeline/gan_search.py",
            "data/prepared/mnist.npz",
            "models/mnist/classifier.pt",
            "--best",
            "search/gan/best.yaml",
            "--trials",
            "search/gan/trials.csv",
            "--metrics",
            "metrics/gan_search.json",
            "--details",
            "metrics/gan_search_details.json",
            "--progress",
            "p.csv",
            "--progress-time",
            "pt.csv",
        ],
    ],
)
def test_stage_refuses_bad_params_before_any_work(tmp_path, stage_args):
    """A stage run with an invalid params.yaml exits 2 with the key named, no traceback, and writes nothing."""
    write(tmp_path, lambda r: r["search"].update(num_samples=0))
    script = ROOT / stage_args[0]
    proc = subprocess.run(
        [sys.executable, str(script), *stage_args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "search.num_samples" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_bad_best_config_names_each_missing_key(tmp_path):
    from grutune.config import read_best

    path = tmp_path / "best.yaml"
    path.write_text("config: {cell: gru, hidden_size: 0}\n")
    with pytest.raises(ConfigError) as e:
        read_best(path)
    msg = str(e.value)
    assert "config.hidden_size: Input should be greater than 0" in msg and "config.lr: Field required" in msg
    path.write_text("not: [a, mapping\n")
    with pytest.raises(ConfigError, match="not a valid best-config file"):
        read_best(path)


def test_storage_under_a_file_is_refused_naming_the_key(tmp_path, monkeypatch):
    (tmp_path / "README.md").write_text("a file")
    monkeypatch.chdir(tmp_path)
    for storage in ("README.md/sweeps", "README.md"):
        with pytest.raises(
            ConfigError,
            match=rf"search.storage: .*{storage} cannot hold sweeps: .*README.md is a "
            r"file, not a directory",
        ):
            load_params(write(tmp_path, lambda r, s=storage: r["search"].update(storage=s)))
    assert load_params(write(tmp_path, lambda r: r["search"].update(storage="sweeps/here"))).search.storage


@pytest.mark.parametrize(
    "point, message",
    [
        ({"cell": "transformer"}, "search: points_to_evaluate[0].cell: 'transformer' is outside the space (one of"),
        ({"lr": 10.0}, "search: points_to_evaluate[0].lr: 10.0 is outside the space (loguniform in ["),
        ({"colour": "red"}, "search: points_to_evaluate[0].colour: not a hyperparameter of the space"),
        ({"num_layers": 1.5}, "search: points_to_evaluate[0].num_layers: 1.5 is outside the space (int in ["),
    ],
)
def test_points_to_evaluate_must_lie_in_the_space(tmp_path, point, message):
    with pytest.raises(ConfigError) as e:
        load_params(write(tmp_path, lambda r: r["search"].update(points_to_evaluate=[point])))
    assert message in str(e.value)


def test_points_to_evaluate_are_kept_in_order(tmp_path):
    points = [{"cell": "gru", "lr": 0.001}, {"backbone": "conv"}]
    p = load_params(write(tmp_path, lambda r: r["search"].update(points_to_evaluate=points)))
    assert p.search.points_to_evaluate == points
