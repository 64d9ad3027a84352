"""Every registered classifier model and backbone: shapes, finite outputs, a gradient for every parameter, exact rebuild
from kwargs. The GAN's models: tests/test_gan_models.py."""

import pytest
import torch
import torch.nn.functional as F

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


def test_get_names_the_valid_names_of_a_registry():
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


@pytest.mark.parametrize("norm", ["batch", "spectral"])
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_backbones_map_images_to_feature_maps(backbone, norm):
    out = BACKBONES[backbone](3, norm=norm)(torch.rand(2, 3, 28, 28))
    assert out.ndim == 4 and out.shape[0] == 2
    assert out.shape[2] == (28 if backbone == "none" else 14)
