"""Every registered model: shapes, finite outputs, a gradient for every parameter, exact rebuild from kwargs."""

import pytest
import torch
import torch.nn.functional as F

from grutune.config import GENERATOR_KINDS
from grutune.gan_models import (
    GENERATOR_NAMES,
    GENERATORS,
    Discriminator,
    RowGenerator,
    build_discriminator,
    build_generator,
)
from grutune.models import (
    BACKBONE_NAMES,
    BACKBONES,
    CELL_NAMES,
    CELLS,
    RecurrentClassifier,
    build_classifier,
    get,
    to_float,
    to_uint8,
)

# Any warning (e.g. torch's "dropout with num_layers=1") fails the test.
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


def classifier(shape, cell="gru", backbone="none", bidirectional=False, num_layers=1, **kw) -> RecurrentClassifier:
    args = dict(
        in_shape=shape,
        num_classes=10,
        cell=cell,
        hidden_size=8,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dropout=0.25,
        backbone=backbone,
    )
    return RecurrentClassifier(**{**args, **kw})


def test_registries_list_names():
    assert CELL_NAMES == ("gru", "lstm", "rnn") == tuple(CELLS)
    assert BACKBONE_NAMES == ("none", "conv", "resnet") == tuple(BACKBONES)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_classifier(cell, backbone, bidirectional, num_layers, shape):
    torch.manual_seed(0)
    model = classifier(shape, cell, backbone, bidirectional, num_layers)
    x = torch.rand(B, *shape)

    feats = model.features(x)
    assert feats.shape == (B, model.feature_dim) == (B, 8 * (2 if bidirectional else 1))
    logits = model(x)
    assert logits.shape == (B, 10)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.randint(0, 10, (B,))).backward()
    assert_all_params_get_gradient(model)

    # A checkpoint is {"model": state_dict, "model_kwargs": kwargs}; rebuilding it gives the same function.
    assert_rebuilds(model, build_classifier, x)


def test_classifier_kwargs_survive_a_weights_only_checkpoint(tmp_path):
    model = classifier((28, 28, 1), "lstm", "conv", bidirectional=True, num_layers=2)
    torch.save({"model": model.state_dict(), "kwargs": model.kwargs}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["kwargs"] == model.kwargs
    build_classifier(ckpt["kwargs"]).load_state_dict(ckpt["model"])


def test_classifier_rejects_wrong_image_shape():
    with pytest.raises(ValueError, match=r"expected images \(B, 28, 28, 1\)"):
        classifier((28, 28, 1))(torch.rand(2, 28, 28, 3))


@pytest.mark.parametrize(
    "kw, what, valid",
    [
        (dict(cell="transformer"), "cell", CELL_NAMES),
        (dict(backbone="vit"), "backbone", BACKBONE_NAMES),
    ],
)
def test_unknown_name_lists_valid_names(kw, what, valid):
    with pytest.raises(ValueError, match=f"unknown {what} '{next(iter(kw.values()))}'; valid: {', '.join(valid)}"):
        classifier((28, 28, 1), **kw)


def test_unknown_discriminator_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="unknown backbone 'vit'; valid: none, conv, resnet"):
        Discriminator(in_shape=(28, 28, 1), backbone="vit")
    with pytest.raises(ValueError, match="unknown cell 'GRU'; valid: gru, lstm, rnn"):
        get(CELLS, "GRU", "cell")


def test_classifier_learns_which_row_is_bright():
    """10 classes, class k = row 2k+4 is bright on a noisy background: a row-reading GRU must learn it."""
    g = torch.Generator().manual_seed(0)
    n = 512
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 28, 28, 1, generator=g) * 0.5
    x[torch.arange(n), 2 * y + 4] = 1.0
    torch.manual_seed(0)
    model = classifier((28, 28, 1), "gru", "none", hidden_size=32, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        idx = torch.randint(0, n, (64,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9


def test_to_float_and_back():
    x = torch.tensor([[0, 128, 255]], dtype=torch.uint8)
    f = to_float(x)
    assert f.dtype == torch.float32
    torch.testing.assert_close(f, torch.tensor([[0.0, 128 / 255, 1.0]]))
    assert torch.equal(to_uint8(f), x)
    with pytest.raises(TypeError, match="uint8"):
        to_float(f)


# --------------------------------------------------------------------------- GAN


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


@pytest.mark.parametrize("norm", ["batch", "spectral"])
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_backbones_map_images_to_feature_maps(backbone, norm):
    out = BACKBONES[backbone](3, norm=norm)(torch.rand(2, 3, 28, 28))
    assert out.ndim == 4 and out.shape[0] == 2
    assert out.shape[2] == (28 if backbone == "none" else 14)
