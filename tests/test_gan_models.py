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


# --------------------------------------------------------------------------- class-conditional players


def conditional(shape, num_layers=1, kind="rows", k=3):
    return GENERATORS[kind](out_shape=shape, noise_dim=6, hidden_size=16, num_layers=num_layers, num_classes=k)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", GENERATOR_NAMES)
def test_conditional_generator(kind, shape):
    """Every kind takes a class: the shape and range of its images, a gradient for every parameter (the class
    embedding too), an exact rebuild from its kwargs, and samples that differ by class from the same noise."""
    torch.manual_seed(0)
    G = conditional(shape, kind=kind)
    assert G.conditional and G.kwargs["num_classes"] == 3
    y = torch.tensor([0, 1, 2, 1])
    z = torch.randn(B, 6)
    images = G(z, y)
    assert images.shape == (B, *shape) and images.min() >= 0 and images.max() <= 1
    (images - torch.rand_like(images)).square().mean().backward()
    assert_all_params_get_gradient(G)
    rebuilt = build_generator(G.kwargs)
    rebuilt.load_state_dict(G.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(z, y), G(z, y), rtol=0, atol=0)
        same_noise = z[:1].expand(3, 6)
        by_class = G(same_noise, torch.arange(3))
    assert (by_class[0] - by_class[1]).abs().max() > 0 and (by_class[1] - by_class[2]).abs().max() > 0
    assert G.sample(5).shape == (5, *shape)  # without classes: each class in turn
    torch.testing.assert_close(G.classes_for(5), torch.tensor([0, 1, 2, 0, 1]))


@pytest.mark.parametrize("kind", GENERATOR_NAMES)
def test_each_generator_refuses_a_class_it_cannot_take_and_asks_for_one_it_needs(kind):
    z = torch.randn(2, 6)
    with pytest.raises(ValueError, match="unconditional: it cannot take a class"):
        generator((8, 8, 1), kind=kind)(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class-conditional: give each sample's class"):
        conditional((8, 8, 1), kind=kind)(z)
    with pytest.raises(ValueError, match="num_classes must be 0 .* or at least 2, got 1"):
        conditional((8, 8, 1), kind=kind, k=1)


@pytest.mark.parametrize("kind", GENERATOR_NAMES)
def test_an_unconditional_generator_is_built_as_before_conditioning(kind):
    """num_classes 0 adds no layer and draws no random number more: the same seed gives the same weights as a
    generator built without the argument, so an unconditional GAN trains as it did."""
    torch.manual_seed(5)
    before = GENERATORS[kind](out_shape=(28, 28, 1), noise_dim=6, hidden_size=16, num_layers=1)
    after_init = torch.rand(1)
    torch.manual_seed(5)
    now = GENERATORS[kind](out_shape=(28, 28, 1), noise_dim=6, hidden_size=16, num_layers=1, num_classes=0)
    assert torch.equal(torch.rand(1), after_init)
    assert before.state_dict().keys() == now.state_dict().keys()
    assert not any("embed" in k for k in now.state_dict())
    assert all(torch.equal(v, now.state_dict()[k]) for k, v in before.state_dict().items())
    D = Discriminator(in_shape=(28, 28, 1), backbone="conv")
    assert not any("embed" in k for k in D.state_dict())


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_projection_discriminator(backbone):
    """logit(x, y) = psi(phi(x)) + <embed(y), phi(x)>: the class moves the logit by exactly the projection of phi(x)
    on the classes' embeddings; every parameter gets a gradient; it rebuilds exactly."""
    torch.manual_seed(0)
    shape = (28, 28, 1)
    D = Discriminator(in_shape=shape, backbone=backbone, num_classes=4)
    x, y = torch.rand(B, *shape), torch.tensor([0, 1, 2, 3])
    logits = D(x, y)
    assert logits.shape == (B,) and torch.isfinite(logits).all()
    F.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0, 0.0, 1.0])).backward()
    assert_all_params_get_gradient(D)
    D.eval()
    with torch.no_grad():
        phi = []
        handle = D.linear.register_forward_hook(lambda m, inp, out: phi.append(inp[0]))
        a, b = D(x, y), D(x, (y + 1) % 4)
        handle.remove()
        emb = D.embed.weight
        torch.testing.assert_close(a - b, ((emb[y] - emb[(y + 1) % 4]) * phi[0]).sum(1))
    rebuilt = build_discriminator(D.kwargs)
    rebuilt.load_state_dict(D.state_dict())
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, y), D(x, y), rtol=0, atol=0)
    with pytest.raises(ValueError, match="class-conditional: give each image's class"):
        D(x)
    with pytest.raises(ValueError, match="unconditional: it cannot take a class"):
        Discriminator(in_shape=shape, backbone=backbone)(x, y)


def test_a_conditional_discriminator_learns_which_class_an_image_shows():
    """Real images whose bright row is the class: a few steps teach it to tell a right class from a wrong one."""
    torch.manual_seed(0)
    shape = (28, 28, 1)
    D = Discriminator(in_shape=shape, backbone="conv", num_classes=4)
    opt = torch.optim.Adam(D.parameters(), lr=1e-3)

    def batch(n=32):
        y = torch.randint(0, 4, (n,))
        x = torch.rand(n, *shape) * 0.3
        x[torch.arange(n), 4 + 6 * y] = 1.0
        wrong = (y + torch.randint(1, 4, (n,))) % 4
        return torch.cat([x, x]), torch.cat([y, wrong]), torch.cat([torch.ones(n), torch.zeros(n)])

    for _ in range(40):
        x, y, t = batch()
        loss = F.binary_cross_entropy_with_logits(D(x, y), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y, t = batch(128)
    with torch.no_grad():
        accuracy = ((D(x, y) > 0).float() == t).float().mean().item()
    assert accuracy > 0.9
