"""GAN training and scoring: a GRU generator that draws images row by row against a CNN discriminator.

FID and Inception Score are computed in the feature space and class probabilities of the classifier that the
`train` stage trained on the same dataset, so nothing is downloaded (and scores are comparable within grutune,
not with published Inception-network numbers).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from grutune.metrics import frechet_distance, inception_score
from grutune.models import Discriminator, GRUGenerator, to_float
from grutune.training import EVAL_BATCH, NonFiniteLoss, Split


def new_gan(hp, *, shape, noise_dim: int, device: torch.device):
    """A fresh generator and discriminator for one point of the GAN space (a GanTrialConfig), on `device`, with
    Adam (β1=0.5, as in DCGAN) for each: (G, D, opt_g, opt_d)."""
    shape = tuple(int(d) for d in shape)
    G = GRUGenerator(out_shape=shape, noise_dim=noise_dim, hidden_size=hp.hidden_size,
                     num_layers=hp.num_layers).to(device)
    D = Discriminator(in_shape=shape, backbone=hp.backbone).to(device)
    return (G, D, torch.optim.Adam(G.parameters(), lr=hp.lr_g, betas=(0.5, 0.999)),
            torch.optim.Adam(D.parameters(), lr=hp.lr_d, betas=(0.5, 0.999)))


def train_gan(G, D, opt_g, opt_d, data: Split, *, epochs: int, batch_size: int, seed: int, start_epoch: int = 0,
              subset: int | None = None, on_epoch: Callable[[dict], None] = lambda m: None) -> list[dict]:
    """Non-saturating GAN loss, from `start_epoch` up to `epochs`; raises NonFiniteLoss on divergence."""
    device = data.x.device
    history = []
    for epoch in range(start_epoch, epochs):
        G.train(), D.train()
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        n = len(data) if subset is None else min(subset, len(data))
        order = torch.randperm(len(data), generator=g)[:n].to(device)
        sums = torch.zeros(4, device=device)  # d_loss, g_loss, D(real), D(fake)
        steps = 0
        for i in range(0, n, batch_size):
            real = to_float(data.x[order[i:i + batch_size]])
            b = len(real)
            z = torch.randn(b, G.noise_dim, device=device)
            fake = G(z)
            d_real, d_fake = D(real), D(fake.detach())
            d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            d_gen = D(fake)
            g_loss = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            sums += torch.stack([d_loss.detach(), g_loss.detach(), torch.sigmoid(d_real).mean().detach(),
                                 torch.sigmoid(d_fake).mean().detach()])
            steps += 1
        d_loss, g_loss, p_real, p_fake = (sums / steps).tolist()
        if not (math.isfinite(d_loss) and math.isfinite(g_loss)):
            raise NonFiniteLoss(f"GAN losses are d={d_loss}, g={g_loss} in epoch {epoch + 1}")
        m = {"epoch": epoch + 1, "d_loss": d_loss, "g_loss": g_loss, "d_real": p_real, "d_fake": p_fake,
             "images_per_s": n / (time.perf_counter() - t0)}
        history.append(m)
        on_epoch(m)
    return history


@torch.no_grad()
def generate(G, n: int, *, seed: int, device: torch.device) -> torch.Tensor:
    """n images (n, H, W, C) in [0, 1] from fixed noise, so samples are comparable between runs."""
    G.eval()
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.noise_dim, generator=g).to(device)
    return torch.cat([G(z[i:i + EVAL_BATCH]) for i in range(0, n, EVAL_BATCH)])


@torch.no_grad()
def classifier_view(clf, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's penultimate features (n, F) and class probabilities (n, K) for float images."""
    clf.eval()
    feats, probs = [], []
    for i in range(0, len(images), EVAL_BATCH):
        x = images[i:i + EVAL_BATCH]
        feats.append(clf.features(x).double().cpu())
        probs.append(F.softmax(clf(x).double(), dim=1).cpu())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def score(G, clf, real_test: Split, real_train: Split, *, n: int, seed: int) -> dict:
    """FID and IS of n generated images, with the same scores for real images as the reference floor/ceiling."""
    n = min(n, len(real_test), len(real_train))
    device = real_test.x.device
    fake_f, fake_p = classifier_view(clf, generate(G, n, seed=seed, device=device))
    test_f, test_p = classifier_view(clf, to_float(real_test.x[:n]))
    train_f, _ = classifier_view(clf, to_float(real_train.x[:n]))
    is_mean, is_std = inception_score(fake_p)
    real_is, _ = inception_score(test_p)
    return {"fid": float(frechet_distance(fake_f, test_f)), "inception_score": float(is_mean),
            "inception_score_std": float(is_std), "reference_fid_train_vs_test": float(frechet_distance(train_f, test_f)),
            "reference_inception_score_test": float(real_is), "eval_samples": n}


@dataclass(frozen=True)
class FinalGan:
    """The final GAN after `train_and_score`: its players, per-epoch history, scores and a sample grid."""

    G: GRUGenerator
    D: Discriminator
    history: list[dict]
    metrics: dict
    grid: np.ndarray  # (rows, cols, C) in [0, 1]


def train_and_score(hp, clf, data, *, epochs: int, batch_size: int, noise_dim: int, subset: int | None,
                    eval_samples: int, seed: int, device: torch.device, grid: int = 8,
                    on_epoch: Callable[[dict], None] = lambda m: None) -> FinalGan:
    """Train a GAN config from scratch on a Prepared dataset's train split, then score it against its test split."""
    torch.manual_seed(seed)
    G, D, opt_g, opt_d = new_gan(hp, shape=data.x_train.shape[1:], noise_dim=noise_dim, device=device)
    train, test = Split.of(data.x_train, data.y_train, device), Split.of(data.x_test, data.y_test, device)
    history = train_gan(G, D, opt_g, opt_d, train, epochs=epochs, batch_size=batch_size, seed=seed, subset=subset,
                        on_epoch=on_epoch)
    metrics = score(G, clf, test, train, n=eval_samples, seed=seed)
    samples = generate(G, grid * grid, seed=seed + 1, device=device).cpu().numpy()
    return FinalGan(G, D, history, metrics, image_grid(samples, grid))


def diversity(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Per-pixel spread across samples, relative to real images': about 1 for a healthy GAN, 0 for a collapsed one."""
    return float(fake.float().std(0).mean() / real.float().std(0).mean().clamp_min(1e-8))


def image_grid(images: np.ndarray, nrow: int, pad: int = 2) -> np.ndarray:
    """Tile (N, H, W, C) images in [0, 1] into one (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) picture."""
    n, h, w, c = images.shape
    rows = math.ceil(n / nrow)
    grid = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=images.dtype)
    for k, img in enumerate(images):
        r, col = divmod(k, nrow)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = img
    return grid
