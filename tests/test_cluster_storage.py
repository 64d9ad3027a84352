"""Storage that every node of a Ray cluster reaches (grutune.cluster.require_shared_storage): a sweep's or a final
stage's folder that another node cannot see, or that nodes an autoscaler adds would not see, is refused before any
training, naming the key, its value and what to set.

The fast tier reads mount tables in /proc/self/mounts' format and autoscaler configs (cluster.yaml itself). The Ray
tier runs the check on real multi-node clusters on this machine (`ray.cluster_utils.Cluster`): every node there sees
this machine's files, so the node that does not is a real Ray node started in a mount namespace of its own, where
the storage folder is hidden by an empty tmpfs (skipped where this machine does not allow one).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

from grutune.cluster import (
    AUTOSCALING_CONFIG_ENV,
    can_grow,
    filesystem_type,
    require_shared_storage,
)
from grutune.config import FinalResources, load_params
from grutune.data import load_prepared
from grutune.errors import ConfigError
from grutune.final.ray_train import placement
from grutune.sweep.storage import place
from grutune.trials.classifier import run_classifier_sweep
from sweeps import tiny_writer

ROOT = Path(__file__).resolve().parents[1]

MOUNTS = r"""overlay / overlay rw,relatime,lowerdir=/l,upperdir=/u,workdir=/w 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/nvme0n1p1 /home ext4 rw,relatime 0 0
fs-0123.efs.us-west-2.amazonaws.com:/ /home/ubuntu/shared nfs4 rw,relatime,vers=4.1 0 0
mountpoint-s3 /mnt/my\040bucket fuse.mountpoint-s3 rw,nosuid,nodev 0 0
fuse-overlayfs /var/lib/containers fuse.fuse-overlayfs rw 0 0
"""


# --------------------------------------------------------------------------- fast: mount tables, autoscaler configs


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/home/ubuntu/grutune/.grutune/sweeps", "ext4"),
        ("/home/ubuntu/shared/grutune", "nfs4"),  # EFS: the closest mount point wins over /home
        ("/home/ubuntu/sharedx", "ext4"),  # a sibling whose name starts alike is not under the mount
        ("/mnt/my bucket/grutune", "fuse.mountpoint-s3"),  # the mount table escapes a space as \040
        ("/var/lib/containers/x", "fuse.fuse-overlayfs"),
        ("/tmp/x", "overlay"),
    ],
)
def test_the_filesystem_of_a_path_is_its_closest_mount(path, kind):
    assert filesystem_type(path, MOUNTS) == kind


def test_this_machines_mount_table_is_read():
    assert filesystem_type(ROOT) is not None  # Linux: /proc/self/mounts


def test_a_cluster_can_grow_where_its_autoscaler_adds_workers_on_other_machines():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert can_grow(config)  # 0 to 4 GPU workers
    assert not can_grow(None)  # no autoscaler config seen
    assert not can_grow({**config, "max_workers": 0})
    workers_off = {
        **config,
        "available_node_types": {
            name: {**t, "max_workers": 0} if name != config["head_node_type"] else t
            for name, t in config["available_node_types"].items()
        },
    }
    assert not can_grow(workers_off)
    assert not can_grow({**config, "provider": {"type": "fake_multinode"}})  # its nodes are processes on this machine


def test_without_ray_there_is_nothing_to_check(tmp_path):
    assert not ray.is_initialized()
    require_shared_storage(tmp_path / "sweeps", "search.storage", None)
    assert not (tmp_path / "sweeps").exists()  # not even looked at


# --------------------------------------------------------------------------- Ray: real nodes


@pytest.fixture
def two_nodes():
    """A head and a worker node, both on this machine, this process's Ray joined to them."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def alive_nodes() -> int:
    return sum(n["Alive"] for n in ray.nodes())


@pytest.fixture
def blind_node(two_nodes, tmp_path):
    """A third node of the cluster, started by `ray start` in a mount namespace of its own, where `tmp_path/shared`
    is an empty tmpfs: that node does not see what the others write there. Yields the folder."""
    from test_cluster import stop_cluster

    shared = tmp_path / "shared"
    shared.mkdir()
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine allows no mount namespace (unshare -m needs CAP_SYS_ADMIN)")
    temp_dir = tempfile.mkdtemp(prefix="rn-", dir=os.environ.get("RAY_TMPDIR", "/tmp"))  # short: socket paths
    ray_bin = str(Path(sys.executable).parent / "ray")
    node = subprocess.Popen(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs none "$0" && exec "$1" start --address="$2" --num-cpus=1 --temp-dir="$3" --block',
            str(shared),
            ray_bin,
            two_nodes.address,
            temp_dir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while alive_nodes() < 3 and node.poll() is None and time.time() < deadline:
            time.sleep(0.2)  # polling for the node to join, not waiting for it to happen
        assert alive_nodes() == 3, node.stderr.read().decode()[-3000:] if node.poll() is not None else "no join"
        yield shared
    finally:
        stop_cluster(temp_dir)
        node.terminate()
        node.wait(timeout=30)


@pytest.mark.ray
def test_a_folder_every_node_sees_is_accepted(two_nodes, tmp_path):
    """Two nodes on one machine see the same files: a local folder is shared storage for them, and the check leaves
    nothing behind."""
    assert alive_nodes() == 2
    folder = tmp_path / "sweeps"
    require_shared_storage(folder, "search.storage", str(folder))
    assert folder.is_dir() and not list(folder.iterdir())


@pytest.mark.ray
def test_a_folder_another_node_cannot_see_is_refused_naming_the_key(blind_node, tmp_path):
    """A node that does not see the storage folder: the sweep's folder (`storage.place`, the driver's first step)
    and a final stage's checkpoints (`placement`) are refused in one line naming the key, its value and the fix."""
    with pytest.raises(ConfigError) as refused:
        place("mnist-abc", str(blind_node), "search.storage", tmp_path / "state")
    message = str(refused.value)
    assert message.startswith(f"search.storage is {blind_node}: {blind_node}/mnist-abc is a folder that 1 other node")
    assert "s3://" in message and "NFS" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"^gan_search.storage is .*shared: .* 1 other node"):
        placement(FinalResources(cpu=1, gpu=0), key="gan", storage=str(blind_node), max_failures=0)
    assert not list(blind_node.rglob(".grutune-shared-*"))


@pytest.mark.ray
def test_local_storage_is_refused_where_the_autoscaler_adds_nodes(
    two_nodes, tmp_path, monkeypatch, write_params, prepared_mnist
):
    """With the autoscaler config of cluster.yaml (up to 4 GPU workers on other machines), a sweep whose storage is
    this machine's own disk stops before any training, naming the key; so does the train stage's placement. A cloud
    URI is not checked."""
    monkeypatch.setenv(AUTOSCALING_CONFIG_ENV, str(ROOT / "cluster.yaml"))
    monkeypatch.chdir(tmp_path)
    params = load_params(tiny_writer(write_params)(tmp_path / "params.yaml"))
    data = load_prepared(prepared_mnist(n_train=600, n_test=100, val_fraction=0.2))
    state = tmp_path / "state"
    with pytest.raises(
        ConfigError, match=r"^search.storage is null \(the default\): .* own disk .* the autoscaler adds"
    ):
        run_classifier_sweep(params, data, state_dir=state, remote=True)
    assert not list(state.glob("*/tune-*"))  # no Tune experiment: nothing trained
    with pytest.raises(ConfigError, match=r"^search.storage is null .*GRUTUNE_STORAGE=s3://"):
        placement(FinalResources(cpu=1, gpu=1), key="train", storage=None, max_failures=0)
    with pytest.raises(ConfigError, match=r"^gan_search.storage is file:///"):
        place("gan-abc", f"file://{tmp_path}/sweeps", "gan_search.storage", state)
    assert place("gan-abc", "s3://bucket/grutune", "gan_search.storage", state).journal_uri.startswith("s3://")


@pytest.mark.ray
def test_the_search_stage_on_a_cluster_that_grows_stops_in_one_line(two_nodes, tmp_path, write_params, prepared_mnist):
    """The search stage as a user runs it on a `ray up` head (RAY_ADDRESS, the autoscaler's config) with params
    whose storage is null, as `dvc repro` runs params.yaml as committed: exit 2, one line naming the key, its value
    and the fix, no traceback, no Tune experiment."""
    tiny_writer(write_params)(tmp_path / "params.yaml")
    prepared = prepared_mnist(n_train=600, n_test=100, val_fraction=0.2)
    outputs = ["best", "trials", "metrics", "details", "progress", "progress-time", "pareto"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "GRUTUNE_"))}
    env.update(
        RAY_ADDRESS=two_nodes.address, WANDB_MODE="offline", **{AUTOSCALING_CONFIG_ENV: str(ROOT / "cluster.yaml")}
    )
    stage = subprocess.run(
        [sys.executable, str(ROOT / "pipeline/search.py"), "mnist", str(prepared)]
        + [arg for name in outputs for arg in (f"--{name}", f"out/{name}")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert stage.returncode == 2, stage.stdout[-2000:] + stage.stderr[-2000:]
    assert "Traceback" not in stage.stdout + stage.stderr
    last = stage.stderr.strip().splitlines()[-1]
    assert last.startswith("error: search.storage is null (the default): ") and "GRUTUNE_STORAGE=s3://" in last, last
    assert not list(tmp_path.glob(".grutune/sweeps/*/tune-*"))
