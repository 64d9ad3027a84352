"""The GAN's trial and sweep on gan.dataset: one trial trains a GAN epoch by epoch, reporting the FID in the feature
space of the classifier the train stage trained on that dataset (minimised); a collapsed generator fails the trial."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from grutune.config import Params
from grutune.data import Prepared
from grutune.errors import Collapsed
from grutune.gan import FidScorer, Recipe, fit_gan, new_gan
from grutune.models import build_classifier, to_float
from grutune.objectives import GAN_OBJECTIVE, GanTrialConfig
from grutune.sweep.definition import Sweep
from grutune.sweep.results import SearchResult
from grutune.training import Split
from grutune.trials.skeleton import TrialJob, TrialSettings, run_epochs, sweep_on

__all__ = ["GanTrialSettings", "gan_sweep", "run_gan_sweep", "run_gan_trial"]


@dataclass(frozen=True)
class GanTrialSettings(TrialSettings):
    noise_dim: int = 0
    recipe: Recipe = Recipe()
    eval_samples: int = 0
    min_diversity: float = 0.0
    num_classes: int = 0  # the dataset's, for a conditional point of the space
    classifier_kwargs: dict = field(default_factory=dict)  # to rebuild the scoring classifier


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
            num_classes=settings.num_classes,
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
            fit=lambda start, on_epoch: fit_gan(
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

    run_epochs(config, settings, hp_model=GanTrialConfig, metric=GAN_OBJECTIVE.metric, worst=1e12, build=build)


def gan_sweep(params: Params, data: Prepared, classifier_hash: str) -> Sweep:
    """The GAN sweep on gan.dataset. Its FID depends on the classifier too, so that is part of its identity."""
    g, s = params.gan, params.gan_search
    return Sweep(
        name=f"gan-{data.name}",
        key="gan_search",
        params=s,
        objective=GAN_OBJECTIVE,
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


def run_gan_sweep(
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
        in_shape=data.image_shape,
        noise_dim=g.noise_dim,
        recipe=Recipe.of(g),
        **s.model_dump(include={"max_epochs", "train_subset", "eval_samples", "min_diversity"}),
        num_classes=data.num_classes,
        seed=params.seed,
        classifier_kwargs=dict(classifier["model_kwargs"]),
    )
    weights = {k: v.cpu() for k, v in classifier["model"].items()}
    sweep = gan_sweep(params, data, classifier_hash)
    return sweep_on(
        data, sweep, settings, state_dir=state_dir, callbacks=callbacks, remote=remote, extra={"classifier": weights}
    )
