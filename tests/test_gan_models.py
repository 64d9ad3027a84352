"""The GAN's players, every registered generator and the discriminator on every backbone: shapes, outputs in range,
a gradient for every parameter, exact rebuild from kwargs, and what each must learn or depend on."""

import pytest
import torch
import torch.nn.functional as F

from grutune.gan.models import (
    GENERATOR_NAMES,
    GENERATORS,
    Discriminator,
    RowGenerator,
    build_discriminator,
    build_generator,
)
from grutune.models import BACKBONE_NAMES
from grutune.objectives import GENERATOR_KINDS

# Any warning fails the test.
pytestmark = pytest.mark.filterwarnings("error")

SHAPES = [(28, 28, 1), (32, 32, 3)]
B = 4


def assert_all_params_get_gradient(model: torch.nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without a gradient: {missing}"


def assert_rebuilds(model: torch.nn.Module, build, x: torch.Tensor) -> None:
    """Rebuilding a model from its kwargs and state_dict gives exactly the same function (in eval mode)."""
    rebuilt = build(model.kwargs)
    rebuilt.load_state_dict(model.state_dict())
    for m in (model, rebuilt):
        m.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def generator(shape, num_layers=1, kind="rows"):
    return GENERATORS[kind](out_shape=shape, noise_dim=6, hidden_size=16, num_layers=num_layers)


def test_generator_registry():
    assert GENERATOR_NAMES == ("rows", "rows_conv", "deconv") == tuple(GENERATORS) == GENERATOR_KINDS
    assert all(GENERATORS[k].kind == k for k in GENERATORS)
    with pytest.raises(ValueError, match="unknown generator 'vae'; valid: rows, rows_conv, deconv"):
        build_generator(dict(kind="vae", out_shape=(28, 28, 1), noise_dim=6, hidden_size=16, num_layers=1))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", GENERATOR_NAMES)
def test_generator(kind, num_layers, shape):
    torch.manual_seed(0)
    G = generator(shape, num_layers, kind)
    images = G.sample(B)
    assert images.shape == (B, *shape)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    (images - torch.rand_like(images)).square().mean().backward()
    assert_all_params_get_gradient(G)

    rebuilt = build_generator(G.kwargs)
    assert type(rebuilt) is type(G) and rebuilt.kwargs == G.kwargs
    rebuilt.load_state_dict(G.state_dict())
    z = torch.randn(B, 6)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(z), G(z), rtol=0, atol=0)
    gen = torch.Generator().manual_seed(1)
    first = G.sample(2, generator=gen)
    assert torch.equal(first, G.sample(2, generator=gen.manual_seed(1)))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", GENERATOR_NAMES)
def test_an_untrained_generator_draws_different_images(kind, seed):
    """At the full budget's size, an untrained generator's samples spread: per-pixel std 0.057-0.083 across five
    seeds with the variance-preserving init of its output layers, 0.040 (rows) and 0.005 (rows_conv, deconv) with
    torch's defaults, which start nearly every sample as one grey image (benchmarks/gan_start.py)."""
    torch.manual_seed(seed)
    G = build_generator(dict(kind=kind, out_shape=(28, 28, 1), noise_dim=64, hidden_size=256, num_layers=1))
    with torch.no_grad():
        images = G(torch.randn(512, 64, generator=torch.Generator().manual_seed(9)))
    assert images.std(0).mean() > 0.05


@pytest.mark.parametrize("kind", GENERATOR_NAMES)
def test_every_pixel_depends_on_the_noise(kind):
    """Every row, and every pixel, changes with z (a generator that ignores z can only collapse to one image)."""
    torch.manual_seed(0)
    G = generator((8, 8, 1), 2, kind)
    z = torch.randn(16, G.noise_dim, generator=torch.Generator().manual_seed(3), requires_grad=True)
    images = G(z)
    for t in (0, 7):
        (grad,) = torch.autograd.grad(images[:, t].sum(), z, retain_graph=True)
        assert grad.abs().sum() > 0
    assert (images.detach().std(0) > 0).all()


def test_deconv_needs_sizes_divisible_by_4():
    with pytest.raises(ValueError, match="multiples of 4, got 30x28"):
        generator((30, 28, 1), kind="deconv")


def test_deconv_reads_all_of_the_noise_even_when_it_does_not_split_evenly():
    """noise_dim 6 in 4 steps: z is padded to 8; the last of the 6 values still changes the image."""
    G = generator((8, 8, 1), kind="deconv")
    z = torch.randn(2, 6, requires_grad=True)
    (grad,) = torch.autograd.grad(G(z).sum(), z)
    assert (grad.abs()[:, -1] > 0).all()


@pytest.mark.parametrize("num_layers", [1, 2])
def test_rows_generator_draws_row_by_row(num_layers):
    """Rows come out in order: row t depends only on steps 0..t, so running k steps gives the first k rows."""
    G = generator((8, 5, 2), num_layers)
    assert isinstance(G, RowGenerator)
    z = torch.randn(3, G.noise_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        rows = G(z).reshape(3, 8, 5 * 2)
        G.rnn.steps = 4
        torch.testing.assert_close(torch.sigmoid(G.head(G.rnn(z))), rows[:, :4])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_discriminator(backbone, shape):
    torch.manual_seed(0)
    D = Discriminator(in_shape=shape, backbone=backbone)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    x = torch.rand(B, *shape)
    logits = D(x)
    assert logits.shape == (B,)
    assert torch.isfinite(logits).all()
    F.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0, 0.0, 1.0])).backward()
    assert_all_params_get_gradient(D)

    assert_rebuilds(D, build_discriminator, x)


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_discriminator_learns_real_from_generated(backbone):
    """An untrained generator's blur against images with one bright row: a few Adam steps separate them."""
    torch.manual_seed(0)
    shape = (28, 28, 1)
    G, D = generator(shape), Discriminator(in_shape=shape, backbone=backbone)
    opt = torch.optim.Adam(D.parameters(), lr=1e-3)

    def batch(n=32):
        real = torch.rand(n, *shape) * 0.5
        real[torch.arange(n), torch.randint(0, 28, (n,))] = 1.0
        with torch.no_grad():
            fake = G.sample(n)
        return torch.cat([real, fake]), torch.cat([torch.ones(n), torch.zeros(n)])

    for _ in range(30):
        x, y = batch()
        loss = F.binary_cross_entropy_with_logits(D(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch(128)
    with torch.no_grad():
        accuracy = ((D(x) > 0).float() == y).float().mean().item()
    assert accuracy > 0.9


def test_gan_step_trains_both_players():
    """One adversarial step: the generator's gradient flows through the discriminator."""
    torch.manual_seed(0)
    shape = (28, 28, 1)
    G, D = generator(shape), Discriminator(in_shape=shape, backbone="conv")
    fake = G.sample(B)
    F.binary_cross_entropy_with_logits(D(fake), torch.ones(B)).backward()
    assert_all_params_get_gradient(G)


def test_unknown_discriminator_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="unknown backbone 'vit'; valid: none, conv, resnet"):
        Discriminator(in_shape=(28, 28, 1), backbone="vit")
