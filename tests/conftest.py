"""Shared fixtures: the repo's params.yaml shrunk to a test's budget, and small prepared datasets in the real format.

The tiers (pyproject.toml): `pytest` runs the fast tier, which starts no Ray; `pytest -m ray` the tests that start a
local Ray (Tune, Ray Train, several nodes); `pytest -m slow` the end-to-end runs. A test of the fast tier that starts
a Ray anyway (in this process or in a stage script it runs) fails, naming the marker it lacks. GPU tests
(`@pytest.mark.gpu`) are skipped where torch sees no CUDA device.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import yaml

from fakedata import make_mnist_like
from grutune.data import prepare

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def merge(base: dict, over: dict) -> dict:
    """`over` merged into `base`, section by section; a `space` is merged key by key into the base space."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            out[k] = {**base[k], **copy.deepcopy(v)} if k == "space" else merge(base[k], v)
        else:
            out[k] = copy.deepcopy(v)
    if "space" in over and "points_to_evaluate" not in over and "points_to_evaluate" in out:
        out["points_to_evaluate"] = []  # the repo's known-good points need not fit a test's shrunk space
    return out  # (a key of `over` missing from `base`, such as a removed param, fails params validation)


def shrunk_params(over: dict | None = None, *, datasets=("mnist",), wandb: bool = False) -> dict:
    """The repo's params.yaml for a test: one dataset (the GAN's too), W&B off, then `over` merged in."""
    base = merge(
        DEFAULT_PARAMS, {"datasets": list(datasets), "gan": {"dataset": datasets[0]}, "tracking": {"wandb": wandb}}
    )
    return merge(base, over or {})


@pytest.fixture(scope="session")
def write_params():
    """write_params(path, over=None, **kw) -> path: `shrunk_params(over, **kw)` written as a params.yaml."""

    def write(path: Path, over: dict | None = None, **kw) -> Path:
        path.write_text(yaml.safe_dump(shrunk_params(over, **kw), sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def prepared_mnist(tmp_path_factory):
    """prepared_mnist(n_train=600, n_test=100, val_fraction=0.2) -> the .npz of a generated MNIST-like dataset
    (made once per session for each size)."""
    made: dict[tuple, Path] = {}

    def make(n_train: int = 600, n_test: int = 100, val_fraction: float = 0.2) -> Path:
        key = (n_train, n_test, val_fraction)
        if key not in made:
            tmp = tmp_path_factory.mktemp("prepared")
            make_mnist_like(tmp / "raw", n_train=n_train, n_test=n_test, seed=0)
            prepare("mnist", tmp / "raw", tmp / "mnist.npz", val_fraction=val_fraction, seed=0)
            made[key] = tmp / "mnist.npz"
        return made[key]

    return make


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; torch sees none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _ray_sessions() -> set[str]:
    """The local Ray sessions ever started on this machine: each `ray.init` or `ray start` that starts a Ray makes a
    folder session_<date>_<pid> in Ray's temporary directory (RAY_TMPDIR, by default /tmp/ray)."""
    root = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
    return {p.name for p in root.glob("session_2*")} if root.is_dir() else set()


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_ray(request):
    """Fail a test that is marked neither `ray` nor `slow` but starts a Ray: the fast tier must not."""
    if {"ray", "slow"} & set(request.node.keywords):
        yield
        return
    before = _ray_sessions()
    yield
    import sys

    started = _ray_sessions() - before
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
        started = started or {"in this process"}
    if started:
        pytest.fail(f"this test started a Ray ({', '.join(sorted(started))}): mark it @pytest.mark.ray", pytrace=False)
