"""How a GAN is trained, whatever its architecture: the `Recipe`, a fresh `Gan`, and the one GAN training loop
(`fit_gan`, as `grutune.training.fit` is the classifier's), which a Tune trial and the final `gan` stage both call.

The recipe (gan.* in params.yaml) is the hinge or the non-saturating loss, an exponential moving average (EMA) of the
generator's weights that is used for sampling and scoring, an optional R1 penalty on the discriminator's gradient at
real images, and the learning rates' schedule over the run (constant, or annealed to 0 on a cosine). The two peak
learning rates (two-timescale updates) are part of the searched config. benchmarks/gan_quality.py measured which of
these help.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from grutune.errors import NonFiniteLoss
from grutune.gan.models import Discriminator, Generator, build_generator
from grutune.models import to_float
from grutune.training import Split, batches, cosine

__all__ = ["Gan", "Recipe", "fit_gan", "new_gan"]


@dataclass(frozen=True)
class Recipe:
    """How a GAN is trained, whatever its architecture (gan.* in params.yaml)."""

    batch_size: int = 128
    loss: str = "hinge"  # "hinge" or "nonsaturating"
    ema_decay: float = 0.999  # 0: sample from the raw generator
    r1_gamma: float = 0.0  # 0: no R1 penalty
    lr_schedule: str = "constant"  # "constant" or "cosine": both learning rates annealed to 0 over the run's steps

    @classmethod
    def of(cls, gan_params) -> Recipe:
        """The recipe in a GanParams section: its settings of the same names."""
        return cls(**{f.name: getattr(gan_params, f.name) for f in fields(cls)})


def _ema(decay: float) -> Callable:
    """AveragedModel's avg_fn for an EMA whose decay warms up as min(decay, (1 + n) / (10 + n)) over the n updates
    so far: a short run is not dominated by its first, untrained weights."""

    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1 + float(n)) / (10 + float(n)))
        return averaged + (current - averaged) * (1 - d)

    return avg


@dataclass
class Gan:
    """A GAN being trained: both players, their Adam optimisers, and the generator's EMA copy (None when off)."""

    G: Generator
    D: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: AveragedModel | None

    @property
    def sampler(self) -> Generator:
        """The generator that draws samples and is scored: the EMA copy where there is one."""
        return self.ema.module if self.ema is not None else self.G

    def parts(self) -> dict:
        """Everything with a state_dict, by checkpoint name."""
        parts = {"generator": self.G, "discriminator": self.D, "opt_g": self.opt_g, "opt_d": self.opt_d}
        return parts | ({"generator_ema": self.ema} if self.ema is not None else {})


def new_gan(hp, *, shape, noise_dim: int, device: torch.device, ema_decay: float = 0.0, num_classes: int = 0) -> Gan:
    """A fresh GAN for one point of the GAN space (a GanTrialConfig), on `device`, with Adam (β1=0.5, as in DCGAN)
    for each player. A conditional point (`hp.conditional`) needs the dataset's `num_classes`."""
    shape = tuple(int(d) for d in shape)
    if hp.conditional and num_classes < 2:
        raise ValueError(f"a conditional GAN needs the dataset's number of classes (at least 2), got {num_classes}")
    k = num_classes if hp.conditional else 0
    G = build_generator(
        dict(
            kind=hp.generator,
            out_shape=shape,
            noise_dim=noise_dim,
            hidden_size=hp.hidden_size,
            num_layers=hp.num_layers,
            num_classes=k,
        )
    ).to(device)
    D = Discriminator(in_shape=shape, backbone=hp.backbone, num_classes=k).to(device)
    ema = AveragedModel(G, avg_fn=_ema(ema_decay), use_buffers=True) if ema_decay > 0 else None
    if ema is not None:  # its deep copy of G leaves a GRU's weights in pieces, which cuDNN re-packs at every call
        for m in ema.modules():
            if isinstance(m, torch.nn.RNNBase):
                m.flatten_parameters()  # in place; a no-op on the CPU
    return Gan(
        G,
        D,
        torch.optim.Adam(G.parameters(), lr=hp.lr_g, betas=(0.5, 0.999)),
        torch.optim.Adam(D.parameters(), lr=hp.lr_d, betas=(0.5, 0.999)),
        ema,
    )


def _d_loss(loss: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    if loss == "hinge":
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()  # = BCE(real, 1) + BCE(fake, 0)


def _anneal(opt: torch.optim.Optimizer, schedule: str, step: int, total: int) -> None:
    """Set `opt`'s learning rate for `step` of `total`: its peak (kept in the param group's "initial_lr", as
    torch's LR schedulers keep it, so that it is saved and resumed with the optimiser) times the schedule's factor."""
    if schedule == "constant":
        return
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * cosine(step / total)


def _g_loss(loss: str, d_gen: torch.Tensor) -> torch.Tensor:
    return -d_gen.mean() if loss == "hinge" else F.softplus(-d_gen).mean()  # non-saturating: BCE(fake, 1)


def fit_gan(
    gan: Gan,
    data: Split,
    recipe: Recipe,
    *,
    epochs: int,
    seed: int,
    start_epoch: int = 0,
    subset: int | None = None,
    on_epoch: Callable[[dict], None] = lambda m: None,
    progress: bool = False,
) -> list[dict]:
    """Train from `start_epoch` up to `epochs`, one D step and one G step per batch; raises NonFiniteLoss on
    divergence. A conditional GAN draws each batch's fakes for the classes of its real images, so the classes come in
    the data's mix, and both players see those classes. With `recipe.lr_schedule` "cosine", both learning rates fall
    from their peak to 0 over the `epochs` epochs' steps (from the optimisers' state, so a resumed run continues the
    same curve). `on_epoch` sees each epoch's mean losses and D's mean belief (sigmoid of its logit) in real and fake.
    With `progress`, a progress bar within each epoch on a terminal.
    """
    G, D, device = gan.G, gan.D, data.x.device
    history = []
    for epoch in range(start_epoch, epochs):
        G.train(), D.train()
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        n = len(data) if subset is None else min(subset, len(data))
        order = torch.randperm(len(data), generator=g)[:n].to(device)
        sums = torch.zeros(5, device=device)  # d_loss, g_loss, D(real), D(fake), r1
        steps, per_epoch = 0, math.ceil(n / recipe.batch_size)
        for i in batches(n, recipe.batch_size, f"epoch {epoch + 1}/{epochs}" if progress else None):
            for opt in (gan.opt_d, gan.opt_g):
                _anneal(opt, recipe.lr_schedule, epoch * per_epoch + steps, epochs * per_epoch)
            idx = order[i : i + recipe.batch_size]
            real = to_float(data.x[idx]).requires_grad_(recipe.r1_gamma > 0)
            y = data.y[idx] if G.conditional else None  # (B,): the classes both players see; None: unconditional
            fake = G(torch.randn(len(real), G.noise_dim, device=device), y)
            d_real, d_fake = D(real, y), D(fake.detach(), y)
            d_loss = _d_loss(recipe.loss, d_real, d_fake)
            r1 = torch.zeros((), device=device)
            if recipe.r1_gamma > 0:  # R1: the gradient of D at real images, pushed towards 0
                (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
                r1 = grad.pow(2).flatten(1).sum(1).mean()
                d_loss = d_loss + recipe.r1_gamma / 2 * r1
            gan.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            gan.opt_d.step()
            g_loss = _g_loss(recipe.loss, D(fake, y))
            gan.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            gan.opt_g.step()
            if gan.ema is not None:
                gan.ema.update_parameters(G)
            sums += torch.stack(
                [
                    d_loss.detach(),
                    g_loss.detach(),
                    torch.sigmoid(d_real).mean().detach(),
                    torch.sigmoid(d_fake).mean().detach(),
                    r1.detach(),
                ]
            )
            steps += 1
        d_loss, g_loss, p_real, p_fake, r1 = (sums / steps).tolist()
        if not (math.isfinite(d_loss) and math.isfinite(g_loss)):
            raise NonFiniteLoss(f"GAN losses are d={d_loss}, g={g_loss} in epoch {epoch + 1}")
        m = {
            "epoch": epoch + 1,
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": p_real,
            "d_fake": p_fake,
            **({"r1": r1} if recipe.r1_gamma > 0 else {}),
            **({"lr_g": gan.opt_g.param_groups[0]["lr"]} if recipe.lr_schedule != "constant" else {}),
            "images_per_s": n / (time.perf_counter() - t0),
        }
        history.append(m)
        on_epoch(m)
    return history
