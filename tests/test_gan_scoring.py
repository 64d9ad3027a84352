"""Scoring a generator (grutune.gan.scoring): the class grid puts real images beside the samples the classifier
assigns to their class. FID and diversity during training are tested with the final GAN (tests/test_gan_final.py)."""

from __future__ import annotations

import pytest
import torch

from grutune.data import load_prepared
from grutune.gan.scoring import class_grid
from grutune.gan.training import new_gan
from grutune.models import to_float
from grutune.training import Split
from tiny_models import gan_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(prepared_mnist):
    return load_prepared(prepared_mnist(n_train=600, n_test=100, val_fraction=0.2))


class OneClass(torch.nn.Module):
    """A classifier that assigns every image to class `c` (a real module, so the grid sees real logits)."""

    def __init__(self, c: int, k: int = 10):
        super().__init__()
        self.c, self.k = c, k

    def features(self, x):
        return x.flatten(1)[:, :4]

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full((len(x),), self.c), self.k).float() * 10


def test_the_class_grid_puts_real_images_beside_the_samples_assigned_to_their_class(data):
    """One row per class: the class's first real test images, a blank column, then generated samples the classifier
    assigns to that class; a class it assigns none to has a blank right half."""
    torch.manual_seed(0)
    G = new_gan(gan_config(), shape=(28, 28, 1), noise_dim=8, device=CPU).G
    test = Split.of(data.x_test, data.y_test, CPU)
    grid = class_grid(G, OneClass(3), test, per_class=2, candidates=20, seed=0)
    cell, pad = 28 + 2, 2
    assert grid.shape == (10 * cell + pad, 5 * cell + pad, 1)

    def tile(r, c):
        return grid[pad + r * cell : pad + r * cell + 28, pad + c * cell : pad + c * cell + 28]

    real = to_float(test.x).numpy()
    for r in range(10):
        first = real[data.y_test == r][0]
        assert (tile(r, 0) == first).all()  # the class's own first test image
        assert (tile(r, 2) == 1).all()  # the blank column
        assert (tile(r, 3) == 1).all() != (r == 3)  # generated samples only in the row of the class assigned
