"""A final stage on a real full disk, as a user meets it: `dvc repro train@…` whose outputs' disk is full ends in one
line naming the file and the fix, exit 2, no traceback and no half-written output; after space is freed the same
command writes every output. Mounting a tmpfs needs root (CAP_SYS_ADMIN): skipped, saying so, where it is not
permitted. The stage trains in its own process (no Ray), as on a laptop; an end-to-end run of a stage: marked slow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grutune.final.checkpoints import load_checkpoint
from tiny_models import CLASSIFIER

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path):
    """A real tmpfs of 16 KB: less than the stage's outputs need."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def train_stage(cwd: Path, prepared: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "pipeline/train.py"),
            "mnist",
            str(prepared),
            "best.yaml",
            str(out / "classifier.pt"),
            "--metrics",
            str(out / "classifier.json"),
            "--details",
            str(out / "classifier_details.json"),
            "--confusion",
            str(out / "confusion.csv"),
            "--log",
            str(out / "log.csv"),
        ],
        cwd=cwd,
        env={**os.environ, "RAY_ADDRESS": "local"},  # in this process, whatever Ray runs on the machine
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_the_train_stage_on_a_full_disk_says_so_in_one_line_and_writes_everything_once_space_is_freed(
    tmp_path, prepared_mnist, write_params, small_disk
):
    prepared = prepared_mnist(n_train=600, n_test=100, val_fraction=0.2)
    write_params(tmp_path / "params.yaml", {"train": {"epochs": 1, "augment": False}})
    (tmp_path / "best.yaml").write_text(yaml.safe_dump({"config": CLASSIFIER.model_dump(), "trial_id": "t0"}))

    full = train_stage(tmp_path, prepared, small_disk)
    assert full.returncode == 2, full.stderr[-3000:]
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no room left writing {small_disk}/"), last
    assert "No space left on device" in last and "then run `dvc repro` again" in last, last
    left = {p.name for p in small_disk.iterdir()}
    assert not [n for n in left if n.endswith(".tmp")], left  # no half-written file is left
    assert left < {"classifier.pt", "classifier.json", "classifier_details.json", "confusion.csv", "log.csv"}, left
    if "classifier.pt" in left:  # written whole before the disk filled
        assert load_checkpoint(small_disk / "classifier.pt")["model_kwargs"]["hidden_size"] == CLASSIFIER.hidden_size

    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    freed = train_stage(tmp_path, prepared, small_disk)
    assert freed.returncode == 0, freed.stderr[-3000:]
    assert "Traceback" not in freed.stderr, freed.stderr[-3000:]
    written = {p.name for p in small_disk.iterdir()}
    assert written == {"classifier.pt", "classifier.json", "classifier_details.json", "confusion.csv", "log.csv"}
    assert load_checkpoint(small_disk / "classifier.pt")["model_kwargs"]["hidden_size"] == CLASSIFIER.hidden_size
