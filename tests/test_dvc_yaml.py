"""dvc.yaml against the code: each stage's deps list exactly the grutune modules its script imports."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from grutune.codehash import imported_modules, reachable
from grutune.gan import Recipe

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def closure(script: Path) -> set[str]:
    """Every src/grutune file a script runs when it imports what it imports (packages' __init__ files included)."""
    found = reachable(imported_modules(script))
    return {str(path.relative_to(ROOT)) for path in found.values()}


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_deps_are_its_script_and_exactly_what_it_imports(name):
    stage = STAGES[name].get("do", STAGES[name])
    script = stage["cmd"].split()[1]
    deps = set(stage["deps"])
    assert script == f"pipeline/{name}.py" and script in deps  # stages are named like their scripts
    library = {d for d in deps if d.startswith("src/")}
    assert library == closure(ROOT / script), f"{name}: deps {sorted(library)}"


@pytest.mark.parametrize("name", ["fetch", "prepare", "search", "train"])
def test_the_classifier_stages_depend_on_no_gan_code(name):
    """A change to the GAN reruns only the GAN's stages (and the report): no classifier stage imports GAN code."""
    stage = STAGES[name].get("do", STAGES[name])
    for files in (closure(ROOT / stage["cmd"].split()[1]), [d for d in stage["deps"] if d.startswith("src/")]):
        gan = sorted(f for f in files if any("gan" in part for part in Path(f).parts[2:]))
        assert not gan, f"{name} depends on GAN code: {gan}"


def test_no_output_path_is_derived_in_code():
    """Outputs are named in the stage's cmd; no script or module builds one from another (e.g. `{stem}_progress`)."""
    for path in [*ROOT.glob("pipeline/*.py"), *ROOT.glob("src/grutune/**/*.py")]:
        text = path.read_text()
        assert '_progress.csv"' not in text and "with_suffix(" not in text, f"{path.name} derives a path"
        for name in (
            "best.yaml",
            "trials.csv",
            "search.json",
            "search_details.json",
            "classifier.json",
            "classifier_details.json",
            "confusion.csv",
            "train_log.csv",
            "gan.json",
            "gan_details.json",
            "gan_log.csv",
            "gan_samples.png",
            "gan_search.json",
            "gan_search_details.json",
        ):
            assert f'/ "{name}"' not in text and f'/{name}"' not in text, f"{path.name} derives {name}"


@pytest.mark.parametrize("name", ["gan_search", "gan"])
def test_every_key_of_the_gan_recipe_is_a_param_of_the_stages_that_train_a_gan(name):
    """A change to the recipe (gan.loss, ema_decay, r1_gamma, lr_schedule, batch_size) reruns both GAN stages."""
    stage = STAGES[name].get("do", STAGES[name])
    params = {p for p in stage["params"] if isinstance(p, str)}
    missing = {f"gan.{f.name}" for f in dataclasses.fields(Recipe)} - params
    assert not missing, f"{name}: params lack {sorted(missing)}"
