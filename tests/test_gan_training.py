"""How a GAN is trained (grutune.gan.training): every generator with each loss, the EMA's warm-up, R1, and the cosine
schedule that a resumed run continues."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from grutune.data import load_prepared
from grutune.gan.models import GENERATOR_NAMES
from grutune.gan.scoring import generate
from grutune.gan.training import Recipe, fit_gan, new_gan
from grutune.training import Split
from tiny_models import gan_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(prepared_mnist):
    return load_prepared(prepared_mnist(n_train=600, n_test=100, val_fraction=0.2))


@pytest.mark.parametrize("loss", ["hinge", "nonsaturating"])
@pytest.mark.parametrize("kind", GENERATOR_NAMES)
def test_every_generator_trains_with_each_loss(kind, loss, data):
    torch.manual_seed(0)
    gan = new_gan(gan_config(generator=kind), shape=(28, 28, 1), noise_dim=8, device=CPU, ema_decay=0.9)
    before = {k: v.clone() for k, v in gan.G.state_dict().items()}
    (m,) = fit_gan(
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
    gan = new_gan(gan_config(), shape=(28, 28, 1), noise_dim=8, device=CPU, ema_decay=0.999)
    start = {k: v.clone() for k, v in gan.G.state_dict().items()}
    fit_gan(
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
    gan = new_gan(gan_config(generator=kind), shape=(28, 28, 1), noise_dim=8, device=cuda, ema_decay=0.999)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recipe = Recipe(batch_size=64, ema_decay=0.999, r1_gamma=1.0, lr_schedule="cosine")
        fit_gan(gan, Split.of(data.x_train, data.y_train, cuda), recipe, epochs=1, seed=0, subset=128)
        samples = generate(gan.sampler, 16, seed=0, device=cuda)
    assert samples.device.type == "cuda" and samples.shape == (16, 28, 28, 1)
    assert all(p.device.type == "cuda" for p in gan.sampler.parameters())


def test_r1_penalises_the_gradient_at_real_images(data):
    torch.manual_seed(0)
    gan = new_gan(gan_config(), shape=(28, 28, 1), noise_dim=8, device=CPU)
    (m,) = fit_gan(
        gan,
        Split.of(data.x_train, data.y_train, CPU),
        Recipe(batch_size=64, r1_gamma=1.0),
        epochs=1,
        seed=0,
        subset=256,
    )
    assert m["r1"] > 0
    (m,) = fit_gan(
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
        return new_gan(gan_config(lr_g=1e-3, lr_d=4e-3), shape=(28, 28, 1), noise_dim=8, device=CPU)

    straight = fresh()
    history = fit_gan(straight, train, recipe, epochs=2, seed=0, subset=256)
    assert history[0]["lr_g"] == pytest.approx(1e-3 * factor[3])
    assert history[1]["lr_g"] == pytest.approx(1e-3 * factor[7])
    assert straight.opt_d.param_groups[0]["lr"] == pytest.approx(4e-3 * factor[7])

    stopped = fresh()  # a run of 2 epochs, killed after the first
    with pytest.raises(_Stop):
        fit_gan(stopped, train, recipe, epochs=2, seed=0, subset=256, on_epoch=_stop)
    saved = {k: copy.deepcopy(v.state_dict()) for k, v in stopped.parts().items()}
    noise = torch.get_rng_state()  # the noise G draws comes from torch's global generator (train_best saves it too)
    resumed = fresh()
    torch.set_rng_state(noise)
    for k, part in resumed.parts().items():
        part.load_state_dict(saved[k])
    fit_gan(resumed, train, recipe, epochs=2, seed=0, subset=256, start_epoch=1)
    for k, v in straight.G.state_dict().items():
        assert torch.allclose(resumed.G.state_dict()[k], v), k

    constant = fresh()
    (m,) = fit_gan(constant, train, Recipe(batch_size=64, ema_decay=0.0), epochs=1, seed=0, subset=256)
    assert "lr_g" not in m and constant.opt_g.param_groups[0]["lr"] == 1e-3


class _Stop(Exception):
    pass


def _stop(m: dict) -> None:
    raise _Stop


@pytest.mark.parametrize("kind", GENERATOR_NAMES)
def test_a_conditional_gan_trains_both_players_on_the_classes_of_its_batches(kind, data):
    """Every weight of both players moves, the class embeddings too; the fakes of each batch are drawn for its real
    images' classes, so both players see the data's class mix."""
    torch.manual_seed(0)
    gan = new_gan(
        gan_config(generator=kind, conditional=True), shape=(28, 28, 1), noise_dim=8, device=CPU, num_classes=10
    )
    assert gan.G.conditional and gan.D.num_classes == 10
    before = {k: v.clone() for part in (gan.G, gan.D) for k, v in part.state_dict().items()}
    seen = []
    forward = gan.G.forward
    gan.G.forward = lambda z, y=None: (seen.append(y), forward(z, y))[1]
    (m,) = fit_gan(
        gan,
        Split.of(data.x_train, data.y_train, CPU),
        Recipe(batch_size=64, r1_gamma=0.1),
        epochs=1,
        seed=0,
        subset=256,
    )
    assert math.isfinite(m["d_loss"]) and math.isfinite(m["g_loss"]) and m["r1"] > 0
    after = {k: v for part in (gan.G, gan.D) for k, v in part.state_dict().items()}
    moved = [k for k in before if before[k].is_floating_point() and not k.endswith("_u") and not k.endswith("_v")]
    assert any("embed" in k for k in moved)
    assert all(not torch.equal(before[k], after[k]) for k in moved), [
        k for k in moved if torch.equal(before[k], after[k])
    ]
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(0 * 100_003))[:256]
    torch.testing.assert_close(torch.cat(seen), torch.as_tensor(data.y_train)[order].long())


def test_a_conditional_gan_needs_the_number_of_classes():
    with pytest.raises(ValueError, match="needs the dataset's number of classes"):
        new_gan(gan_config(conditional=True), shape=(28, 28, 1), noise_dim=8, device=CPU)
