"""The classifier's trial and sweep: one trial trains a recurrent classifier for up to `max_epochs`, reporting its
validation accuracy (maximised, what ASHA prunes on) and what its model costs; the sweep runs it per dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from grutune.config import Params
from grutune.data import Prepared
from grutune.objectives import CLASSIFIER_OBJECTIVE, TrialConfig
from grutune.sweep.definition import Sweep
from grutune.sweep.results import SearchResult
from grutune.training import Split, fit, inference_cost, new_classifier
from grutune.trials.skeleton import TrialJob, TrialSettings, run_epochs, sweep_on

__all__ = ["ClassifierTrialSettings", "classifier_sweep", "run_classifier_sweep", "run_trial"]


@dataclass(frozen=True)
class ClassifierTrialSettings(TrialSettings):
    num_classes: int = 0


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

    run_epochs(config, settings, hp_model=TrialConfig, metric=CLASSIFIER_OBJECTIVE.metric, worst=0.0, build=build)


def classifier_sweep(params: Params, data: Prepared, trainable=run_trial) -> Sweep:
    """The classifier sweep on one dataset."""
    return Sweep(
        name=data.name,
        key="search",
        params=params.search,
        objective=CLASSIFIER_OBJECTIVE,
        trainable=trainable,
        seed=params.seed,
        data_hash=data.content_hash,
        costs=tuple(params.search.objectives[1:]),
    )


def run_classifier_sweep(
    params: Params,
    data: Prepared,
    *,
    state_dir: Path,
    callbacks: list | None = None,
    remote: bool = False,
    trainable=run_trial,
) -> SearchResult:
    """Run, resume or re-read the classifier sweep for one dataset; return its best config and per-trial table."""
    settings = ClassifierTrialSettings(
        in_shape=data.image_shape,
        num_classes=len(data.classes),
        max_epochs=params.search.max_epochs,
        train_subset=params.search.train_subset,
        seed=params.seed,
    )
    sweep = classifier_sweep(params, data, trainable)
    return sweep_on(data, sweep, settings, state_dir=state_dir, callbacks=callbacks, remote=remote)
