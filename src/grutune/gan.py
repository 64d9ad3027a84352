"""GAN training and scoring: a GRU generator (one of GENERATORS) against a spectral-norm CNN discriminator.

FID and Inception Score are computed in the feature space and class probabilities of the classifier that the
`train` stage trained on the same dataset, so nothing is downloaded (and scores are comparable within grutune,
not with published Inception-network numbers).

How a GAN is trained, whatever its architecture, is a `Recipe` (gan.* in params.yaml): the hinge or the
non-saturating loss, an exponential moving average (EMA) of the generator's weights that is used for sampling and
scoring, an optional R1 penalty on the discriminator's gradient at real images, and the learning rates' schedule
over the run (constant, or annealed to 0 on a cosine). The two peak learning rates (two-timescale updates) are part of
the searched config. benchmarks/gan_quality.py measured which of these help.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from grutune.errors import Collapsed, GrutuneError, NonFiniteLoss
from grutune.gan_models import Discriminator, Generator, build_generator
from grutune.images import image_grid
from grutune.metrics import class_share, frechet_distance, inception_score, precision_recall
from grutune.models import to_float
from grutune.training import (
    EVAL_BATCH,
    Split,
    batches,
    cosine,
    load_checkpoint,
    restore_rng,
    rng_state,
)

__all__ = [
    "FidScorer",
    "FinalGan",
    "Gan",
    "Recipe",
    "TrainedGan",
    "class_grid",
    "classifier_view",
    "diversity",
    "evaluate_gan",
    "final_settings",
    "generate",
    "load_generator",
    "new_gan",
    "score",
    "train_and_score",
    "train_best",
    "train_gan",
]


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
        """The recipe in a GanParams section."""
        return cls(
            batch_size=gan_params.batch_size,
            loss=gan_params.loss,
            ema_decay=gan_params.ema_decay,
            r1_gamma=gan_params.r1_gamma,
            lr_schedule=gan_params.lr_schedule,
        )


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


def new_gan(hp, *, shape, noise_dim: int, device: torch.device, ema_decay: float = 0.0) -> Gan:
    """A fresh GAN for one point of the GAN space (a GanTrialConfig), on `device`, with Adam (β1=0.5, as in DCGAN)
    for each player."""
    shape = tuple(int(d) for d in shape)
    G = build_generator(
        dict(
            kind=hp.generator,
            out_shape=shape,
            noise_dim=noise_dim,
            hidden_size=hp.hidden_size,
            num_layers=hp.num_layers,
        )
    ).to(device)
    D = Discriminator(in_shape=shape, backbone=hp.backbone).to(device)
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


def train_gan(
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
    divergence. With `recipe.lr_schedule` "cosine", both learning rates fall from their peak to 0 over the `epochs`
    epochs' steps (from the optimisers' state, so a resumed run continues the same curve). `on_epoch` sees each
    epoch's mean losses and D's mean belief (sigmoid of its logit) in real and fake.
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
            real = to_float(data.x[order[i : i + recipe.batch_size]]).requires_grad_(recipe.r1_gamma > 0)
            fake = G(torch.randn(len(real), G.noise_dim, device=device))
            d_real, d_fake = D(real), D(fake.detach())
            d_loss = _d_loss(recipe.loss, d_real, d_fake)
            r1 = torch.zeros((), device=device)
            if recipe.r1_gamma > 0:  # R1: the gradient of D at real images, pushed towards 0
                (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
                r1 = grad.pow(2).flatten(1).sum(1).mean()
                d_loss = d_loss + recipe.r1_gamma / 2 * r1
            gan.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            gan.opt_d.step()
            g_loss = _g_loss(recipe.loss, D(fake))
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


@torch.no_grad()
def generate(G, n: int, *, seed: int, device: torch.device) -> torch.Tensor:
    """n images (n, H, W, C) in [0, 1] from fixed noise, so samples are comparable between runs."""
    G.eval()
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.noise_dim, generator=g).to(device)
    return torch.cat([G(z[i : i + EVAL_BATCH]) for i in range(0, n, EVAL_BATCH)])


@torch.no_grad()
def classifier_view(clf, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's penultimate features (n, F) and class probabilities (n, K) for float images."""
    clf.eval()
    feats, probs = [], []
    for i in range(0, len(images), EVAL_BATCH):
        x = images[i : i + EVAL_BATCH]
        feats.append(clf.features(x).double().cpu())
        probs.append(F.softmax(clf(x).double(), dim=1).cpu())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


class FidScorer:
    """FID and diversity of a generator's samples against a fixed set of real images, in a classifier's features.

    The real images' features are computed once; each call draws as many samples as there are real images, from
    fixed noise (`seed`), so scores of successive epochs are comparable.
    """

    def __init__(self, clf, real: torch.Tensor, seed: int):
        self.clf, self.real, self.seed = clf, real, seed
        self.features, _ = classifier_view(clf, real)

    def __call__(self, G) -> dict:
        fake = generate(G, len(self.real), seed=self.seed, device=self.real.device)
        return {
            "fid": float(frechet_distance(classifier_view(self.clf, fake)[0], self.features)),
            "diversity": diversity(fake, self.real),
        }


def score(
    G, clf, real_test: Split, real_train: Split, *, n: int, seed: int, classes: tuple[str, ...] | None = None
) -> dict:
    """n generated images against n real test images, in the classifier's features and class probabilities: FID,
    Inception Score, precision and recall (Kynkaanniemi et al.) and the share of samples the classifier assigns to
    each class, each beside the same score for n real train images against the test images (the real reference)."""
    n = min(n, len(real_test), len(real_train))
    device = real_test.x.device
    fake_f, fake_p = classifier_view(clf, generate(G, n, seed=seed, device=device))
    test_f, test_p = classifier_view(clf, to_float(real_test.x[:n]))
    train_f, _ = classifier_view(clf, to_float(real_train.x[:n]))
    is_mean, is_std = inception_score(fake_p)
    real_is, _ = inception_score(test_p)
    precision, recall = precision_recall(test_f, fake_f)
    real_precision, real_recall = precision_recall(test_f, train_f)
    k = fake_p.shape[1]
    fake_share = class_share(fake_p, k)
    names = list(classes) if classes is not None and len(classes) == k else [str(i) for i in range(k)]
    real_share = np.bincount(real_test.y[:n].cpu().numpy().astype(np.int64), minlength=k)[:k] / n
    return {
        "fid": float(frechet_distance(fake_f, test_f)),
        "inception_score": float(is_mean),
        "inception_score_std": float(is_std),
        "reference_fid_train_vs_test": float(frechet_distance(train_f, test_f)),
        "reference_inception_score_test": float(real_is),
        "precision": precision,
        "recall": recall,
        "reference_precision_train_vs_test": real_precision,
        "reference_recall_train_vs_test": real_recall,
        # the class mix: per class, and its total variation distance from the real mix (0: the same; 1: disjoint)
        # keyed by class name, as per_class_accuracy is (DVC's metrics show leaves lists out)
        "class_share": {name: round(float(v), 4) for name, v in zip(names, fake_share)},
        "reference_class_share_test": {name: round(float(v), 4) for name, v in zip(names, real_share)},
        "class_share_distance": round(float(np.abs(fake_share - real_share).sum() / 2), 4),
        "eval_samples": n,
    }


@dataclass(frozen=True)
class TrainedGan:
    """What `train_best` keeps: the generator of the best epoch (EMA weights where on), its discriminator, the
    per-epoch history (with val_fid and diversity on scored epochs), and which epoch that was."""

    G: Generator
    D: Discriminator
    history: list[dict]
    best_epoch: int
    val_fid: float


def final_settings(params) -> dict:
    """`train_best`'s settings (but the device) for the final GAN of a Params: the gan section's budget, scored as
    the GAN sweep scores its trials (gan_search.eval_samples validation images, gan_search.min_diversity)."""
    p = params.gan
    return {
        "epochs": p.epochs,
        "noise_dim": p.noise_dim,
        "subset": p.train_subset,
        "eval_samples": params.gan_search.eval_samples,
        "eval_every": p.eval_every,
        "min_diversity": params.gan_search.min_diversity,
        "seed": params.seed,
    }


def train_best(
    hp,
    recipe: Recipe,
    clf,
    data,
    *,
    epochs: int,
    noise_dim: int,
    subset: int | None,
    eval_samples: int,
    eval_every: int,
    min_diversity: float,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[dict], None] = lambda m: None,
    progress: bool = False,
    resume: dict | None = None,
    checkpoint: Callable[[dict], None] | None = None,
) -> TrainedGan:
    """Train a GAN config from scratch on a Prepared dataset's train split and keep its epoch with the best
    validation FID (`eval_samples` samples against as many validation images, in `clf`'s features).

    Every `eval_every` epochs (and the last) the generator is scored: an epoch whose samples are less diverse than
    `min_diversity` is collapsed and never kept. If every scored epoch collapsed, raises Collapsed (naming the config
    and the diversities), so that nothing is written.

    With `checkpoint`, it is called after every epoch with the run's state (both players, their optimisers and EMA,
    the best epoch so far, the history and the random state the noise is drawn from); such a state given back as
    `resume` continues the run after that epoch as if it had not stopped.
    """
    torch.manual_seed(seed)
    gan = new_gan(hp, shape=data.x_train.shape[1:], noise_dim=noise_dim, device=device, ema_decay=recipe.ema_decay)
    train, val = Split.of(data.x_train, data.y_train, device), Split.of(data.x_val, data.y_val, device)
    val_fid = FidScorer(clf, to_float(val.x[: min(eval_samples, len(val))]), seed=seed)
    best: dict = {}
    scored: list[tuple[int, float]] = []
    history: list[dict] = []
    if resume is not None:
        for name, part in gan.parts().items():
            part.load_state_dict(resume[name])
        best, scored, history = dict(resume["best"]), [tuple(x) for x in resume["scored"]], list(resume["history"])
        restore_rng(resume, device)

    def epoch_end(m: dict) -> None:
        if m["epoch"] % eval_every == 0 or m["epoch"] == epochs:
            s = val_fid(gan.sampler)
            m.update(val_fid=s["fid"], diversity=s["diversity"])
            scored.append((m["epoch"], s["diversity"]))
            if s["diversity"] >= min_diversity and s["fid"] < best.get("fid", math.inf):
                best.update(
                    fid=s["fid"],
                    epoch=m["epoch"],
                    G=copy.deepcopy(gan.sampler.state_dict()),
                    D=copy.deepcopy(gan.D.state_dict()),
                )
        history.append(m)
        on_epoch(m)
        if checkpoint is not None:
            state = {name: part.state_dict() for name, part in gan.parts().items()}
            state.update(epoch=m["epoch"], best=best, scored=scored, history=history, **rng_state(device))
            checkpoint(state)

    train_gan(
        gan,
        train,
        recipe,
        epochs=epochs,
        seed=seed,
        start_epoch=len(history),
        subset=subset,
        on_epoch=epoch_end,
        progress=progress,
    )
    if not best:
        spread = ", ".join(f"epoch {e}: {d:.3f}" for e, d in scored)
        raise Collapsed(
            f"the GAN collapsed at every scored epoch: sample diversity {spread}, below "
            f"gan_search.min_diversity {min_diversity} (real images: 1); config {hp.model_dump()}. "
            f"Nothing was written: pick another config in gan_search's space, or lower the learning rates"
        )
    G = gan.sampler
    G.load_state_dict(best["G"])
    gan.D.load_state_dict(best["D"])
    return TrainedGan(G, gan.D, history, best["epoch"], best["fid"])


def load_generator(path, data_hash: str, device: torch.device | str = "cpu") -> tuple[Generator, dict]:
    """The gan stage's generator and its checkpoint, refusing one trained on other data than `data_hash`."""
    ckpt = load_checkpoint(path, device)
    if ckpt.get("data_hash") != data_hash:
        raise GrutuneError(
            f"{path} was trained on other data ({ckpt.get('data_hash')}) than the prepared dataset "
            f"({data_hash}): rerun the gan stage"
        )
    G = build_generator(ckpt["model_kwargs"])
    G.load_state_dict(ckpt["model"])
    return G.to(device), ckpt


def evaluate_gan(
    G, clf, data, *, eval_samples: int, seed: int, device: torch.device, grid: int = 8
) -> tuple[dict, np.ndarray]:
    """A trained generator's test scores (FID and IS against the test split, with the real-data references) and a
    grid of samples, (rows, cols, C) in [0, 1]."""
    test, train = Split.of(data.x_test, data.y_test, device), Split.of(data.x_train, data.y_train, device)
    metrics = score(G, clf, test, train, n=eval_samples, seed=seed, classes=tuple(data.classes))
    samples = generate(G, grid * grid, seed=seed + 1, device=device).cpu().numpy()
    return metrics, image_grid(samples, grid)


@dataclass(frozen=True)
class FinalGan:
    """`train_best` then `evaluate_gan`, as the gan and gan_eval stages run them one after the other."""

    G: Generator
    D: Discriminator
    history: list[dict]
    metrics: dict
    grid: np.ndarray  # (rows, cols, C) in [0, 1]


def train_and_score(
    hp, recipe: Recipe, clf, data, *, eval_samples: int, seed: int, device: torch.device, grid: int = 8, **train
) -> FinalGan:
    """Train a config keeping its best epoch (`train_best`, with `train`'s other arguments), then score that one on
    the test split with `eval_samples` samples."""
    t = train_best(hp, recipe, clf, data, eval_samples=eval_samples, seed=seed, device=device, **train)
    metrics, picture = evaluate_gan(t.G, clf, data, eval_samples=eval_samples, seed=seed, device=device, grid=grid)
    return FinalGan(t.G, t.D, t.history, {**metrics, "best_epoch": t.best_epoch, "val_fid": t.val_fid}, picture)


def diversity(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Per-pixel spread across samples, relative to real images': about 1 for a healthy GAN, 0 for a collapsed one."""
    return float(fake.float().std(0).mean() / real.float().std(0).mean().clamp_min(1e-8))


@torch.no_grad()
def class_grid(G, clf, test: Split, *, per_class: int = 6, candidates: int = 2000, seed: int) -> np.ndarray:
    """Generated samples beside real ones, one row per class: `per_class` real test images of the class, a blank
    column, then `per_class` of `candidates` generated samples that the classifier assigns to that class (blank
    where it assigns fewer: a class the generator misses shows as an empty right half). (rows, cols, C) in [0, 1]."""
    fake = generate(G, candidates, seed=seed, device=test.x.device)
    _, probs = classifier_view(clf, fake)
    assigned = probs.argmax(1)
    real, labels = to_float(test.x).cpu().numpy(), test.y.cpu().numpy()
    fake = fake.cpu().numpy()
    k = probs.shape[1]
    blank = np.ones_like(real[0])
    tiles = []
    for c in range(k):
        mine, theirs = real[labels == c][:per_class], fake[assigned == c][:per_class]
        tiles += [*mine, *[blank] * (per_class - len(mine)), blank, *theirs, *[blank] * (per_class - len(theirs))]
    return image_grid(np.stack(tiles), 2 * per_class + 1)
