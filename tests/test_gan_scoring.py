"""Scoring a generator (grutune.gan.scoring): the class grid puts real images beside the samples the classifier
assigns to their class, or, for a conditional generator, beside those drawn for it; the scores per class and the class
consistency. FID and diversity during training are tested with the final GAN (tests/test_gan_final.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grutune.data import load_prepared
from grutune.gan.scoring import MIN_CLASS_SAMPLES, class_grid, generate, score
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


def test_the_class_grid_of_a_conditional_generator_shows_the_samples_drawn_for_each_class(data):
    """Row c: the class's real test images, a blank column, then the samples drawn for class c (whatever the
    classifier makes of them: here it assigns everything to class 3)."""
    torch.manual_seed(0)
    G = new_gan(gan_config(conditional=True), shape=(28, 28, 1), noise_dim=8, device=CPU, num_classes=10).G
    test = Split.of(data.x_test, data.y_test, CPU)
    grid = class_grid(G, OneClass(3), test, per_class=2, seed=4)
    cell, pad = 28 + 2, 2
    assert grid.shape == (10 * cell + pad, 5 * cell + pad, 1)
    drawn = generate(G, 20, seed=4, device=CPU, classes=torch.arange(10).repeat_interleave(2)).numpy()
    for r in range(10):
        for j in range(2):
            tile = grid[pad + r * cell : pad + r * cell + 28, pad + (3 + j) * cell : pad + (3 + j) * cell + 28]
            assert (tile == drawn[2 * r + j]).all()


class Labels(torch.nn.Module):
    """A classifier that assigns each image the class written in its first pixel (pixel * 10, rounded down)."""

    def features(self, x):
        return x.flatten(1)[:, :4]

    def forward(self, x):
        c = (x.flatten(1)[:, 0] * 9.99).long().clamp(0, 9)
        return torch.nn.functional.one_hot(c, 10).float() * 10


class Stamp(torch.nn.Module):
    """A conditional 'generator' that writes the class it is asked for in the first pixel (wrong for class 9, which
    it draws as 8), over noise."""

    noise_dim, num_classes, conditional = 4, 10, True

    def eval(self):
        return self

    def classes_for(self, n, device=None):
        return torch.arange(n, device=device) % 10

    def __call__(self, z, y):
        x = torch.rand(len(z), 28, 28, 1, generator=torch.Generator().manual_seed(int(z[0, 0] * 1000) % 1000))
        x[:, 0, 0, 0] = (torch.where(y == 9, 8, y).float() + 0.5) / 10
        return x


def test_a_conditional_generators_scores_hold_its_class_consistency_overall_and_per_class(data):
    test, train = Split.of(data.x_test, data.y_test, CPU), Split.of(data.x_train, data.y_train, CPU)
    m = score(Stamp(), Labels(), test, train, n=100, seed=0, classes=tuple(data.classes))
    assert m["conditional"] is True and m["per_class_by"] == "requested"
    assert m["class_consistency"] == pytest.approx(0.9)  # every class right but 9
    per = m["per_class"]
    assert list(per) == list(data.classes)
    assert all(per[c]["samples"] == 10 for c in per)  # 100 samples: each class in turn
    assert [per[c]["class_consistency"] for c in per] == [1.0] * 9 + [0.0]
    train_counts = np.bincount(data.y_train[:100], minlength=10)
    for c, row in zip(range(10), per.values()):  # scored where every side has enough images, else None
        scored = min(row["samples"], row["real_samples"], train_counts[c]) >= MIN_CLASS_SAMPLES
        assert (row["fid"] is not None) == scored and (row["inception_score_ratio"] is not None) == scored


def test_an_unconditional_generators_scores_per_class_are_of_the_samples_assigned_to_it(data):
    torch.manual_seed(0)
    G = new_gan(gan_config(), shape=(28, 28, 1), noise_dim=8, device=CPU).G
    test, train = Split.of(data.x_test, data.y_test, CPU), Split.of(data.x_train, data.y_train, CPU)
    m = score(G, OneClass(3), test, train, n=60, seed=0, classes=tuple(data.classes))
    assert m["conditional"] is False and "class_consistency" not in m and m["per_class_by"] == "assigned"
    per = m["per_class"]
    assert per["3"]["samples"] == 60 and all(per[c]["samples"] == 0 for c in per if c != "3")
    assert all(per[c]["fid"] is None for c in per if c != "3")
    assert "class_consistency" not in per["3"]
