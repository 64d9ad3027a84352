"""The skeleton of every Tune trial (as Ray Tune's examples, a plain function of `config`): replay a result the
Optuna journal already holds, restore from a checkpoint, report with a checkpoint every epoch, and stop at once on
divergence or collapse. A trial kind (grutune.trials.classifier, grutune.trials.gan) only says how to build, train
and score; `sweep_on` runs its sweep on one dataset.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from pydantic import BaseModel
from ray import tune

from grutune.cluster import assigned_device
from grutune.data import Prepared
from grutune.errors import Collapsed, NonFiniteLoss
from grutune.sweep.definition import Sweep
from grutune.sweep.driver import run_sweep
from grutune.sweep.journal import finished_result
from grutune.sweep.results import SearchResult

__all__ = ["CHECKPOINT", "TrialJob", "TrialSettings", "run_epochs", "sweep_on"]

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrialSettings:
    """What the driver hands every trial besides its config. A trial kind builds it; the driver fills in the last
    three fields."""

    in_shape: tuple[int, int, int]  # (H, W, C)
    max_epochs: int
    train_subset: int | None
    seed: int
    threads: int = 1  # torch threads: the trial's CPUs
    journal: str | None = None  # the sweep's Optuna journal, for replaying finished trials
    study: str | None = None


@dataclass
class TrialJob:
    """What a trial kind gives the skeleton."""

    parts: dict[str, Any]  # name -> module or optimiser; checkpointed by state_dict under that name
    kwargs: dict[str, dict]  # name -> a module's constructor arguments; checkpointed as "<name>_kwargs"
    fit: Callable[[int, Callable[[dict], None]], Any]  # (start_epoch, on_epoch) -> trains up to max_epochs
    score: Callable[[dict], dict] = lambda m: {}  # extra metrics for an epoch; may raise Collapsed


def run_epochs(
    config: dict,
    settings: TrialSettings,
    *,
    hp_model: type[BaseModel],
    metric: str,
    worst: float,
    build: Callable[[Any, torch.device], TrialJob],
) -> None:
    """The skeleton of every trial: build, restore, train reporting `metric` and a checkpoint each epoch."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # not one "checkpoint created" line per epoch
    done = finished_result(settings.journal, settings.study, tune.get_context().get_trial_id(), metric)
    if done is not None:
        tune.report(done)  # finished before a crash that Tune's last snapshot missed: the journal knows better
        return
    torch.set_num_threads(settings.threads)
    hp = hp_model(**{k: config[k] for k in hp_model.model_fields})
    device = assigned_device()  # the GPU Ray gave this trial, else the CPU
    torch.manual_seed(settings.seed)
    job = build(hp, device)
    start_epoch = 0
    if (ckpt := tune.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT, map_location=device, weights_only=True)
        for name, part in job.parts.items():
            part.load_state_dict(state[name])
        start_epoch = state["epoch"]
    node = ray.get_runtime_context().get_node_id()
    last_epoch = start_epoch

    def report(m: dict) -> None:
        nonlocal last_epoch
        m = {**m, **job.score(m), "resumed_from_epoch": start_epoch, "node_id": node}
        last_epoch = m["epoch"]
        with tempfile.TemporaryDirectory() as d:
            torch.save(
                {
                    **{name: part.state_dict() for name, part in job.parts.items()},
                    **{f"{name}_kwargs": kw for name, kw in job.kwargs.items()},
                    "epoch": m["epoch"],
                    "config": hp.model_dump(),
                },
                Path(d) / CHECKPOINT,
            )
            tune.report(m, checkpoint=tune.Checkpoint.from_directory(d))

    try:
        job.fit(start_epoch, report)
    except (NonFiniteLoss, Collapsed) as e:
        # Stop at once and say so: retrying a diverged or collapsed config would only fail again.
        tune.report(
            {
                "epoch": last_epoch + 1,
                metric: worst,
                "diverged": 1,
                "error": str(e),
                "resumed_from_epoch": start_epoch,
                "node_id": node,
            }
        )


def sweep_on(
    data: Prepared,
    sweep: Sweep,
    settings: TrialSettings,
    *,
    state_dir: Path,
    callbacks: list | None,
    remote: bool,
    extra: dict | None = None,
) -> SearchResult:
    """Run, resume or re-read a trial kind's sweep on one dataset (`run_sweep`): its train and val splits, and any
    `extra` arrays, go to every trial; the best config names the dataset."""
    arrays = {k: getattr(data, k) for k in ("x_train", "y_train", "x_val", "y_val")}
    result = run_sweep(
        sweep, {**arrays, **(extra or {})}, settings, state_dir=state_dir, callbacks=callbacks, remote=remote
    )
    result.best["dataset"] = data.name
    return result
