"""What the Ray cluster a stage runs on has and can grow to: joining it, the resources a trial or a final stage's
worker asks of it (never quietly less than the user asked: see `trial_resources`), and whether a storage folder is
one that all its nodes reach (`require_shared_storage`)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import ray
import yaml

from grutune.errors import ConfigError

__all__ = [
    "AUTOSCALING_CONFIG",
    "AUTOSCALING_CONFIG_ENV",
    "SHARED_FILESYSTEMS",
    "autoscaler_slots",
    "autoscaling_config",
    "can_grow",
    "filesystem_type",
    "init_ray",
    "join_cluster",
    "largest_node_cpus",
    "quiet_ray_notices",
    "require_shared_storage",
    "show_resources",
    "trial_resources",
    "trial_slots",
]

log = logging.getLogger(__name__)


def _quiet_auth_notice(record: logging.LogRecord) -> bool:
    """Drop Ray's notice that token authentication is on by default (it stays on; the notice is all that goes)."""
    return not (record.levelno < logging.ERROR and "authentication" in record.name)


def quiet_ray_notices() -> None:
    """Quiet Ray's notice that token authentication is on by default, on Ray's own log handler (the records of
    Ray's modules reach it). Authentication stays on."""
    for handler in logging.getLogger("ray").handlers:
        if _quiet_auth_notice not in handler.filters:
            handler.addFilter(_quiet_auth_notice)


def assigned_device():
    """The torch device Ray gave the task or actor this runs in (a trial, a Ray Train worker): its GPU where Ray
    assigned one, else the CPU, also on a node whose GPUs this process can see. Newer Ray (2.60; 2.52 still hid
    them) leaves CUDA_VISIBLE_DEVICES as it is for work that asked for no GPU, so `torch.cuda.is_available()` alone
    would put a CPU trial on a GPU that others hold. A GPU that Ray assigned but torch cannot use (a node that
    declares a GPU without CUDA) gives the CPU. Only inside Ray: in a plain process, `training.pick_device`."""
    import torch

    # ray-project/ray#62492 made "leave CUDA_VISIBLE_DEVICES alone at num_gpus=0" Ray's default (2.52 still warned)
    if ray.get_gpu_ids() and torch.cuda.is_available():
        from ray.train.torch import get_device  # Ray's own answer: the assigned GPU's index among the visible ones

        return get_device()
    return torch.device("cpu")


def init_ray() -> bool:
    """Join a running Ray cluster (RAY_ADDRESS, or else the latest Ray started on this machine), else start one
    (also where RAY_ADDRESS=local).

    Returns True when joining an existing cluster. Token authentication stays on (Ray's default); only Ray's notice
    that it is on by default is quieted. A Ray started here runs without its dashboard. Trial processes' own output
    stays in Ray's logs: Tune reports each trial's progress and errors (with the traceback saved in the trial's
    directory), and Ray's worker-shutdown noise stays out of the run's output.
    """
    quiet_ray_notices()
    if ray.is_initialized():
        return True
    # Ray's own lookup: RAY_ADDRESS, else a cluster started with `ray start` on this machine, else a new local one.
    joining = os.environ.get("RAY_ADDRESS", "local") != "local"
    ctx = ray.init(include_dashboard=None if joining else False, log_to_driver=False)
    # A session's name ends with the id of the process that started it: this one, if no cluster was running.
    return not ctx.address_info["session_dir"].endswith(f"_{os.getpid()}")


def join_cluster() -> bool:
    """Join the Ray cluster in RAY_ADDRESS, or else the latest one started on this machine, as `ray.init()` finds
    it; start none (False). RAY_ADDRESS=local, Ray's way of asking for a Ray of one's own, joins none either. The
    processes' own output stays in Ray's logs on their nodes."""
    quiet_ray_notices()
    if ray.is_initialized():
        return True
    if os.environ.get("RAY_ADDRESS") == "local":
        return False
    try:
        ray.init(address="auto", log_to_driver=False)
    except ConnectionError:
        return False
    return True


def trial_resources(resources, remote: bool, key: str = "search", what: str = "trial") -> dict[str, float]:
    """Per-trial resources from params (section `key`), changed only where trials could never start (`what`: what
    holds them, as the messages name it: a sweep's trial, a final stage's worker).

    On a Ray started here, they are capped to what this machine has. On a cluster they are taken as asked: the
    autoscaler adds the nodes they need. Where the cluster has no GPU and no autoscaler config that grutune can see
    adds one (`autoscaling_config`), the trials keep their GPU request and wait for a GPU node, and the stage says
    so once; they train on CPUs instead only where `resources.cpu_fallback` allows it (a fixed CPU cluster, such as
    a few `ray start` nodes). Where the autoscaler's config is seen and adds no GPU either, no GPU can ever come:
    without `cpu_fallback` that is an error naming the settings. Ray's `memory` resource is asked for only where
    `resources.memory` is set.
    """
    want = {"cpu": resources.cpu, "gpu": resources.gpu}
    if resources.memory:
        want["memory"] = float(resources.memory)
    have = ray.cluster_resources()
    config = autoscaling_config() if remote else None
    gpus = have.get("GPU", 0) or any(
        t.get("resources", {}).get("GPU", 0) for t in (config or {}).get("available_node_types", {}).values()
    )
    drop_gpu = not gpus and (not remote or resources.cpu_fallback)
    got = {
        "cpu": want["cpu"] if remote else min(want["cpu"], have.get("CPU", 1)),
        "gpu": 0.0 if drop_gpu else want["gpu"],
    }
    if "memory" in want:
        got["memory"] = want["memory"] if remote else min(want["memory"], have.get("memory", 0))
    if remote and want["gpu"] and not gpus and not drop_gpu and config is not None:
        raise ConfigError(
            f"{key}.resources.gpu is {want['gpu']:g}, but this cluster has no GPU and its autoscaler config "
            f"({os.environ.get(AUTOSCALING_CONFIG_ENV) or AUTOSCALING_CONFIG}) has no node type with one: set "
            f"{key}.resources.gpu: 0, or {key}.resources.cpu_fallback: true to train on CPUs"
        )
    if remote and want["gpu"] and not gpus and not drop_gpu:
        log.warning(
            "resources per %s %s: this cluster has no GPU now, and no autoscaler config that adds one is on this "
            "node (%s, or %s); the %ss wait for a GPU node. To train on CPUs instead, set %s.resources.gpu: 0 or "
            "%s.resources.cpu_fallback: true",
            what,
            show_resources(want),
            AUTOSCALING_CONFIG,
            AUTOSCALING_CONFIG_ENV,
            what,
            key,
            key,
        )
    elif got != want:
        where = "this cluster's" if remote else "this machine's"
        had = {k: have.get(k.upper() if k != "memory" else k, 0) for k in want}
        why = f" ({key}.resources.cpu_fallback)" if remote and drop_gpu else ""
        log.warning(
            "resources per %s %s exceed %s %s: each %s gets %s%s",
            what,
            show_resources(want),
            where,
            show_resources(had),
            what,
            show_resources(got),
            why,
        )
    return got


def show_resources(resources: dict[str, float]) -> str:
    return (
        "{"
        + ", ".join(f"'{k}': " + (f"{v / 2**20:.0f}MiB" if k == "memory" else f"{v:g}") for k, v in resources.items())
        + "}"
    )


AUTOSCALING_CONFIG_ENV = "GRUTUNE_AUTOSCALING_CONFIG"  # the autoscaler's cluster config, where it is not the default
AUTOSCALING_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` puts it on the head node


def _fits(node: dict[str, float], resources: dict[str, float]) -> int:
    """How many trials of `resources` one node of these resources holds. A node type that declares no `memory` (an
    autoscaler's, whose memory comes from its instance type) is not limited by it."""
    n = int(node.get("CPU", 0) // resources["cpu"]) if resources["cpu"] else 10**6
    if resources.get("memory") and "memory" in node:
        n = min(n, int(node["memory"] // resources["memory"]))
    return min(n, int(node.get("GPU", 0) // resources["gpu"])) if resources["gpu"] else n


def autoscaler_slots(config: dict, resources: dict[str, float]) -> int:
    """Trial slots of an autoscaling cluster at its largest: the head plus every worker type at its `max_workers`,
    within the cluster's own `max_workers`, the roomiest types first."""
    types = config.get("available_node_types", {})
    head = config.get("head_node_type")
    slots = _fits(types.get(head, {}).get("resources", {}), resources) if head in types else 0
    budget = config.get("max_workers", 10**6)
    for per_node, count in sorted(
        (
            (_fits(t.get("resources", {}), resources), t.get("max_workers", 0))
            for name, t in types.items()
            if name != head
        ),
        reverse=True,
    ):
        count = min(count, budget)
        slots, budget = slots + per_node * count, budget - count
    return slots


def autoscaling_config() -> dict | None:
    """The autoscaler's cluster config, where this node has one (a `ray up` head, or GRUTUNE_AUTOSCALING_CONFIG)."""
    path = Path(os.environ.get(AUTOSCALING_CONFIG_ENV) or AUTOSCALING_CONFIG).expanduser()
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def trial_slots(resources: dict[str, float], num_samples: int, remote: bool) -> int:
    """How many trials of these resources the Ray cluster holds at once (on an autoscaling cluster, `remote`: once
    it has grown to its largest; on a cluster that has no room for one yet and whose autoscaler grutune cannot see:
    all of them), at most `num_samples` and at least 1."""
    # Node by node: a trial's bundle lives on one node, so CPUs (or memory) left over on two nodes do not add up.
    slots = sum(_fits(node["Resources"], resources) for node in ray.nodes() if node["Alive"])
    if remote and (config := autoscaling_config()) is not None:
        slots = max(slots, autoscaler_slots(config, resources))
    elif remote and not slots:
        # Nothing here can run a trial yet, and how far the cluster grows is unknown (its autoscaler's config is not
        # on this node): every trial is kept pending, so the autoscaler sees the whole demand and adds what it can.
        slots = num_samples
    return max(1, min(slots, num_samples))


def largest_node_cpus() -> float:
    """The CPUs of the cluster's largest node: alive now, or of a node type its autoscaler may add (where grutune sees
    its config)."""
    cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]]
    config = autoscaling_config() or {}
    cpus += [t.get("resources", {}).get("CPU", 0) for t in config.get("available_node_types", {}).values()]
    return max([c for c in cpus if c] or [1])


# --------------------------------------------------------------------------- storage that every node reaches

# Filesystems that other machines can mount too (NFS, EFS, SMB, Lustre and other cluster filesystems, FUSE mounts of
# object stores): a folder on one of them may be shared by every node. Any other type is this machine's own disk.
SHARED_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.ceph",
        "fuse.cephfs",
        "fuse.juicefs",
        "fuse.s3fs",
        "fuse.mountpoint-s3",
        "fuse.gcsfuse",
        "fuse.sshfs",
        "fuse.efs",
    }
)


def filesystem_type(path: str | os.PathLike, mounts: str | None = None) -> str | None:
    """The type of the filesystem holding `path` on this node, from a mount table in /proc/self/mounts' format
    (`mounts`; by default this process's): the mount point that contains the path most closely. None where there is
    no mount table to read (not Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return None
    path = Path(os.path.abspath(path))
    best, kind = -1, None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\"))
        if (path == point or point in path.parents) and len(point.parts) > best:
            best, kind = len(point.parts), fields[2]
    return kind


def can_grow(config: dict | None) -> bool:
    """Whether an autoscaler of this cluster config may add nodes on other machines: some worker type with
    `max_workers` above 0, within the cluster's own. Ray's fake multi-node provider, whose nodes are processes on
    this machine, adds none."""
    if not config or config.get("provider", {}).get("type") == "fake_multinode" or config.get("max_workers", 1) <= 0:
        return False
    head = config.get("head_node_type")
    return any(
        t.get("max_workers", 0) > 0 for name, t in config.get("available_node_types", {}).items() if name != head
    )


@ray.remote(num_cpus=0)
def _read_marker(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _nodes_not_seeing(folder: Path, timeout_s: float = 120.0) -> list[str]:
    """The addresses of the alive nodes other than this one that do not see the file this node writes in `folder`
    (a task on each reads it back). A node that does not answer in time is not counted: it may be gone."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
    if not others:
        return []
    token = secrets.token_hex(16)
    marker = folder / f".grutune-shared-{token[:12]}"
    marker.write_text(token)
    try:
        asks = {
            _read_marker.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
            ).remote(str(marker)): n["NodeManagerAddress"]
            for n in others
        }
        ready, late = ray.wait(list(asks), num_returns=len(asks), timeout=timeout_s)
        if late:
            log.warning("%d node(s) did not say in %gs whether they see %s", len(late), timeout_s, folder)
        blind = []
        for ref in ready:
            try:
                seen = ray.get(ref)
            except ray.exceptions.RayError:  # its node went away meanwhile
                continue
            if seen != token:
                blind.append(asks[ref])
        return blind
    finally:
        marker.unlink(missing_ok=True)


def require_shared_storage(folder: str | os.PathLike, key: str, value: str | None) -> None:
    """Refuse a storage folder on this node's own disk where other nodes write to it, before any training: Tune's
    trials and Ray Train's workers write their checkpoints from the node they run on, so a folder only the head sees
    fails each of them on a worker after its retries (Ray: "A local path on the head node is not accessible by
    worker nodes").

    `folder` is the storage's folder on this node (a path, or a file:// URI's), created here; `key` and `value` name
    the setting. Every other alive node must see a file written there now, and where the cluster's autoscaler
    (`autoscaling_config`) may add nodes, the folder must be on a filesystem that other machines mount
    (`SHARED_FILESYSTEMS`: NFS, EFS, ...). Where Ray is not running here, there is nothing to check. Cloud URIs
    (s3://, gs://) are not local and need no check.
    """
    if not ray.is_initialized():
        return
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        blind = _nodes_not_seeing(folder)
    except OSError as e:
        raise ConfigError(f"{key}: cannot write to {folder}: {e.strerror or e}") from None
    kind = filesystem_type(folder)
    config = autoscaling_config()
    if blind:
        shown_nodes = ", ".join(sorted(set(blind))[:3]) + (", ..." if len(set(blind)) > 3 else "")
        why = f"{folder} is a folder that {len(blind)} other node(s) of this Ray cluster do not see ({shown_nodes})"
    elif can_grow(config) and kind not in SHARED_FILESYSTEMS:
        why = (
            f"{folder} is on this machine's own disk ({kind or 'no mount table'}), which the nodes that the "
            f"autoscaler adds will not see ({os.environ.get(AUTOSCALING_CONFIG_ENV) or AUTOSCALING_CONFIG})"
        )
    else:
        return
    shown = "null (the default)" if value is None else value
    raise ConfigError(
        f"{key} is {shown}: {why}, so every trial or worker there would fail; set {key} to storage that every node "
        f"reaches, an s3:// URI or a path on a shared mount (NFS) that every node has (GRUTUNE_STORAGE=s3://YOUR-"
        f"BUCKET/grutune before `dvc exp run`, or -S {key}=...; docs/cluster.md)"
    )
