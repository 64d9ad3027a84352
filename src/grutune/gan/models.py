"""The GAN's players: generators whose GRU draws an image (registered by kind in GENERATORS), and the
discriminator, a spectral-normalised backbone from grutune.models.BACKBONES.

Apart from grutune/models.py so that the classifier's stages, which never build a GAN, do not depend on this file: a
change to the GAN's models reruns the GAN stages only. Images are float tensors (B, H, W, C) in [0, 1], and each model
keeps its constructor arguments in `self.kwargs`, as the classifier does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from grutune.models import BACKBONES, check_shape, get, output_shape

__all__ = [
    "DeconvGenerator",
    "Discriminator",
    "GENERATORS",
    "GENERATOR_NAMES",
    "Generator",
    "RowConvGenerator",
    "RowGenerator",
    "build_discriminator",
    "build_generator",
]


class Generator(nn.Module):
    """What every generator shares: noise (B, noise_dim) -> images (B, H, W, C) in [0, 1], and `sample`.

    A subclass sets `kind` (its name in GENERATORS) and builds its layers from out_shape, noise_dim, hidden_size
    (its GRU's) and num_layers. `self.kwargs` holds all five, so `build_generator(kwargs)` rebuilds it.
    """

    kind = ""

    def __init__(self, *, out_shape: tuple[int, int, int], noise_dim: int, hidden_size: int, num_layers: int):
        super().__init__()
        out_shape = check_shape(out_shape, "out_shape")
        self.kwargs = dict(
            kind=self.kind,
            out_shape=out_shape,
            noise_dim=int(noise_dim),
            hidden_size=int(hidden_size),
            num_layers=int(num_layers),
        )
        self.out_shape = out_shape
        self.noise_dim = int(noise_dim)

    def sample(
        self, n: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n images from z ~ N(0, I) (B, H, W, C); gradients flow, so wrap in torch.no_grad() to only look."""
        if device is None:
            device = next(self.parameters()).device
        z = torch.randn(n, self.noise_dim, device=device, generator=generator)
        return self(z)


def _variance_preserving(*layers: nn.Module) -> None:
    """Initialise a generator's output layers variance-preserving: Kaiming normal weights (for the LeakyReLU(0.2)
    between them) and zero biases.

    With torch's defaults these layers shrink the spread the noise gives the recurrent states about sevenfold, so an
    untrained generator draws nearly one grey image whatever the noise (sample diversity 0.02 for rows_conv and
    deconv, 0.15 for rows; 0.2-0.35 with this init) and about one full-budget run in ten drove every sample into the
    sigmoid's floor and stayed collapsed (benchmarks/gan_start.py: 4 of 40 starts against 0 of 40 with this init).
    """
    for layer in layers:
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(layer.weight, a=0.2, nonlinearity="leaky_relu")
            nn.init.zeros_(layer.bias)


class _NoiseDrivenGRU(nn.Module):
    """A GRU that runs `steps` steps fed z at every step, started from a state set by z: (B, noise_dim) ->
    (B, steps, hidden). Used by the row-wise generators."""

    def __init__(self, noise_dim: int, hidden_size: int, num_layers: int, steps: int):
        super().__init__()
        self.steps, self.noise_dim = steps, noise_dim
        self.init = nn.Linear(noise_dim, hidden_size * num_layers)  # z -> the initial state of every layer
        # Start with z's projection strong (pre-tanh std about 3): with the default init every sample starts out
        # almost the same image, and a short GAN run collapses onto it.
        nn.init.normal_(self.init.weight, std=3 / noise_dim**0.5)
        nn.init.zeros_(self.init.bias)
        self.gru = nn.GRU(noise_dim, hidden_size, num_layers, batch_first=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        B, L, Hd = z.shape[0], self.gru.num_layers, self.gru.hidden_size
        h0 = torch.tanh(self.init(z)).view(B, L, Hd).transpose(0, 1).contiguous()  # -> (num_layers, B, hidden)
        steps = z.unsqueeze(1).expand(B, self.steps, self.noise_dim)  # (B, noise_dim) -> (B, steps, noise_dim)
        out, _ = self.gru(steps, h0)  # -> (B, steps, hidden): step t's state draws row t
        return out


class RowGenerator(Generator):
    """`rows`: draws an image row by row: a GRU started from the noise z, fed z at every step, emits one row per step.

    The noise sets the initial hidden state and is the input at every step, so every row depends on it. Feeding back
    the previous row instead (an autoregressive drawing) collapsed to a single image on Fashion-MNIST: the rows it
    had drawn drowned out z.
    """

    kind = "rows"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        H, W, C = self.out_shape
        self.rnn = _NoiseDrivenGRU(self.noise_dim, self.kwargs["hidden_size"], self.kwargs["num_layers"], steps=H)
        self.head = nn.Linear(self.kwargs["hidden_size"], W * C)
        _variance_preserving(self.head)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Noise (B, noise_dim) -> images (B, H, W, C) in [0, 1]."""
        H, W, C = self.out_shape
        rows = torch.sigmoid(self.head(self.rnn(z)))  # (B, noise_dim) -> (B, H, hidden) -> (B, H, W*C)
        return rows.view(-1, H, W, C)  # -> (B, H, W, C)


class RowConvGenerator(Generator):
    """`rows_conv`: a row-wise GRU (as `rows`) whose steps emit rows of feature channels, not pixels; two 3x3
    convs render those feature rows into the image, so neighbouring rows and columns are drawn together."""

    kind = "rows_conv"
    CHANNELS = 16  # feature channels per emitted row

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        H, W, C = self.out_shape
        F_ = self.CHANNELS
        self.rnn = _NoiseDrivenGRU(self.noise_dim, self.kwargs["hidden_size"], self.kwargs["num_layers"], steps=H)
        self.head = nn.Linear(self.kwargs["hidden_size"], W * F_)
        self.render = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.Conv2d(F_, 32, 3, padding=1),
            nn.LeakyReLU(0.2),  # (B, F, H, W) -> (B, 32, H, W)
            nn.Conv2d(32, C, 3, padding=1),  # -> (B, C, H, W)
        )
        _variance_preserving(self.head, *self.render)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Noise (B, noise_dim) -> images (B, H, W, C) in [0, 1]."""
        H, W, C = self.out_shape
        rows = self.head(self.rnn(z))  # (B, noise_dim) -> (B, H, hidden) -> (B, H, W*F)
        feats = rows.view(-1, H, W, self.CHANNELS).permute(0, 3, 1, 2)  # -> (B, F, H, W)
        return torch.sigmoid(self.render(feats)).permute(0, 2, 3, 1)  # -> (B, C, H, W) -> (B, H, W, C)


class DeconvGenerator(Generator):
    """`deconv`: a GRU reads the noise as a short sequence (z cut into STEPS chunks); its final state is decoded to
    the image by a linear layer and two stride-2 transposed convolutions (as in DCGAN), each doubling the size.
    H and W must be multiples of 4 (28 and 32 are)."""

    kind = "deconv"
    STEPS = 4
    CHANNELS = 128  # channels of the decoder's first (H/4, W/4) map

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        H, W, C = self.out_shape
        if H % 4 or W % 4:
            raise ValueError(f"the deconv generator needs H and W that are multiples of 4, got {H}x{W}")
        self.chunk = -(-self.noise_dim // self.STEPS)  # z is zero-padded to STEPS * chunk values
        hidden = self.kwargs["hidden_size"]
        self.gru = nn.GRU(self.chunk, hidden, self.kwargs["num_layers"], batch_first=True)
        self.fc = nn.Linear(hidden, self.CHANNELS * (H // 4) * (W // 4))  # (B, hidden) -> (B, 128 * H/4 * W/4)
        self.decode = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(self.CHANNELS, 64, 4, 2, 1),
            nn.LeakyReLU(0.2),  # (B, 128, H/4, W/4) -> (B, 64, H/2, W/2)
            nn.ConvTranspose2d(64, C, 4, 2, 1),  # -> (B, C, H, W)
        )
        _variance_preserving(self.fc, *self.decode)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Noise (B, noise_dim) -> images (B, H, W, C) in [0, 1]."""
        H, W, C = self.out_shape
        B = z.shape[0]
        seq = F.pad(z, (0, self.STEPS * self.chunk - self.noise_dim)).view(B, self.STEPS, self.chunk)  # (B, 4, chunk)
        _, h_n = self.gru(seq)  # h_n: (num_layers, B, hidden)
        x = self.fc(h_n[-1]).view(B, self.CHANNELS, H // 4, W // 4)  # -> (B, 128 * H/4 * W/4) -> (B, 128, H/4, W/4)
        return torch.sigmoid(self.decode(x)).permute(0, 2, 3, 1)  # -> (B, C, H, W) -> (B, H, W, C)


GENERATORS: dict[str, type[Generator]] = {g.kind: g for g in (RowGenerator, RowConvGenerator, DeconvGenerator)}
GENERATOR_NAMES = tuple(GENERATORS)


class Discriminator(nn.Module):
    """A backbone from BACKBONES (spectral-normalised, no BatchNorm) and a strided conv + linear head: one logit.

    The head also sees the batch's feature spread (minibatch standard deviation, as in ProGAN): a generator whose
    samples all look alike is then easy to tell from real data, which keeps it from collapsing to one image.
    """

    def __init__(self, *, in_shape: tuple[int, int, int], backbone: str):
        super().__init__()
        in_shape = check_shape(in_shape, "in_shape")
        self.kwargs = dict(in_shape=in_shape, backbone=backbone)
        self.in_shape = in_shape
        H, W, C = in_shape
        self.backbone = get(BACKBONES, backbone, "backbone")(C, norm="spectral")
        c, h, w = output_shape(self.backbone, (C, H, W))
        # The conv gives backbone "none" a learned layer of its own; the head is the same for every backbone.
        self.conv = spectral_norm(nn.Conv2d(c, 64, 4, 2, 1))  # (B, C', H', W') -> (B, 64, H'/2, W'/2)
        _, h2, w2 = output_shape(self.conv, (c, h, w))
        self.act = nn.LeakyReLU(0.2)
        self.linear = spectral_norm(nn.Linear(64 * h2 * w2 + 1, 1))  # (B, 64 * H'/2 * W'/2 + 1) -> (B, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) in [0, 1] -> logits (B,): real vs generated."""
        x = (x - 0.5) / 0.5
        x = x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        x = self.backbone(x)  # -> (B, C', H', W')
        x = self.act(self.conv(x)).flatten(1)  # -> (B, 64, H'/2, W'/2) -> (B, 64 * H'/2 * W'/2)
        spread = x.std(0, unbiased=False).mean().expand(x.shape[0], 1)  # -> (B, 1): one value for the batch
        return self.linear(torch.cat([x, spread], 1)).squeeze(1)  # -> (B, 64 * H'/2 * W'/2 + 1) -> (B,)


def build_generator(kwargs: dict) -> Generator:
    """Rebuild a generator from its stored `kwargs` (which name its kind in GENERATORS)."""
    kwargs = dict(kwargs)
    return get(GENERATORS, kwargs.pop("kind", None), "generator")(**kwargs)


def build_discriminator(kwargs: dict) -> Discriminator:
    return Discriminator(**kwargs)
