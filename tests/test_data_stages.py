"""The fetch and prepare stages as DVC runs them: their scripts, from a repository root holding params.yaml."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fakedata import checksums_yaml, make_mnist_like, serve_directory
from grutune.data import CHECKSUMS_ENV, DATASETS, MIRROR_ENV, load_prepared

MNIST_FILES = list(DATASETS["mnist"].files)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def src(tmp_path, monkeypatch):
    """Generated MNIST-format files, with GRUTUNE_CHECKSUMS set to their hashes (and no mirror in the env)."""
    src = tmp_path / "src"
    make_mnist_like(src, n_train=40, n_test=20, seed=0)
    (tmp_path / "sums.yaml").write_text(checksums_yaml("mnist", src))
    monkeypatch.setenv(CHECKSUMS_ENV, str(tmp_path / "sums.yaml"))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    return src


@pytest.mark.parametrize(
    "script, usage",
    [
        ("fetch.py", "fetch.py [-h] {mnist,fashion_mnist,cifar10} out_dir"),
        ("prepare.py", "prepare.py [-h] {mnist,fashion_mnist,cifar10} raw_dir out_npz"),
    ],
)
def test_pipeline_scripts_show_their_command(script, usage):
    out = subprocess.run(
        [sys.executable, str(REPO / "pipeline" / script), "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert usage in out and f"python pipeline/{script}" in out


def test_the_fetch_and_prepare_stages_run_as_scripts(tmp_path, src):
    """The DVC commands, from a repository root holding params.yaml, with the mirror and checksums in the env."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    run = functools.partial(
        subprocess.run, cwd=tmp_path, capture_output=True, text=True, env={**os.environ, MIRROR_ENV: ""}
    )
    with serve_directory(src) as url:
        fetched = run(
            [sys.executable, str(REPO / "pipeline/fetch.py"), "mnist", "data/raw/mnist"],
            env={**os.environ, MIRROR_ENV: url},
        )
    assert fetched.returncode == 0, fetched.stderr
    assert sorted(p.name for p in (tmp_path / "data/raw/mnist").iterdir()) == sorted(MNIST_FILES)
    prepared = run(
        [sys.executable, str(REPO / "pipeline/prepare.py"), "mnist", "data/raw/mnist", "data/prepared/mnist.npz"]
    )
    assert prepared.returncode == 0, prepared.stderr
    p = load_prepared(tmp_path / "data/prepared/mnist.npz")
    assert p.content_hash in prepared.stdout and len(p.x_train) + len(p.x_val) == 40
    # a failure is one message on stderr and exit status 2, no traceback
    failed = run([sys.executable, str(REPO / "pipeline/prepare.py"), "mnist", "data/raw/none", "x.npz"])
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.startswith("error: data/raw/none: missing train-images-idx3-ubyte.gz")
