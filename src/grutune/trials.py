"""Tune trainables: one trial of the classifier sweep and one of the GAN sweep, on one shared skeleton.

Each trainable is a plain function of `config` (as in Ray Tune's examples). The skeleton, `run_epochs`, does what
every trial does: replay a result the Optuna journal already holds, restore from a checkpoint, report with a
checkpoint every epoch, and stop at once on divergence. A trial kind only says how to build, train and score.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from pydantic import BaseModel
from ray import tune

from grutune.config import GanTrialConfig, TrialConfig
from grutune.errors import Collapsed, NonFiniteLoss
from grutune.gan import FidScorer, Recipe, new_gan, train_gan
from grutune.models import build_classifier, to_float
from grutune.recovery import finished_result
from grutune.training import Split, fit, inference_cost, new_classifier, pick_device

__all__ = [
    "CHECKPOINT",
    "ClassifierTrialSettings",
    "GanTrialSettings",
    "TrialJob",
    "TrialSettings",
    "run_epochs",
    "run_gan_trial",
    "run_trial",
]

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrialSettings:
    """What the driver hands every trial besides its config. A sweep definition builds it (search.py); the driver
    fills in the last three fields."""

    in_shape: tuple[int, int, int]  # (H, W, C)
    max_epochs: int
    train_subset: int | None
    seed: int
    threads: int = 1  # torch threads: the trial's CPUs
    journal: str | None = None  # the sweep's Optuna journal, for replaying finished trials
    study: str | None = None


@dataclass(frozen=True)
class ClassifierTrialSettings(TrialSettings):
    num_classes: int = 0


@dataclass(frozen=True)
class GanTrialSettings(TrialSettings):
    noise_dim: int = 0
    recipe: Recipe = Recipe()
    eval_samples: int = 0
    min_diversity: float = 0.0
    classifier_kwargs: dict = field(default_factory=dict)  # to rebuild the scoring classifier


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
    device = pick_device()
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


def run_trial(config: dict, *, data: dict, settings: ClassifierTrialSettings) -> None:
    """One classifier trial: train for up to `max_epochs`, reporting val accuracy and a checkpoint every epoch."""

    def build(hp: TrialConfig, device: torch.device) -> TrialJob:
        model, opt = new_classifier(hp, in_shape=settings.in_shape, num_classes=settings.num_classes, device=device)
        train = Split.of(data["x_train"], data["y_train"], device)
        val = Split.of(data["x_val"], data["y_val"], device)
        cost: dict = {}

        def score(m: dict) -> dict:
            # The model's size and speed on this trial's hardware, for multi-objective sweeps and trials.csv;
            # measured once per trial process (weights do not change them).
            if not cost:
                cost.update(inference_cost(model, settings.in_shape, device))
            return cost

        return TrialJob(
            parts={"model": model, "optimizer": opt},
            kwargs={"model": model.kwargs},
            score=score,
            fit=lambda start, on_epoch: fit(
                model,
                opt,
                train,
                val,
                epochs=settings.max_epochs,
                batch_size=hp.batch_size,
                seed=settings.seed,
                start_epoch=start,
                subset=settings.train_subset,
                schedule_epochs=settings.max_epochs,
                on_epoch=on_epoch,
            ),
        )

    run_epochs(config, settings, hp_model=TrialConfig, metric="val_accuracy", worst=0.0, build=build)


def run_gan_trial(config: dict, *, data: dict, settings: GanTrialSettings) -> None:
    """One GAN trial: train epoch by epoch, reporting the classifier-feature FID (lower is better) and a checkpoint.

    A collapsed generator (samples far less varied than real images) or a NaN loss stops the trial at once; it is
    counted as failed and never picked.
    """

    def build(hp: GanTrialConfig, device: torch.device) -> TrialJob:
        gan = new_gan(
            hp,
            shape=settings.in_shape,
            noise_dim=settings.noise_dim,
            device=device,
            ema_decay=settings.recipe.ema_decay,
        )
        clf = build_classifier(settings.classifier_kwargs, data["classifier"]).to(device)
        n = min(settings.eval_samples, len(data["x_val"]))
        fid = FidScorer(clf, to_float(Split.of(data["x_val"][:n], data["y_val"][:n], device).x), seed=settings.seed)

        def score(m: dict) -> dict:
            s = fid(gan.sampler)
            if s["diversity"] < settings.min_diversity:
                raise Collapsed(f"generator collapsed: sample diversity {s['diversity']:.3f} (real images: 1)")
            return s

        train = Split.of(data["x_train"], data["y_train"], device)
        return TrialJob(
            parts=gan.parts(),
            kwargs={"generator": gan.G.kwargs, "discriminator": gan.D.kwargs},
            score=score,
            fit=lambda start, on_epoch: train_gan(
                gan,
                train,
                settings.recipe,
                epochs=settings.max_epochs,
                seed=settings.seed,
                start_epoch=start,
                subset=settings.train_subset,
                on_epoch=on_epoch,
            ),
        )

    run_epochs(config, settings, hp_model=GanTrialConfig, metric="fid", worst=1e12, build=build)
