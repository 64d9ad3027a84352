"""The named presets (Hydra composition, as DVC runs it): params.yaml is conf/'s default composition, and every
budget x dataset composes into params that validate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import compose_and_dump

from grutune.config import load_params

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = sorted(p.stem for p in (ROOT / "conf/budget").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (ROOT / "conf/dataset").glob("*.yaml"))


def compose(tmp_path: Path, *overrides: str) -> dict:
    """What `dvc exp run -S override ...` writes to params.yaml (DVC's own composition function)."""
    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(ROOT / "conf"), None, "config", "", list(overrides))
    return yaml.safe_load(out.read_text())


def test_hydra_is_enabled_for_dvc():
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "hydra.enabled"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "true"
    assert BUDGETS == ["cluster", "full", "laptop"] and DATASETS == ["all", "cifar10", "fashion_mnist", "mnist"]


def test_params_yaml_is_the_default_composition(tmp_path):
    """`dvc repro` reads params.yaml as it is: it must be what `dvc exp run` with no setting would write."""
    assert compose(tmp_path) == yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("budget", BUDGETS)
def test_every_preset_composes_into_valid_params(tmp_path, budget, dataset):
    composed = compose(tmp_path, f"budget={budget}", f"dataset={dataset}")
    params = load_params(tmp_path / "params.yaml")  # validates the whole file, as every stage does
    if dataset != "all":
        assert list(params.datasets) == [dataset] and params.gan.dataset == dataset
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    if budget == "full":
        assert {k: v for k, v in composed.items() if k not in ("datasets", "gan")} == {
            k: v for k, v in base.items() if k not in ("datasets", "gan")
        }
    else:
        assert composed["search"]["num_samples"] != base["search"]["num_samples"]


def test_the_laptop_preset_is_the_laptop_budget_and_settings_still_override(tmp_path):
    p = compose(tmp_path, "budget=laptop", "dataset=fashion_mnist", "search.num_samples=12")
    assert p["search"]["num_samples"] == 12 and p["search"]["max_epochs"] == 3 and p["train"]["epochs"] == 3
    assert p["gan"]["epochs"] == 4 and p["gan_search"]["num_samples"] == 2 and p["gan"]["dataset"] == "fashion_mnist"
    assert p["gan_search"]["space"]["conditional"] is True  # the laptop's 4 epochs were measured class-conditional
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert p["gan"]["lr_schedule"] == "constant" and base["gan"]["lr_schedule"] == "cosine"  # measured best of each
    assert p["search"]["space"] == base["search"]["space"]


def test_an_unknown_preset_names_the_valid_ones(tmp_path):
    with pytest.raises(Exception, match="laptop") as e:
        compose(tmp_path, "budget=huge")
    assert "huge" in str(e.value)
