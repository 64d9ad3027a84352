"""A sweep's identity (grutune.sweep.definition, grutune.codehash): settings and trial code, where code counts by what
it does, not by its comments, docstrings or formatting."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from grutune.codehash import PACKAGE, reachable, source_digest
from grutune.config import load_params
from grutune.sweep.definition import NOT_TRIAL_CODE, code_changes, trial_code
from grutune.trials.classifier import classifier_sweep, run_trial

DATA = SimpleNamespace(name="mnist", content_hash="sha256:aa")


@pytest.fixture
def package(tmp_path) -> Path:
    """A copy of grutune's source to change, as a user changes theirs."""
    return Path(shutil.copytree(PACKAGE, tmp_path / "grutune", ignore=shutil.ignore_patterns("__pycache__")))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer holds {old!r}: choose another line for this test"
    path.write_text(text.replace(old, new, 1))


def test_a_digest_ignores_comments_docstrings_and_formatting_but_not_code(tmp_path):
    original = tmp_path / "a.py"
    original.write_text('"""Doc."""\n\n\ndef f(x):\n    """Twice."""\n    return 2 * x  # double\n')
    same = tmp_path / "b.py"
    same.write_text("def f(x):\n    # another comment\n    return 2*x\n")
    other = tmp_path / "c.py"
    other.write_text('"""Doc."""\n\n\ndef f(x):\n    """Twice."""\n    return 3 * x  # double\n')
    assert source_digest(original) == source_digest(same)
    assert source_digest(original) != source_digest(other)


def test_the_classifier_trial_code_is_the_model_the_loop_and_the_trial_and_no_gan_or_driver_code():
    code = trial_code(run_trial)
    for module in ("grutune.models", "grutune.training", "grutune.trials.skeleton", "grutune.trials.classifier"):
        assert module in code, sorted(code)
    assert not [m for m in code if m.startswith("grutune.gan")], sorted(code)  # the classifier runs no GAN code
    assert not [m for m in code if any(m == x or m.startswith(x + ".") for x in NOT_TRIAL_CODE)], sorted(code)


def test_the_gan_trial_code_includes_the_gan_and_its_scoring():
    from grutune.trials.gan import run_gan_trial

    code = trial_code(run_gan_trial)
    assert "grutune.trials.gan" in code and "grutune.metrics" in code  # the FID is computed there
    assert [m for m in code if m.startswith("grutune.gan")], sorted(code)


def test_a_real_change_to_the_trial_code_changes_the_identity_and_names_the_module(package):
    before = trial_code(run_trial, package)
    assert before == trial_code(run_trial)  # the copy is the same code
    edit(package / "models.py", "import torch", "import torch\n\nUNUSED_BUT_CODE = 1")
    after = trial_code(run_trial, package)
    assert after != before and code_changes(before, after) == ["grutune.models"]


def test_comments_docstrings_formatting_logging_and_the_driver_do_not_change_the_identity(package):
    before = trial_code(run_trial, package)
    training = package / "training.py"
    text = training.read_text()
    training.write_text("# a new comment at the top\n" + text.replace('"""', '"""Reworded. ', 1) + "\n\n")
    for name in ("tracking.py", "io.py", "errors.py"):
        (package / name).write_text((package / name).read_text() + "\nLATER = 'a change outside the trial'\n")
    for path in (package / "sweep").glob("*.py"):
        path.write_text(path.read_text() + "\nLATER = 'the driver changed'\n")
    assert trial_code(run_trial, package) == before


def test_the_sweep_id_covers_settings_and_code_but_not_the_number_of_trials(tmp_path, write_params):
    params = load_params(write_params(tmp_path / "p.yaml"))
    sweep = classifier_sweep(params, DATA)
    more = load_params(write_params(tmp_path / "m.yaml", {"search": {"num_samples": params.search.num_samples + 5}}))
    assert classifier_sweep(more, DATA).sweep_id == sweep.sweep_id
    other = load_params(write_params(tmp_path / "o.yaml", {"search": {"max_epochs": params.search.max_epochs + 1}}))
    assert classifier_sweep(other, DATA).settings_id != sweep.settings_id
    assert classifier_sweep(other, DATA).sweep_id != sweep.sweep_id
    assert classifier_sweep(params, SimpleNamespace(name="mnist", content_hash="sha256:bb")).sweep_id != sweep.sweep_id
    assert sweep.sweep_id.startswith("mnist-") and sweep.code == trial_code(run_trial)


def test_a_top_k_sweep_is_another_sweep_and_an_asha_sweep_keeps_the_identity_it_had(tmp_path, write_params):
    params = load_params(write_params(tmp_path / "p.yaml"))
    sweep = classifier_sweep(params, DATA)
    asha = load_params(write_params(tmp_path / "a.yaml", {"search": {"scheduler": "asha"}}))
    top_k = load_params(write_params(tmp_path / "k.yaml", {"search": {"scheduler": "top_k"}}))
    assert classifier_sweep(asha, DATA).sweep_id == sweep.sweep_id
    assert "scheduler" not in str(sweep.settings_id) and classifier_sweep(top_k, DATA).sweep_id != sweep.sweep_id


def test_reachable_follows_imports_and_package_inits_and_stops_at_exclusions():
    found = reachable(["grutune.trials.classifier"])
    assert {"grutune", "grutune.trials", "grutune.sweep", "grutune.sweep.driver"} <= set(found)
    cut = reachable(["grutune.trials.classifier"], exclude=["grutune.sweep"])
    assert not [m for m in cut if m.startswith("grutune.sweep")]
    assert all(path.is_file() for path in found.values())


def test_a_trainable_of_a_script_counts_its_own_file_and_the_grutune_code_it_reaches(tmp_path):
    """A benchmark or a user's script passes its own trainable (module __main__): its file counts, and what it imports
    of grutune's trial code."""
    import subprocess
    import sys

    script = tmp_path / "mine.py"
    script.write_text(
        "import json\nfrom grutune.sweep.definition import trial_code\nfrom grutune.training import fit\n\n"
        "def trial(config):\n    return fit\n\nprint(json.dumps(trial_code(trial)))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    code = __import__("json").loads(out)
    assert "__main__" in code and "grutune.training" in code and "grutune.models" in code
