"""Tiny configs and models for the GAN's and the final stages' tests: a few CPU seconds each."""

from __future__ import annotations

import torch

from grutune.gan.final import FinalGanSettings
from grutune.models import RecurrentClassifier
from grutune.objectives import GanTrialConfig, TrialConfig

CLASSIFIER = TrialConfig(
    cell="gru",
    hidden_size=16,
    num_layers=1,
    bidirectional=False,
    dropout=0.2,
    backbone="none",
    lr=3e-3,
    weight_decay=1e-4,
    batch_size=64,
)


def gan_config(**kw) -> GanTrialConfig:
    """A small deconv GAN of gan_search's space, with `kw` changed."""
    return GanTrialConfig(
        **{
            "generator": "deconv",
            "hidden_size": 16,
            "num_layers": 1,
            "backbone": "none",
            "lr_g": 2e-3,
            "lr_d": 2e-3,
            **kw,
        }
    )


def gan_settings(**kw) -> FinalGanSettings:
    """The final GAN's settings at a test's budget, with `kw` changed."""
    return FinalGanSettings(
        **{
            "epochs": 2,
            "noise_dim": 8,
            "subset": 128,
            "eval_samples": 50,
            "eval_every": 1,
            "min_diversity": 0.0,
            "seed": 0,
            **kw,
        }
    )


def scoring_classifier(seed: int = 0) -> RecurrentClassifier:
    """An untrained 28x28 classifier whose features score a GAN (FID, diversity) as the trained one's would."""
    torch.manual_seed(seed)
    return RecurrentClassifier(
        in_shape=(28, 28, 1),
        num_classes=10,
        cell="gru",
        hidden_size=8,
        num_layers=1,
        bidirectional=False,
        dropout=0.0,
        backbone="none",
    )
