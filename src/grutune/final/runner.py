"""Where a final stage's job runs: the one seam between the `train`, `gan` and `gan_eval` stages and the machine.

A stage describes its work as a `Job` and hands it to the `Runner` that `runner_for` chooses from the stage's params
section, as Lightning hands a model to a `Strategy`. A runner has two kinds:

- `InProcess`: in the stage's own process, on its GPU where one is visible (a laptop, or wherever the stage would
  have to start a Ray of its own);
- `OnRayTrain`: on the Ray cluster the stage joined (RAY_ADDRESS, or `ray start` on this node), as Ray Train workers
  with the stage's resources, a checkpoint each epoch and a restart after a lost node (the protocol: ray_train.py).

Both run the same `job.run` with the same seed and hand back the same result, which the stage writes where dvc.yaml
says. No stage asks where it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

from grutune.cluster import join_cluster
from grutune.config import GanParams, TrainParams
from grutune.final.ray_train import Placement, RunHooks, placement, run_on_worker
from grutune.training import pick_device

__all__ = ["InProcess", "Job", "OnRayTrain", "Runner", "runner_for"]

T = TypeVar("T", covariant=True)


class Job(Protocol[T]):
    """A final stage's work, wherever it runs: a frozen object holding its inputs (the data too), so that it travels
    to a Ray Train worker as one piece.

    `run` does the work on `device` with the runner's `hooks` and returns its result as a dict of tensors and plain
    values (what a checkpoint can hold, loaded with weights_only=True); `outcome` turns that result into what the
    stage writes. With `hooks.checkpoint`, `run` calls it with the run's state after every epoch; such a state given
    back as `hooks.resume` continues the run after that epoch as if it had not stopped. `hooks.shard` (rank, world
    size) is a data-parallel worker's place, where the job supports several.
    """

    @property
    def name(self) -> str:
        """The stage and dataset, such as "train-mnist": the start of a Ray Train run's name."""

    @property
    def epochs(self) -> int:
        """How many epochs it trains (0: none), for the worker's log."""

    @property
    def shown(self) -> tuple[str, ...]:
        """The per-epoch metrics the worker's log shows."""

    def identity(self) -> dict[str, Any]:
        """Everything besides grutune's code that decides its result: a Ray Train run is named by it."""

    def run(self, device: torch.device, hooks: RunHooks) -> dict: ...

    def outcome(self, result: dict) -> T: ...


def _nothing(m: dict) -> None:
    pass


class Runner(ABC):
    """Where a final stage's job runs; `str(runner)` says where, in words."""

    @abstractmethod
    def run(self, job: Job[T], on_epoch: Callable[[dict], None] = _nothing) -> T:
        """The job's outcome; `on_epoch(metrics)` in this process after each epoch it trains."""


@dataclass(frozen=True)
class InProcess(Runner):
    """In this process, on `device`, with a progress bar within each epoch on a terminal."""

    device: torch.device

    def __str__(self) -> str:
        return str(self.device)

    def run(self, job: Job[T], on_epoch: Callable[[dict], None] = _nothing) -> T:
        return job.outcome(job.run(self.device, RunHooks(on_epoch, progress=True)))


@dataclass(frozen=True)
class OnRayTrain(Runner):
    """On the Ray cluster this process joined, as Ray Train workers placed by `where`: a checkpoint each epoch under
    `where.storage`, a restart from the last one after a lost node, the epochs relayed here."""

    where: Placement

    def __str__(self) -> str:
        return f"the Ray cluster ({self.where})"

    def run(self, job: Job[T], on_epoch: Callable[[dict], None] = _nothing) -> T:
        return job.outcome(run_on_worker(job, where=self.where, on_epoch=on_epoch))


def runner_for(section: TrainParams | GanParams, *, key: str, storage: str | None) -> Runner:
    """Where the stage whose params section is `section` (named `key` in params.yaml: "train" or "gan") runs: on the
    Ray cluster it joins, with the section's resources and max_failures and its checkpoints under `<storage>/final`
    (the stage's sweep's storage param), else in this process on its GPU where one is visible. Joins a running
    cluster; starts none."""
    if join_cluster():
        return OnRayTrain(placement(section.resources, key=key, storage=storage, max_failures=section.max_failures))
    return InProcess(pick_device())
