"""The one training loop on a task a row-reading classifier must learn, on the CPU and (where there is one) a GPU."""

import io
import sys

import numpy as np
import pytest
import torch

from grutune.config import TrialConfig
from grutune.data import DATASETS
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


def test_a_final_run_resumed_from_an_epochs_checkpoint_ends_as_a_straight_run(prepared_mnist):
    """`retrain_and_test` with `checkpoint` and `resume`, as the train stage uses them on a cluster: a run restarted
    (in a fresh model, after other random draws) from its epoch-2 state ends with the same weights and test
    predictions as one that never stopped. Dropout and augmentation make this depend on the restored random state."""
    from grutune.data import load_prepared
    from grutune.training import retrain_and_test

    data = load_prepared(prepared_mnist(n_train=600, n_test=100))
    hp = TrialConfig(
        cell="gru",
        hidden_size=16,
        num_layers=1,
        bidirectional=False,
        dropout=0.3,
        backbone="none",
        lr=3e-3,
        weight_decay=1e-4,
        batch_size=64,
    )
    saved = []

    def checkpoint(state: dict) -> None:  # written at once, as a checkpoint is (the state holds live tensors)
        f = io.BytesIO()
        torch.save(state, f)
        saved.append(f.getvalue())

    kw = {"epochs": 4, "seed": 3, "device": torch.device("cpu"), "augment": True}
    straight = retrain_and_test(hp, data, **kw, checkpoint=checkpoint)
    states = [torch.load(io.BytesIO(b), weights_only=True) for b in saved]  # loaded as a checkpoint is
    assert [s["epoch"] for s in states] == [1, 2, 3, 4]
    torch.rand(1000)  # other random draws between the stop and the resume
    resumed = retrain_and_test(hp, data, **kw, resume=states[1])
    assert [m["epoch"] for m in resumed.history] == [1, 2, 3, 4]
    assert [m["train_loss"] for m in resumed.history] == [m["train_loss"] for m in straight.history]
    for name, w in straight.model.state_dict().items():
        assert torch.equal(w, resumed.model.state_dict()[name]), name
    assert torch.equal(resumed.test["pred"], straight.test["pred"])
    # and the test can tell: the same resume with another random state (dropout's masks) ends elsewhere
    other = retrain_and_test(hp, data, **kw, resume={**states[1], "rng": torch.Generator().manual_seed(99).get_state()})
    assert not torch.equal(other.model.state_dict()["head.weight"], straight.model.state_dict()["head.weight"])


@pytest.mark.parametrize(
    "content, says",
    [
        (b"\x00" * 7 + b"not a checkpoint", "damaged or not one of grutune's"),  # unpickling refused
        (b"PK\x03\x04truncated", "damaged or truncated"),  # a zip that ends early
        (None, "not one of grutune's"),  # a torch file without grutune's keys
    ],
)
def test_a_damaged_or_foreign_checkpoint_is_a_clear_error(tmp_path, content, says):
    from grutune.errors import GrutuneError
    from grutune.training import load_checkpoint

    path = tmp_path / "classifier.pt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(GrutuneError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert str(path) in message and says in message and "rerun the stage" in message
    assert "weights_only` set to `False`" not in message and "\n" not in message  # no advice to unpickle, one line
