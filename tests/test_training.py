"""The one training loop on a task a row-reading classifier must learn, on the CPU and (where there is one) a GPU."""

import io
import sys

import numpy as np
import pytest
import torch

from grutune.config import TrialConfig
from grutune.training import Split, fit, new_classifier


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
    hp = TrialConfig(cell="gru", hidden_size=32, num_layers=1, bidirectional=False, dropout=0.0, backbone="none",
                     lr=1e-2, weight_decay=0.0, batch_size=64)
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
    hp = TrialConfig(cell="gru", hidden_size=8, num_layers=1, bidirectional=False, dropout=0.0, backbone="none",
                     lr=1e-3, weight_decay=0.0, batch_size=64)
    model, opt = new_classifier(hp, in_shape=(28, 28, 1), num_classes=10, device=torch.device("cpu"))
    fit(model, opt, Split.of(*bright_row_task(256, 0), "cpu"), None, epochs=2, batch_size=64, seed=0, progress=True)
    out = stream.getvalue()
    if tty:
        assert "epoch 1/2" in out and "epoch 2/2" in out and "0/4 " in out and "batch" in out  # 4 batches an epoch
    else:
        assert out == ""
