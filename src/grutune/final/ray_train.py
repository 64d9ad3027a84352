"""A final stage's job on the Ray cluster it joined, through Ray Train: the protocol, for a run that loses its
worker or node.

When a final stage (`train`, `gan`, `gan_eval`) joins a running Ray cluster (RAY_ADDRESS, or one started with
`ray start` on this node: `cluster.join_cluster`), its job runs as Ray Train workers (`TorchTrainer`) with the
stage's `resources`, so the autoscaler adds a GPU node for it and the head needs none (grutune.final.runner chooses).

- after every epoch the worker reports a checkpoint: one file, `state.pt`, a dict of tensors and plain values (loaded
  with weights_only=True), through `ray.train.report`; Ray Train keeps the last two under `<storage>/final/<name>`;
- the run's name is a hash of everything that decides its result (stage, config, data, epochs, seed, and grutune's
  source code), so Ray Train restarts a lost worker from the last checkpoint (`FailureConfig(max_failures)`), and a
  stage run again after its driver died resumes the same run, while any change of input or of grutune's code starts
  a new one (a finished run is never handed back to code that would have trained otherwise);
- the last report holds the result (the final weights and what the stage writes), which the stage reads back on the
  head and writes where dvc.yaml says, as on a laptop; a restarted run that had finished reports it again;
- a failure of the work itself (a collapsed GAN, a diverged training) is that last report, not a lost worker: Ray
  Train does not retry it, and the stage fails with the same message as on a laptop.

A job's `run` is handed its hooks as one `RunHooks`, here filled from Ray Train (the worker's log, the state to resume
from, a checkpoint each epoch, the worker's shard); grutune.final.runner's `InProcess` fills the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import train
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
    TrainingFailedError,
    UserCallback,
)
from ray.train.torch import TorchConfig, TorchTrainer
from ray.util.queue import Empty, Queue
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from grutune.cluster import (
    assigned_device,
    largest_node_cpus,
    require_shared_storage,
    show_resources,
    trial_resources,
)
from grutune.config import FinalResources
from grutune.errors import GrutuneError, NonFiniteLoss
from grutune.io import is_uri, workspace_root

__all__ = [
    "STATE",
    "Placement",
    "RunHooks",
    "code_digest",
    "placement",
    "report_state",
    "resumed_state",
    "run_name",
    "run_on_worker",
]

log = logging.getLogger(__name__)

STATE = "state.pt"  # the one file of every checkpoint a final stage reports
PACKAGE = Path(__file__).resolve().parents[1]  # src/grutune


# --------------------------------------------------------------------------- what a job's run is handed


@dataclass(frozen=True)
class RunHooks:
    """How a final run is watched, checkpointed and resumed, built once by whatever runs it: `on_epoch(metrics)`
    after each epoch; a progress bar within each epoch (`progress`, on a terminal); with `checkpoint`, the run's
    state after every epoch, which given back as `resume` continues the run after that epoch as if it had not
    stopped; `shard` (rank, world size), a data-parallel worker's place."""

    on_epoch: Callable[[dict], None] = lambda m: None
    progress: bool = False
    resume: dict | None = None
    checkpoint: Callable[[dict], None] | None = None
    shard: tuple[int, int] | None = None


# --------------------------------------------------------------------------- where the job runs


@dataclass(frozen=True)
class Placement:
    """What a final stage's Ray Train worker holds, where its checkpoints live, and how often it may restart."""

    resources: dict[str, float]  # {"cpu", "gpu"[, "memory"]} of each worker
    storage: str  # Ray Train's storage_path: a path every node reaches, or a URI
    max_failures: int
    num_workers: int = 1  # above 1: data-parallel

    def __str__(self) -> str:
        workers = "one Ray Train worker" if self.num_workers == 1 else f"{self.num_workers} Ray Train workers"
        return f"{workers} of {show_resources(self.resources)}"

    def scaling(self) -> ScalingConfig:
        res = {"CPU": self.resources["cpu"]}
        if self.resources["gpu"]:
            res["GPU"] = self.resources["gpu"]
        if self.resources.get("memory"):
            res["memory"] = self.resources["memory"]
        return ScalingConfig(
            num_workers=self.num_workers, use_gpu=bool(self.resources["gpu"]), resources_per_worker=res
        )


def placement(resources: FinalResources, *, key: str, storage: str | None, max_failures: int) -> Placement:
    """The stage's worker on the cluster it joined: a GPU where the cluster has or can add one (as a sweep's trials
    decide: `cluster.trial_resources`, no quiet downgrade), with `cpu: null` one CPU beside it, else every CPU of the
    largest node. Checkpoints go to `<storage>/final` (storage: the sweep's `storage` param, else .grutune/)."""
    asked = resources.model_copy(update={"cpu": resources.cpu or 1.0})
    got = trial_resources(asked, remote=True, key=key, what="worker")
    if resources.cpu is None:
        got["cpu"] = 1.0 if got["gpu"] else largest_node_cpus()
    root = storage or str(workspace_root() / ".grutune")
    if not is_uri(root):
        root = str((workspace_root() / root).resolve())
        # the storage param of the stage's sweep: train's is search.storage, gan's and gan_eval's gan_search.storage
        require_shared_storage(root, f"{'search' if key == 'train' else 'gan_search'}.storage", storage)
    return Placement(
        resources=got,
        storage=f"{root.rstrip('/')}/final",
        max_failures=max_failures,
        num_workers=resources.num_workers,
    )


def code_digest(package: Path = PACKAGE) -> str:
    """A hash of grutune's own source (every module of the package, its subpackages' too): code is an input of a
    run too."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def run_name(stage: str, **inputs: Any) -> str:
    """The run's name: the stage and a hash of everything that decides its result, grutune's code included (see the
    module's protocol)."""
    blob = json.dumps({**inputs, "code": code_digest()}, sort_keys=True, default=str)
    return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


class _Relay(UserCallback):
    """On Ray Train's controller: passes each epoch the worker reported (after its checkpoint is registered) and
    each failure of the worker to the stage's process, through a Ray queue."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint) -> None:
        self.queue.put(("epoch", metrics[0]))

    def after_exception(self, run_context, worker_exceptions) -> None:
        why = "; ".join(str(e).strip().splitlines()[0] for e in worker_exceptions.values() if str(e).strip())
        self.queue.put(("failure", why or "a worker failed"))


def run_on_worker(job: Any, *, where: Placement, on_epoch: Callable[[dict], None]) -> dict:
    """Run `job` (a grutune.final.runner.Job) on Ray Train workers, the job and its data sent once through Ray's
    object store; `on_epoch(metrics)` here, for each epoch it reports; the result of its last report (read back here,
    on the CPU).

    Ray's worker logs stay on their nodes (Ray Train's own are many lines per epoch): the stage shows its epochs
    and any lost worker through `_Relay`.
    """
    name = run_name(job.name, **job.identity())
    backend = "nccl" if where.resources["gpu"] and torch.distributed.is_nccl_available() else "gloo"
    # On this process's node (the head), which outlives any worker node; no CPU, so a head with none holds it too
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"job": ray.put(job)},
        torch_config=TorchConfig(backend=backend),
        scaling_config=where.scaling(),
        run_config=RunConfig(
            name=name,
            storage_path=where.storage,
            failure_config=FailureConfig(max_failures=where.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[_Relay(queue)],
        ),
    )
    log.info(
        "running %s on the Ray cluster: %s, checkpoints in %s/%s",
        name,
        where,
        where.storage,
        name,
    )
    done, failures = threading.Event(), 0

    def relay() -> None:
        nonlocal failures
        while not (done.is_set() and queue.empty()):
            try:
                kind, value = queue.get(timeout=0.5)
            except Empty:
                continue
            if kind == "epoch" and "result" not in value:
                on_epoch(value)
            elif kind == "failure":
                failures += 1
                log.warning(
                    "%s lost its worker (%s): failure %d, of %d that Ray Train restarts from the last epoch's "
                    "checkpoint",
                    name,
                    value,
                    failures,
                    where.max_failures,
                )

    shown = threading.Thread(target=relay, name="grutune-relay", daemon=True)
    shown.start()
    try:
        result = trainer.fit()
    except TrainingFailedError as e:
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise GrutuneError(
            f"{name} failed on the Ray cluster after {failures} lost worker(s) ({first.strip()}); its checkpoints "
            f"stay in {where.storage}/{name}, and running the stage again resumes from the last one (the workers' "
            f"own logs are in Ray's logs on their nodes)"
        ) from None
    finally:
        done.set()
        shown.join(timeout=30)
        ray.kill(queue.actor)
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE, map_location="cpu", weights_only=True)
    if "error" in state:  # the work itself refused (a collapsed GAN, a diverged training): as on a laptop
        raise GrutuneError(state["error"])
    return state


# --------------------------------------------------------------------------- in the worker


def _worker(config: dict) -> None:
    """The worker's entry point: the job, where a failure of the work itself (not of a node) is reported as the run's
    result, so that Ray Train does not retry what would fail again, and the stage says it as on a laptop."""
    try:
        _run_job(ray.get(config["job"]))
    except (GrutuneError, NonFiniteLoss) as e:
        report_state({"result": 1}, {"result": True, "error": f"{e}"})


def _run_job(job: Any) -> None:
    """The job on this worker: resumed from the run's last checkpoint where Ray Train restarted it, a checkpoint
    reported after every epoch, and its result as the last report, with where it ran."""
    device, node = assigned_device(), ray.get_runtime_context().get_node_id()
    resume = resumed_state(device)
    if resume is not None and "result" in resume:  # the run had finished: report its result again
        report_state({"result": 1}, resume)
        return
    if resume is not None:
        print(f"resuming after epoch {resume['epoch']} of {job.epochs} on node {node}", flush=True)

    def on_epoch(m: dict) -> None:  # the worker's own log, on its node
        values = "".join(f"  {k} {m[k]:.4f}" for k in job.shown if k in m)
        print(f"epoch {m['epoch']}/{job.epochs}{values}  {m['images_per_s']:.0f} images/s", flush=True)

    context = train.get_context()
    result = job.run(
        device,
        RunHooks(
            on_epoch,
            resume=resume,
            checkpoint=lambda state: report_state(state["history"][-1], {**state, "node_id": node}),
            shard=(context.get_world_rank(), context.get_world_size()),
        ),
    )
    report_state(
        {"result": 1},
        {
            "result": True,
            **result,
            "workers": context.get_world_size(),
            "node_id": node,
            "resumed_from_epoch": 0 if resume is None else resume["epoch"],
        },
    )


def resumed_state(device: torch.device) -> dict | None:
    """The state of the run's last checkpoint, where Ray Train restarted it after a failure (or a new driver)."""
    ckpt = train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return torch.load(Path(d) / STATE, map_location=device, weights_only=True)


def report_state(metrics: dict, state: dict) -> None:
    """Report an epoch's metrics with the run's state as a checkpoint (one file; Ray Train uploads it at once). Of
    data-parallel workers, every one reports and the first writes the checkpoint (they hold the same weights)."""
    if train.get_context().get_world_rank() != 0:
        train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(state, Path(d) / STATE)
        train.report(metrics, checkpoint=Checkpoint.from_directory(d))
