"""GAN training: the recipe's losses, EMA and R1, the final stage's best-epoch checkpoint and its refusal to ship a
collapsed generator."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from grutune.config import GanTrialConfig
from grutune.data import load_prepared
from grutune.errors import Collapsed
from grutune.gan import FidScorer, Recipe, generate, new_gan, train_and_score, train_best, train_gan
from grutune.gan_models import GENERATOR_NAMES
from grutune.models import RecurrentClassifier, to_float
from grutune.training import Split, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def hp(**kw) -> GanTrialConfig:
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


@pytest.fixture(scope="module")
def data(prepared_mnist):
    return load_prepared(prepared_mnist(n_train=600, n_test=100, val_fraction=0.2))


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(0)
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


@pytest.mark.parametrize("loss", ["hinge", "nonsaturating"])
@pytest.mark.parametrize("kind", GENERATOR_NAMES)
def test_every_generator_trains_with_each_loss(kind, loss, data):
    torch.manual_seed(0)
    gan = new_gan(hp(generator=kind), shape=(28, 28, 1), noise_dim=8, device=CPU, ema_decay=0.9)
    before = {k: v.clone() for k, v in gan.G.state_dict().items()}
    (m,) = train_gan(
        gan,
        Split.of(data.x_train, data.y_train, CPU),
        Recipe(batch_size=64, loss=loss, ema_decay=0.9),
        epochs=1,
        seed=0,
        subset=256,
    )
    assert m["epoch"] == 1 and all(torch.isfinite(torch.tensor(m[k])) for k in ("d_loss", "g_loss"))
    if loss == "hinge":  # D's hinge loss is at least 0, and 2 where D outputs 0 everywhere
        assert m["d_loss"] >= 0
    after = gan.G.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)  # every generator weight moved
    ema = gan.ema.module.state_dict()
    for k in before:  # the EMA lies between where G started and where it is now, and is neither
        if before[k].is_floating_point() and not torch.equal(before[k], after[k]):
            assert not torch.equal(ema[k], after[k]) and not torch.equal(ema[k], before[k])


def test_ema_warms_up_so_a_short_run_is_not_its_initial_weights(data):
    """With decay 0.999 and only 4 steps, a plain EMA would still be 99.6% the initial weights; the warmed-up one is
    far closer to the trained generator."""
    torch.manual_seed(0)
    gan = new_gan(hp(), shape=(28, 28, 1), noise_dim=8, device=CPU, ema_decay=0.999)
    start = {k: v.clone() for k, v in gan.G.state_dict().items()}
    train_gan(
        gan,
        Split.of(data.x_train, data.y_train, CPU),
        Recipe(batch_size=64, ema_decay=0.999),
        epochs=1,
        seed=0,
        subset=256,
    )
    k = "fc.weight"
    moved = (gan.G.state_dict()[k] - start[k]).norm()
    ema_moved = (gan.ema.module.state_dict()[k] - start[k]).norm()
    assert 0.2 * moved < ema_moved < moved


@pytest.mark.gpu
@pytest.mark.parametrize("kind", GENERATOR_NAMES)
def test_on_a_gpu_training_and_sampling_the_ema_generator_warn_of_nothing(kind, data):
    """AveragedModel deep-copies G, and a copied GRU's weights lie in pieces: cuDNN warned at every sampling and
    re-packed them at every call (seen on an H200) until new_gan flattened them."""
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    gan = new_gan(hp(generator=kind), shape=(28, 28, 1), noise_dim=8, device=cuda, ema_decay=0.999)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recipe = Recipe(batch_size=64, ema_decay=0.999, r1_gamma=1.0, lr_schedule="cosine")
        train_gan(gan, Split.of(data.x_train, data.y_train, cuda), recipe, epochs=1, seed=0, subset=128)
        samples = generate(gan.sampler, 16, seed=0, device=cuda)
    assert samples.device.type == "cuda" and samples.shape == (16, 28, 28, 1)
    assert all(p.device.type == "cuda" for p in gan.sampler.parameters())


def test_r1_penalises_the_gradient_at_real_images(data):
    torch.manual_seed(0)
    gan = new_gan(hp(), shape=(28, 28, 1), noise_dim=8, device=CPU)
    (m,) = train_gan(
        gan,
        Split.of(data.x_train, data.y_train, CPU),
        Recipe(batch_size=64, r1_gamma=1.0),
        epochs=1,
        seed=0,
        subset=256,
    )
    assert m["r1"] > 0
    (m,) = train_gan(
        gan,
        Split.of(data.x_train, data.y_train, CPU),
        Recipe(batch_size=64),
        epochs=2,
        seed=0,
        start_epoch=1,
        subset=256,
    )
    assert "r1" not in m


def test_cosine_schedule_anneals_both_rates_to_zero_and_resumes_on_the_same_curve(data):
    """4 steps an epoch over 2 epochs: after epoch 1 (step 3 of 8 was the last) both rates are their peak times
    (1 + cos(3/8 pi)) / 2; the last step runs at (1 + cos(7/8 pi)) / 2 of the peak. A run stopped after epoch 1 and
    resumed from the optimisers' saved state ends with the same weights as one that did not stop."""
    train = Split.of(data.x_train, data.y_train, CPU)
    recipe = Recipe(batch_size=64, ema_decay=0.0, lr_schedule="cosine")
    factor = [0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(8)]

    def fresh():
        torch.manual_seed(0)
        return new_gan(hp(lr_g=1e-3, lr_d=4e-3), shape=(28, 28, 1), noise_dim=8, device=CPU)

    straight = fresh()
    history = train_gan(straight, train, recipe, epochs=2, seed=0, subset=256)
    assert history[0]["lr_g"] == pytest.approx(1e-3 * factor[3])
    assert history[1]["lr_g"] == pytest.approx(1e-3 * factor[7])
    assert straight.opt_d.param_groups[0]["lr"] == pytest.approx(4e-3 * factor[7])

    stopped = fresh()  # a run of 2 epochs, killed after the first
    with pytest.raises(_Stop):
        train_gan(stopped, train, recipe, epochs=2, seed=0, subset=256, on_epoch=_stop)
    saved = {k: copy.deepcopy(v.state_dict()) for k, v in stopped.parts().items()}
    noise = torch.get_rng_state()  # the noise G draws comes from torch's global generator (train_best saves it too)
    resumed = fresh()
    torch.set_rng_state(noise)
    for k, part in resumed.parts().items():
        part.load_state_dict(saved[k])
    train_gan(resumed, train, recipe, epochs=2, seed=0, subset=256, start_epoch=1)
    for k, v in straight.G.state_dict().items():
        assert torch.allclose(resumed.G.state_dict()[k], v), k

    constant = fresh()
    (m,) = train_gan(constant, train, Recipe(batch_size=64, ema_decay=0.0), epochs=1, seed=0, subset=256)
    assert "lr_g" not in m and constant.opt_g.param_groups[0]["lr"] == 1e-3


class _Stop(Exception):
    pass


def _stop(m: dict) -> None:
    raise _Stop


def test_the_final_gan_is_the_epoch_with_the_best_validation_fid(data, clf):
    torch.manual_seed(0)
    final = train_and_score(
        hp(lr_g=2e-2, lr_d=2e-2),
        Recipe(batch_size=32, ema_decay=0.0),
        clf,
        data,
        epochs=4,
        noise_dim=8,
        subset=128,
        eval_samples=50,
        eval_every=1,
        min_diversity=0.0,
        seed=0,
        device=CPU,
    )
    val_fids = {m["epoch"]: m["val_fid"] for m in final.history}
    best = min(val_fids, key=val_fids.get)
    assert best != 4, "the test needs a run whose last epoch is not its best"
    assert final.metrics["best_epoch"] == best and final.metrics["val_fid"] == val_fids[best]
    # The generator handed back is that epoch's, not the last: it scores the same FID again on the same images.
    again = FidScorer(clf, to_float(Split.of(data.x_val[:50], data.y_val[:50], CPU).x), seed=0)(final.G)
    assert again["fid"] == pytest.approx(val_fids[best], rel=1e-9)


def test_scoring_every_few_epochs_scores_those_and_the_last(data, clf):
    final = train_and_score(
        hp(),
        Recipe(batch_size=64),
        clf,
        data,
        epochs=5,
        noise_dim=8,
        subset=64,
        eval_samples=20,
        eval_every=2,
        min_diversity=0.0,
        seed=0,
        device=CPU,
    )
    assert [m["epoch"] for m in final.history if "val_fid" in m] == [2, 4, 5]
    assert final.metrics["best_epoch"] in (2, 4, 5)


def test_the_final_gan_fails_when_every_scored_epoch_collapsed(data, clf):
    with pytest.raises(Collapsed) as e:
        train_and_score(
            hp(),
            Recipe(batch_size=64),
            clf,
            data,
            epochs=2,
            noise_dim=8,
            subset=64,
            eval_samples=20,
            eval_every=1,
            min_diversity=10.0,
            seed=0,
            device=CPU,
        )
    msg = str(e.value)
    assert "collapsed at every scored epoch" in msg and "epoch 1: 0." in msg and "epoch 2: 0." in msg
    assert "min_diversity 10.0" in msg and "'generator': 'deconv'" in msg


def test_the_gan_stage_writes_nothing_when_the_gan_collapsed(tmp_path, prepared_mnist, write_params, clf):
    """The stage script itself: exit 2, a one-line error naming the config and diversity, no output files."""
    prepared = prepared_mnist(n_train=600, n_test=100, val_fraction=0.2)
    write_params(
        tmp_path / "params.yaml",
        {
            "gan": {"epochs": 2, "batch_size": 64, "noise_dim": 8, "train_subset": 64},
            "gan_search": {"eval_samples": 20, "min_diversity": 10.0},
        },
    )
    save_checkpoint(tmp_path / "clf.pt", clf, data_hash=load_prepared(prepared).content_hash)
    (tmp_path / "best.yaml").write_text(yaml.safe_dump({"config": hp().model_dump()}))
    outs = ["model.pt", "log.csv"]
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "pipeline/gan.py"),
            str(prepared),
            "clf.pt",
            "best.yaml",
            outs[0],
            "--log",
            outs[1],
        ],
        cwd=tmp_path,
        env={**os.environ, "RAY_ADDRESS": "local"},  # trains in this process, whatever Ray runs on the machine
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: the GAN collapsed at every scored epoch" in proc.stderr and "Traceback" not in proc.stderr
    assert not [f for f in outs if (tmp_path / f).exists()]


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
    from grutune.gan import class_grid

    torch.manual_seed(0)
    G = new_gan(hp(), shape=(28, 28, 1), noise_dim=8, device=CPU).G
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


def test_a_final_gan_resumed_from_an_epochs_checkpoint_ends_as_a_straight_run(data, clf):
    """`train_best` with `checkpoint` and `resume` (as the gan stage uses them on a cluster): restarted from its
    epoch-2 state, it keeps the same epoch with the same weights as a run that never stopped. The noise comes from
    torch's global random state, so this depends on restoring it."""
    import io

    saved = []

    def checkpoint(state: dict) -> None:  # written at once, as a checkpoint is (the state holds live tensors)
        f = io.BytesIO()
        torch.save(state, f)
        saved.append(f.getvalue())

    kw = dict(epochs=4, noise_dim=8, subset=128, eval_samples=50, eval_every=1, min_diversity=0.0, seed=0, device=CPU)
    args = (hp(lr_g=2e-2, lr_d=2e-2), Recipe(batch_size=32, ema_decay=0.9), clf, data)
    straight = train_best(*args, **kw, checkpoint=checkpoint)
    states = [torch.load(io.BytesIO(b), weights_only=True) for b in saved]
    assert [s["epoch"] for s in states] == [1, 2, 3, 4]
    torch.rand(1000)  # other random draws between the stop and the resume
    resumed = train_best(*args, **kw, resume=states[1])
    assert (resumed.best_epoch, resumed.val_fid) == (straight.best_epoch, straight.val_fid)
    assert [m["g_loss"] for m in resumed.history] == [m["g_loss"] for m in straight.history]
    for name, w in straight.G.state_dict().items():
        assert torch.equal(w, resumed.G.state_dict()[name]), name
