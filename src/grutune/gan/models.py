"""The GAN's players: generators whose GRU draws an image (registered by kind in GENERATORS), and the
discriminator, a spectral-normalised backbone from grutune.models.BACKBONES.

Apart from grutune/models.py so that the classifier's stages, which never build a GAN, do not depend on this file: a
change to the GAN's models reruns the GAN stages only. Images are float tensors (B, H, W, C) in [0, 1], and each model
keeps its constructor arguments in `self.kwargs`, as the classifier does.

With `num_classes` > 0 both players are class-conditional (`gan_search.space.conditional`): every generator embeds
the class it is asked for into what its GRU reads, and the discriminator is a projection discriminator (Miyato and
Koyama, 2018). With `num_classes` 0 (the default) they build exactly the layers they built before conditioning
existed, in the same order, so an unconditional GAN draws the same numbers at the same seed.
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
    """What every generator shares: noise (B, noise_dim), and for a conditional one each sample's class (B,) ->
    images (B, H, W, C) in [0, 1]; and `sample`.

    A subclass sets `kind` (its name in GENERATORS) and builds its layers from out_shape, noise_dim, hidden_size
    (its GRU's), num_layers and num_classes (0: unconditional). `self.kwargs` holds all six, so
    `build_generator(kwargs)` rebuilds it.
    """

    kind = ""

    def __init__(
        self,
        *,
        out_shape: tuple[int, int, int],
        noise_dim: int,
        hidden_size: int,
        num_layers: int,
        num_classes: int = 0,
    ):
        super().__init__()
        out_shape = check_shape(out_shape, "out_shape")
        if int(num_classes) < 0 or int(num_classes) == 1:
            raise ValueError(f"num_classes must be 0 (unconditional) or at least 2, got {num_classes}")
        self.kwargs = dict(
            kind=self.kind,
            out_shape=out_shape,
            noise_dim=int(noise_dim),
            hidden_size=int(hidden_size),
            num_layers=int(num_layers),
            num_classes=int(num_classes),
        )
        self.out_shape = out_shape
        self.noise_dim = int(noise_dim)
        self.num_classes = int(num_classes)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def classes_for(self, n: int, device: torch.device | str | None = None) -> torch.Tensor | None:
        """The classes n samples are drawn for when none are asked: each class in turn (n // num_classes of each,
        the first n % num_classes once more), or None for an unconditional generator."""
        return torch.arange(n, device=device) % self.num_classes if self.conditional else None

    def _check(self, y: torch.Tensor | None) -> None:
        if y is None and self.conditional:
            raise ValueError(
                f"this generator is class-conditional: give each sample's class (0-{self.num_classes - 1})"
            )
        if y is not None and not self.conditional:
            raise ValueError("this generator is unconditional: it cannot take a class")

    def sample(
        self,
        n: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        *,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """n images from z ~ N(0, I) (B, H, W, C), for a conditional generator of classes `y` (B,) (by default each
        class in turn); gradients flow, so wrap in torch.no_grad() to only look."""
        if device is None:
            device = next(self.parameters()).device
        z = torch.randn(n, self.noise_dim, device=device, generator=generator)
        return self(z, self.classes_for(n, device) if y is None else y)


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
    """A GRU that runs `steps` steps fed its code (z, and for a conditional generator the class's embedding after it)
    at every step, started from a state set by that code: (B, code_dim) -> (B, steps, hidden). Used by the row-wise
    generators."""

    def __init__(self, code_dim: int, hidden_size: int, num_layers: int, steps: int):
        super().__init__()
        self.steps, self.code_dim = steps, code_dim
        self.init = nn.Linear(code_dim, hidden_size * num_layers)  # code -> the initial state of every layer
        # Start with the code's projection strong (pre-tanh std about 3): with the default init every sample starts
        # out almost the same image, and a short GAN run collapses onto it.
        nn.init.normal_(self.init.weight, std=3 / code_dim**0.5)
        nn.init.zeros_(self.init.bias)
        self.gru = nn.GRU(code_dim, hidden_size, num_layers, batch_first=True)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        B, L, Hd = code.shape[0], self.gru.num_layers, self.gru.hidden_size
        h0 = torch.tanh(self.init(code)).view(B, L, Hd).transpose(0, 1).contiguous()  # -> (num_layers, B, hidden)
        steps = code.unsqueeze(1).expand(B, self.steps, self.code_dim)  # (B, code_dim) -> (B, steps, code_dim)
        out, _ = self.gru(steps, h0)  # -> (B, steps, hidden): step t's state draws row t
        return out


class _RowCode(nn.Module):
    """What a row-wise generator's GRU reads: z (B, noise_dim), and for a conditional generator its class's learned
    embedding appended, (B,) -> (B, CLASS_DIM): (B, noise_dim + CLASS_DIM). N(0, 1) at the start, as z is."""

    CLASS_DIM = 16

    def __init__(self, noise_dim: int, num_classes: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, self.CLASS_DIM) if num_classes else None
        self.dim = noise_dim + (self.CLASS_DIM if num_classes else 0)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return z if self.embed is None else torch.cat([z, self.embed(y)], 1)  # -> (B, noise_dim + CLASS_DIM)


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
        self.code = _RowCode(self.noise_dim, self.num_classes)
        self.rnn = _NoiseDrivenGRU(self.code.dim, self.kwargs["hidden_size"], self.kwargs["num_layers"], steps=H)
        self.head = nn.Linear(self.kwargs["hidden_size"], W * C)
        _variance_preserving(self.head)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Noise (B, noise_dim) and, if conditional, classes (B,) -> images (B, H, W, C) in [0, 1]."""
        self._check(y)
        H, W, C = self.out_shape
        code = self.code(z, y)  # -> (B, code_dim)
        rows = torch.sigmoid(self.head(self.rnn(code)))  # -> (B, H, hidden) -> (B, H, W*C)
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
        self.code = _RowCode(self.noise_dim, self.num_classes)
        self.rnn = _NoiseDrivenGRU(self.code.dim, self.kwargs["hidden_size"], self.kwargs["num_layers"], steps=H)
        self.head = nn.Linear(self.kwargs["hidden_size"], W * F_)
        self.render = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.Conv2d(F_, 32, 3, padding=1),
            nn.LeakyReLU(0.2),  # (B, F, H, W) -> (B, 32, H, W)
            nn.Conv2d(32, C, 3, padding=1),  # -> (B, C, H, W)
        )
        _variance_preserving(self.head, *self.render)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Noise (B, noise_dim) and, if conditional, classes (B,) -> images (B, H, W, C) in [0, 1]."""
        self._check(y)
        H, W, C = self.out_shape
        rows = self.head(self.rnn(self.code(z, y)))  # (B, code_dim) -> (B, H, hidden) -> (B, H, W*F)
        feats = rows.view(-1, H, W, self.CHANNELS).permute(0, 3, 1, 2)  # -> (B, F, H, W)
        return torch.sigmoid(self.render(feats)).permute(0, 2, 3, 1)  # -> (B, C, H, W) -> (B, H, W, C)


class DeconvGenerator(Generator):
    """`deconv`: a GRU reads the noise as a short sequence (z cut into STEPS chunks); its final state is decoded to
    the image by a linear layer and two stride-2 transposed convolutions (as in DCGAN), each doubling the size.
    A conditional one reads its class's learned embedding (one chunk's size) as a first step before z's chunks.
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
        self.embed = nn.Embedding(self.num_classes, self.chunk) if self.num_classes else None
        self.gru = nn.GRU(self.chunk, hidden, self.kwargs["num_layers"], batch_first=True)
        self.fc = nn.Linear(hidden, self.CHANNELS * (H // 4) * (W // 4))  # (B, hidden) -> (B, 128 * H/4 * W/4)
        self.decode = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(self.CHANNELS, 64, 4, 2, 1),
            nn.LeakyReLU(0.2),  # (B, 128, H/4, W/4) -> (B, 64, H/2, W/2)
            nn.ConvTranspose2d(64, C, 4, 2, 1),  # -> (B, C, H, W)
        )
        _variance_preserving(self.fc, *self.decode)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Noise (B, noise_dim) and, if conditional, classes (B,) -> images (B, H, W, C) in [0, 1]."""
        self._check(y)
        H, W, C = self.out_shape
        B = z.shape[0]
        seq = F.pad(z, (0, self.STEPS * self.chunk - self.noise_dim)).view(B, self.STEPS, self.chunk)  # (B, 4, chunk)
        if self.embed is not None:
            seq = torch.cat([self.embed(y).unsqueeze(1), seq], 1)  # class first: -> (B, 1 + 4, chunk)
        _, h_n = self.gru(seq)  # h_n: (num_layers, B, hidden)
        x = self.fc(h_n[-1]).view(B, self.CHANNELS, H // 4, W // 4)  # -> (B, 128 * H/4 * W/4) -> (B, 128, H/4, W/4)
        return torch.sigmoid(self.decode(x)).permute(0, 2, 3, 1)  # -> (B, C, H, W) -> (B, H, W, C)


GENERATORS: dict[str, type[Generator]] = {g.kind: g for g in (RowGenerator, RowConvGenerator, DeconvGenerator)}
GENERATOR_NAMES = tuple(GENERATORS)


class Discriminator(nn.Module):
    """A backbone from BACKBONES (spectral-normalised, no BatchNorm) and a strided conv + linear head: one logit.

    The head also sees the batch's feature spread (minibatch standard deviation, as in ProGAN): a generator whose
    samples all look alike is then easy to tell from real data, which keeps it from collapsing to one image.
    With num_classes > 0 it is a projection discriminator (Miyato and Koyama, 2018): the logit of image x as class y
    is psi(phi(x)) + <embed(y), phi(x)>, phi(x) the head's input features, psi its linear layer, embed a
    spectral-normalised class embedding; it judges whether x is a real image of class y.
    """

    def __init__(self, *, in_shape: tuple[int, int, int], backbone: str, num_classes: int = 0):
        super().__init__()
        in_shape = check_shape(in_shape, "in_shape")
        if int(num_classes) < 0 or int(num_classes) == 1:
            raise ValueError(f"num_classes must be 0 (unconditional) or at least 2, got {num_classes}")
        self.kwargs = dict(in_shape=in_shape, backbone=backbone, num_classes=int(num_classes))
        self.num_classes = int(num_classes)
        self.in_shape = in_shape
        H, W, C = in_shape
        self.backbone = get(BACKBONES, backbone, "backbone")(C, norm="spectral")
        c, h, w = output_shape(self.backbone, (C, H, W))
        # The conv gives backbone "none" a learned layer of its own; the head is the same for every backbone.
        self.conv = spectral_norm(nn.Conv2d(c, 64, 4, 2, 1))  # (B, C', H', W') -> (B, 64, H'/2, W'/2)
        _, h2, w2 = output_shape(self.conv, (c, h, w))
        self.act = nn.LeakyReLU(0.2)
        self.linear = spectral_norm(nn.Linear(64 * h2 * w2 + 1, 1))  # (B, 64 * H'/2 * W'/2 + 1) -> (B, 1)
        if self.num_classes:  # (B,) -> (B, 64 * H'/2 * W'/2 + 1): each class's direction in phi's space
            embed = nn.Embedding(self.num_classes, 64 * h2 * w2 + 1)
            nn.init.xavier_uniform_(embed.weight)  # as SNGAN's projection discriminator starts it
            self.embed = spectral_norm(embed)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H, W, C) in [0, 1], and for a conditional discriminator the classes (B,) -> logits (B,): real vs
        generated."""
        if (y is None) != (self.num_classes == 0):
            raise ValueError(
                "this discriminator is class-conditional: give each image's class"
                if y is None
                else "this discriminator is unconditional: it cannot take a class"
            )
        x = (x - 0.5) / 0.5
        x = x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        x = self.backbone(x)  # -> (B, C', H', W')
        x = self.act(self.conv(x)).flatten(1)  # -> (B, 64, H'/2, W'/2) -> (B, 64 * H'/2 * W'/2)
        spread = x.std(0, unbiased=False).mean().expand(x.shape[0], 1)  # -> (B, 1): one value for the batch
        phi = torch.cat([x, spread], 1)  # -> (B, 64 * H'/2 * W'/2 + 1)
        logit = self.linear(phi).squeeze(1)  # -> (B, 1) -> (B,)
        if y is not None:
            logit = logit + (self.embed(y) * phi).sum(1)  # the projection: + <embed(y), phi(x)>, (B,)
        return logit


def build_generator(kwargs: dict) -> Generator:
    """Rebuild a generator from its stored `kwargs` (which name its kind in GENERATORS)."""
    kwargs = dict(kwargs)
    return get(GENERATORS, kwargs.pop("kind", None), "generator")(**kwargs)


def build_discriminator(kwargs: dict) -> Discriminator:
    return Discriminator(**kwargs)
