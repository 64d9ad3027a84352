"""Recurrent image classifiers: a model that reads an image row by row (GRU, LSTM or plain RNN) after a CNN
backbone, and the parts the GAN's discriminator shares with it (gan/models.py builds the GAN from them).

Images enter every model as float tensors (B, H, W, C) in [0, 1] (see `to_float`). Each model keeps its
constructor arguments in `self.kwargs`, so a checkpoint {"model": state_dict, "model_kwargs": model.kwargs}
rebuilds it exactly. Parts are chosen by name from the plain-dict registries CELLS and BACKBONES.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "BACKBONES",
    "BACKBONE_NAMES",
    "BasicBlock",
    "CELLS",
    "CELL_NAMES",
    "RecurrentClassifier",
    "build_classifier",
    "check_shape",
    "get",
    "output_shape",
    "to_float",
    "to_uint8",
]

# --------------------------------------------------------------------------- registries


def get(registry: dict, name: str, what: str):
    """registry[name], or a ValueError that lists the valid names."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(registry)}") from None


def _conv_norm(cin: int, cout: int, kernel: int, stride: int, norm: str) -> list[nn.Module]:
    """A 'same'-padded conv and its normalisation: BatchNorm for classifiers, spectral norm for the discriminator.

    Spectral norm keeps the discriminator Lipschitz without BatchNorm, whose batch statistics would mix real
    and fake batches. A conv followed by BatchNorm has no bias: BatchNorm would cancel it (and its gradient).
    """
    conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=norm != "batch")
    if norm == "batch":
        return [conv, nn.BatchNorm2d(cout)]
    if norm == "spectral":
        return [spectral_norm(conv)]
    raise ValueError(f"unknown norm {norm!r}; valid: batch, spectral")


def _none(in_channels: int, norm: str = "batch") -> nn.Module:
    """No backbone: the image rows themselves become the time steps."""
    return nn.Identity()


def _conv(in_channels: int, norm: str = "batch") -> nn.Module:
    """Two 3x3 conv-norm-ReLU layers; the second halves the rows (28 -> 14 time steps)."""
    return nn.Sequential(
        *_conv_norm(in_channels, 32, 3, 1, norm),
        nn.ReLU(inplace=True),  # (B, C, H, W) -> (B, 32, H, W)
        *_conv_norm(32, 32, 3, 2, norm),
        nn.ReLU(inplace=True),  # -> (B, 32, H/2, W/2)
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs plus a shortcut (a strided 1x1 conv where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm(cin, cout, 3, stride, norm),
            nn.ReLU(inplace=True),  # (B, cin, H, W) -> (B, cout, H/s, W/s)
            *_conv_norm(cout, cout, 3, 1, norm),  # same shape
        )
        same = stride == 1 and cin == cout
        self.shortcut = nn.Identity() if same else nn.Sequential(*_conv_norm(cin, cout, 1, stride, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _resnet(in_channels: int, norm: str = "batch") -> nn.Module:
    """A stem conv and two BasicBlocks, the second strided (28 -> 14 time steps)."""
    return nn.Sequential(
        *_conv_norm(in_channels, 16, 3, 1, norm),
        nn.ReLU(inplace=True),  # (B, C, H, W) -> (B, 16, H, W)
        BasicBlock(16, 16, 1, norm),  # same shape
        BasicBlock(16, 32, 2, norm),  # -> (B, 32, H/2, W/2)
    )


CELLS: dict[str, type[nn.RNNBase]] = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}
# Each maps in_channels (and norm: "batch" | "spectral") to a module (B, C, H, W) -> (B, C', H', W').
BACKBONES: dict[str, Callable[..., nn.Module]] = {"none": _none, "conv": _conv, "resnet": _resnet}
CELL_NAMES = tuple(CELLS)
BACKBONE_NAMES = tuple(BACKBONES)


def output_shape(module: nn.Module, in_chw: tuple[int, int, int]) -> tuple[int, ...]:
    """Shape (C', H', W') that `module` gives for one (C, H, W) input; run in eval mode so no statistic moves."""
    was_training = module.training
    module.eval()
    with torch.no_grad():
        shape = tuple(module(torch.zeros(1, *in_chw)).shape[1:])
    module.train(was_training)
    return shape


def check_shape(shape, what: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{what} must be (H, W, C) with positive sizes, got {shape}")
    return shape


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images as stored (B, H, W, C) -> float32 in [0, 1], the models' input."""
    x = torch.as_tensor(x)
    if x.dtype != torch.uint8:  # a float here has probably been scaled already
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    return x.to(torch.float32).div_(255)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8, the storage format (the inverse of `to_float` up to rounding)."""
    return x.detach().mul(255).round_().clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- classifier


class RecurrentClassifier(nn.Module):
    """Reads an image as a sequence of rows (of a backbone's feature map) with a recurrent cell (GRU, LSTM or RNN
    from CELLS), then classifies.

    `features(x)` is the final hidden state of the last layer, both directions concatenated when
    bidirectional: (B, feature_dim) with feature_dim = hidden_size * (2 if bidirectional else 1).
    """

    def __init__(
        self,
        *,
        in_shape: tuple[int, int, int],
        num_classes: int,
        cell: str,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        backbone: str,
    ):
        super().__init__()
        in_shape = check_shape(in_shape, "in_shape")
        self.kwargs = dict(
            in_shape=in_shape,
            num_classes=int(num_classes),
            cell=cell,
            hidden_size=int(hidden_size),
            num_layers=int(num_layers),
            bidirectional=bool(bidirectional),
            dropout=float(dropout),
            backbone=backbone,
        )
        self.in_shape = in_shape
        H, W, C = in_shape
        self.backbone = get(BACKBONES, backbone, "backbone")(C)
        c, h, w = output_shape(self.backbone, (C, H, W))
        self.rnn = get(CELLS, cell, "cell")(
            input_size=c * w,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,  # between layers only; torch warns if there is one layer
        )
        self.num_directions = 2 if bidirectional else 1
        self.feature_dim = hidden_size * self.num_directions
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) in [0, 1] -> (B, feature_dim), the representation the head sees (used for FID)."""
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"expected images (B, {', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}")
        x = (x - 0.5) / 0.5
        x = x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        x = self.backbone(x)  # -> (B, C', H', W')
        B, C, H, W = x.shape
        x = x.permute(0, 2, 1, 3).reshape(B, H, C * W)  # rows become time steps: -> (B, H', C' * W')
        _, h_n = self.rnn(x)  # h_n: (num_layers * D, B, hidden)
        if isinstance(h_n, tuple):  # LSTM returns (h_n, c_n)
            h_n = h_n[0]
        h_n = h_n.view(self.rnn.num_layers, self.num_directions, B, self.rnn.hidden_size)[-1]  # -> (D, B, hidden)
        return h_n.transpose(0, 1).reshape(B, self.feature_dim)  # -> (B, D * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) in [0, 1] -> logits (B, num_classes)."""
        return self.head(self.dropout(self.features(x)))


def build_classifier(kwargs: dict, state: dict | None = None) -> RecurrentClassifier:
    """Rebuild a classifier from its stored `kwargs`, with its weights when `state` is given."""
    model = RecurrentClassifier(**kwargs)
    if state is not None:
        model.load_state_dict(state)
    return model
