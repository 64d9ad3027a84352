"""The two sweeps: GRU-family classifiers per dataset (maximise val accuracy) and GANs on gan.dataset (minimise FID).

Each is a `Sweep` plus the trial settings and arrays its trainable needs, built here and only here; sweep.py runs them.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from grutune.config import GanTrialConfig, Params, TrialConfig
from grutune.data import Prepared
from grutune.gan import Recipe
from grutune.sweep import Sweep, identity, run_sweep
from grutune.sweep_results import SearchResult
from grutune.trials import ClassifierTrialSettings, GanTrialSettings, run_gan_trial, run_trial

__all__ = ["COST_COLUMNS", "classifier_sweep", "gan_sweep", "run_gan_search", "run_search", "sweep_id"]

METRIC, MODE = "val_accuracy", "max"
COST_COLUMNS = ("params", "latency_ms", "latency_batch_ms")  # every classifier trial measures these


def _shape(data: Prepared) -> tuple[int, int, int]:
    return tuple(int(d) for d in data.x_train.shape[1:])


def classifier_sweep(params: Params, data: Prepared, trainable=run_trial) -> Sweep:
    """The classifier sweep on one dataset."""
    return Sweep(
        name=data.name,
        key="search",
        budget=params.search,
        hp_model=TrialConfig,
        metric=METRIC,
        mode=MODE,
        trainable=trainable,
        seed=params.seed,
        data_hash=data.content_hash,
        costs=tuple(params.search.objectives[1:]),
        columns=COST_COLUMNS,
    )


def sweep_id(params: Params, dataset: str, content_hash: str) -> str:
    """The classifier sweep's identity for one dataset (what `classifier_sweep(...).sweep_id` gives)."""
    return identity(dataset, params.search, params.seed, content_hash)


def run_search(
    params: Params,
    data: Prepared,
    *,
    state_dir: Path,
    callbacks: list | None = None,
    remote: bool = False,
    trainable_fn=run_trial,
) -> SearchResult:
    """Run, resume or re-read the classifier sweep for one dataset; return its best config and per-trial table."""
    settings = ClassifierTrialSettings(
        in_shape=_shape(data),
        num_classes=len(data.classes),
        max_epochs=params.search.max_epochs,
        train_subset=params.search.train_subset,
        seed=params.seed,
    )
    arrays = {k: getattr(data, k) for k in ("x_train", "y_train", "x_val", "y_val")}
    result = run_sweep(
        classifier_sweep(params, data, trainable_fn),
        arrays,
        settings,
        state_dir=state_dir,
        callbacks=callbacks,
        remote=remote,
    )
    result.best["dataset"] = data.name
    return result


def gan_sweep(params: Params, data: Prepared, classifier_hash: str) -> Sweep:
    """The GAN sweep on gan.dataset. Its FID depends on the classifier too, so that is part of its identity."""
    g, s = params.gan, params.gan_search
    return Sweep(
        name=f"gan-{data.name}",
        key="gan_search",
        budget=s,
        hp_model=GanTrialConfig,
        metric="fid",
        mode="min",
        trainable=run_gan_trial,
        seed=params.seed,
        data_hash=data.content_hash,
        extra_identity={
            "classifier": classifier_hash,
            "noise_dim": g.noise_dim,
            **asdict(Recipe.of(g)),
            "eval_samples": s.eval_samples,
            "min_diversity": s.min_diversity,
        },
    )


def run_gan_search(
    params: Params,
    data: Prepared,
    classifier: dict,
    classifier_hash: str,
    *,
    state_dir: Path,
    callbacks: list | None = None,
    remote: bool = False,
) -> SearchResult:
    """The GAN sweep on gan.dataset: minimise the FID in the feature space of the classifier trained on it.

    `classifier` is the train stage's checkpoint dict (`model`, `model_kwargs`).
    """
    g, s = params.gan, params.gan_search
    settings = GanTrialSettings(
        in_shape=_shape(data),
        noise_dim=g.noise_dim,
        recipe=Recipe.of(g),
        max_epochs=s.max_epochs,
        train_subset=s.train_subset,
        eval_samples=s.eval_samples,
        min_diversity=s.min_diversity,
        seed=params.seed,
        classifier_kwargs=dict(classifier["model_kwargs"]),
    )
    arrays = {
        "x_train": data.x_train,
        "y_train": data.y_train,
        "x_val": data.x_val,
        "y_val": data.y_val,
        "classifier": {k: v.cpu() for k, v in classifier["model"].items()},
    }
    result = run_sweep(
        gan_sweep(params, data, classifier_hash),
        arrays,
        settings,
        state_dir=state_dir,
        callbacks=callbacks,
        remote=remote,
    )
    result.best["dataset"] = data.name
    return result
