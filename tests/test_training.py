"""The one training loop on a task a row-reading classifier must learn, on the CPU and (where there is one) a GPU; its
augmentation and progress bar. Final retraining: tests/test_final_classifier.py."""

import io
import sys

import numpy as np
import pytest
import torch

from grutune.data import DATASETS
from grutune.objectives import TrialConfig
from grutune.training import Augment, Split, fit, new_classifier, train_epoch


def bright_row_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """10 classes, class k = row 2k+4 is bright on a noisy background; uint8 images (n, 28, 28, 1) as prepared."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = (rng.random((n, 28, 28, 1)) * 128).astype(np.uint8)
    x[np.arange(n), 2 * y + 4] = 255
    return x, y.astype(np.int64)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_fit_keeps_data_and_model_on_the_device_and_learns(device):
    device = torch.device(device)
    hp = TrialConfig(
        cell="gru",
        hidden_size=32,
        num_layers=1,
        bidirectional=False,
        dropout=0.0,
        backbone="none",
        lr=1e-2,
        weight_decay=0.0,
        batch_size=64,
    )
    torch.manual_seed(0)
    model, opt = new_classifier(hp, in_shape=(28, 28, 1), num_classes=10, device=device)
    train, val = Split.of(*bright_row_task(2048, 0), device), Split.of(*bright_row_task(256, 1), device)
    assert train.x.device.type == device.type  # the whole split lives on the device: batches never cross the bus
    history = fit(model, opt, train, val, epochs=4, batch_size=hp.batch_size, seed=0)
    assert all(p.device.type == device.type for p in model.parameters())
    assert [m["epoch"] for m in history] == [1, 2, 3, 4]
    assert history[-1]["val_accuracy"] > 0.9 and history[-1]["train_loss"] < history[0]["train_loss"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_within_an_epoch_on_a_terminal_only(tty, monkeypatch):
    """On a terminal, a bar counts the epoch's batches; in a log, nothing per batch is written."""
    stream = Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    hp = TrialConfig(
        cell="gru",
        hidden_size=8,
        num_layers=1,
        bidirectional=False,
        dropout=0.0,
        backbone="none",
        lr=1e-3,
        weight_decay=0.0,
        batch_size=64,
    )
    model, opt = new_classifier(hp, in_shape=(28, 28, 1), num_classes=10, device=torch.device("cpu"))
    fit(model, opt, Split.of(*bright_row_task(256, 0), "cpu"), None, epochs=2, batch_size=64, seed=0, progress=True)
    out = stream.getvalue()
    if tty:
        assert "epoch 1/2" in out and "epoch 2/2" in out and "0/4 " in out and "batch" in out  # 4 batches an epoch
    else:
        assert out == ""


def shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img (H, W, C) moved by (dy, dx) pixels, zeros where nothing moved in."""
    out = torch.zeros_like(img)
    h, w = img.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


@pytest.mark.parametrize("flip", [False, True])
def test_augment_shifts_each_image_by_at_most_pad_and_flips_only_where_allowed(flip):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (200, 12, 10, 2), generator=g).to(torch.uint8)
    out = Augment(pad=2, flip=flip)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    seen_shifts, flipped = set(), 0
    for img, aug in zip(x, out):
        match = [
            (dy, dx, f)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            for f in (False, True)
            if torch.equal(aug, shifted(img.flip(1) if f else img, dy, dx))
        ]
        assert match, "an augmented image is not a shift (and mirror) of its original"
        dy, dx, f = match[0]
        seen_shifts.add((dy, dx))
        flipped += f
    assert len(seen_shifts) == 25  # every shift in [-2, 2]^2 happens
    if flip:
        assert 70 < flipped < 130
    else:
        assert flipped == 0
    again = Augment(pad=2, flip=flip)(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # seeded: a resumed epoch sees the same batches


def test_augment_follows_the_dataset_flip_policy_and_reaches_the_model():
    assert not DATASETS["mnist"].flip and DATASETS["fashion_mnist"].flip and DATASETS["cifar10"].flip
    assert Augment.for_images((32, 32, 3), True) == Augment(pad=4, flip=True)
    assert Augment.for_images((28, 28, 1), False) == Augment(pad=3, flip=False)

    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(len(x), 2) + self.w

    x, y = torch.randint(0, 256, (64, 8, 8, 1)).to(torch.uint8), torch.zeros(64, dtype=torch.int64)
    model = Recorder()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for augment in (None, Augment(pad=1, flip=True)):
        seen.clear()
        train_epoch(model, opt, Split(x, y), batch_size=64, generator=torch.Generator().manual_seed(0), augment=augment)
        order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
        assert torch.equal(seen[0], x[order].float() / 255) == (augment is None)
