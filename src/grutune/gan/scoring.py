"""How good a generator is, in the feature space and class probabilities of the classifier the `train` stage
trained on the same dataset: nothing is downloaded, and scores are comparable within grutune (not with published
Inception-network numbers).

`FidScorer` scores a generator during training (a trial's epochs, the final GAN's scored epochs); `evaluate_gan` is
the gan_eval stage's test scores (FID, Inception Score, precision and recall, class shares, each beside the same score
for real images; the same per class, and for a conditional generator its class consistency) and its grids of samples.
A conditional generator is scored on samples drawn for each class in turn.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from grutune.images import image_grid
from grutune.metrics import class_share, frechet_distance, inception_score, precision_recall
from grutune.models import to_float
from grutune.training import EVAL_BATCH, Split

__all__ = [
    "FidScorer",
    "MIN_CLASS_SAMPLES",
    "class_grid",
    "classifier_view",
    "diversity",
    "evaluate_gan",
    "generate",
    "per_class",
    "score",
]

# Fewer samples of a class than this (generated or real), and its per-class scores are left out (None): FID needs a
# covariance, precision and recall k + 1 neighbours, the Inception Score its 10 splits.
MIN_CLASS_SAMPLES = 10


@torch.no_grad()
def generate(G, n: int, *, seed: int, device: torch.device, classes: torch.Tensor | None = None) -> torch.Tensor:
    """n images (n, H, W, C) in [0, 1] from fixed noise, so samples are comparable between runs. A conditional
    generator draws them for `classes` (n,), by default each class in turn (`G.classes_for(n)`)."""
    G.eval()
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.noise_dim, generator=g).to(device)
    if not G.conditional:
        if classes is not None:
            raise ValueError("this generator is unconditional: it cannot take a class")
        return torch.cat([G(z[i : i + EVAL_BATCH]) for i in range(0, n, EVAL_BATCH)])
    y = (G.classes_for(n) if classes is None else torch.as_tensor(classes)).to(device=device, dtype=torch.long)
    return torch.cat([G(z[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH]) for i in range(0, n, EVAL_BATCH)])


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


def _scores(fake_f, fake_p, test_f, test_p, train_f, *, splits: int = 10) -> dict:
    """FID, Inception Score, precision and recall of generated features and probabilities against real test ones, and
    the real references: train against test (FID, precision, recall), the test images' own Inception Score."""
    is_mean, _ = inception_score(fake_p, splits)
    precision, recall = precision_recall(test_f, fake_f)
    real_precision, real_recall = precision_recall(test_f, train_f)
    return {
        "fid": float(frechet_distance(fake_f, test_f)),
        "inception_score": float(is_mean),
        "precision": precision,
        "recall": recall,
        "reference_fid_train_vs_test": float(frechet_distance(train_f, test_f)),
        "reference_inception_score_test": float(inception_score(test_p, splits)[0]),
        "reference_precision_train_vs_test": real_precision,
        "reference_recall_train_vs_test": real_recall,
    }


def per_class(
    names: list[str],
    fake: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    requested: bool,
) -> dict[str, dict]:
    """The scores of `_scores` for each class: the samples of class c (drawn for c when `requested`, else those the
    classifier assigns to c) against the real test images of c, beside train images of c against them; with
    `requested`, also the class consistency (the share of samples drawn for c that the classifier assigns to c).
    Each of fake, test and train is (features (n, F), probabilities (n, K), classes (n,)). Keyed by class name; the
    scores of a class with fewer than MIN_CLASS_SAMPLES samples on either side are None."""
    out = {}
    for c, name in enumerate(names):
        (ff, fp), (tf, tp), (rf, _) = ((f[y == c], p[y == c]) for f, p, y in (fake, test, train))
        row: dict = {"samples": int(len(ff)), "real_samples": int(len(tf))}
        if min(len(ff), len(tf), len(rf)) >= MIN_CLASS_SAMPLES:
            row |= _scores(ff, fp, tf, tp, rf, splits=1)  # one split: a class's images are few
            row["inception_score_ratio"] = row["inception_score"] / row["reference_inception_score_test"]
        else:
            row |= dict.fromkeys(("fid", "inception_score", "precision", "recall", "inception_score_ratio"))
        if requested:
            row["class_consistency"] = float((fp.argmax(1) == c).mean()) if len(fp) else None
        out[name] = row
    return out


def score(
    G, clf, real_test: Split, real_train: Split, *, n: int, seed: int, classes: tuple[str, ...] | None = None
) -> dict:
    """n generated images against n real test images, in the classifier's features and class probabilities: FID,
    Inception Score, precision and recall (Kynkaanniemi et al.) and the share of samples the classifier assigns to
    each class, each beside the same score for n real train images against the test images (the real reference).
    `per_class` holds the same scores class by class. A conditional generator is scored on samples drawn for each
    class in turn, and also gets its class consistency, overall and per class."""
    n = min(n, len(real_test), len(real_train))
    device = real_test.x.device
    drawn_for = G.classes_for(n) if G.conditional else None  # (n,) the class each sample is drawn for
    fake_f, fake_p = classifier_view(clf, generate(G, n, seed=seed, device=device, classes=drawn_for))
    test_f, test_p = classifier_view(clf, to_float(real_test.x[:n]))
    train_f, train_p = classifier_view(clf, to_float(real_train.x[:n]))
    k = fake_p.shape[1]
    fake_share = class_share(fake_p, k)
    names = list(classes) if classes is not None and len(classes) == k else [str(i) for i in range(k)]
    test_y = real_test.y[:n].cpu().numpy().astype(np.int64)
    train_y = real_train.y[:n].cpu().numpy().astype(np.int64)
    real_share = np.bincount(test_y, minlength=k)[:k] / n
    fake_y = drawn_for.numpy() if drawn_for is not None else fake_p.argmax(1)
    consistency = {"class_consistency": float((fake_p.argmax(1) == fake_y).mean())} if G.conditional else {}
    return {
        **_scores(fake_f, fake_p, test_f, test_p, train_f),
        "inception_score_std": float(inception_score(fake_p)[1]),
        # the class mix: per class, and its total variation distance from the real mix (0: the same; 1: disjoint)
        # keyed by class name, as per_class_accuracy is (DVC's metrics show leaves lists out)
        "class_share": {name: round(float(v), 4) for name, v in zip(names, fake_share)},
        "reference_class_share_test": {name: round(float(v), 4) for name, v in zip(names, real_share)},
        "class_share_distance": round(float(np.abs(fake_share - real_share).sum() / 2), 4),
        "eval_samples": n,
        "conditional": bool(G.conditional),
        **consistency,
        # the same scores per class, of the samples drawn for it (conditional) or assigned to it (unconditional)
        "per_class_by": "requested" if G.conditional else "assigned",
        "per_class": per_class(
            names,
            (fake_f, fake_p, fake_y),
            (test_f, test_p, test_y),
            (train_f, train_p, train_y),
            requested=G.conditional,
        ),
    }


def evaluate_gan(
    G, clf, data, *, eval_samples: int, seed: int, device: torch.device, grid: int = 8
) -> tuple[dict, np.ndarray]:
    """A trained generator's test scores (FID and IS against the test split, with the real-data references) and a
    grid of samples, (rows, cols, C) in [0, 1]."""
    test, train = Split.of(data.x_test, data.y_test, device), Split.of(data.x_train, data.y_train, device)
    metrics = score(G, clf, test, train, n=eval_samples, seed=seed, classes=tuple(data.classes))
    samples = generate(G, grid * grid, seed=seed + 1, device=device).cpu().numpy()
    return metrics, image_grid(samples, grid)


def diversity(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Per-pixel spread across samples, relative to real images': about 1 for a healthy GAN, 0 for a collapsed one."""
    return float(fake.float().std(0).mean() / real.float().std(0).mean().clamp_min(1e-8))


@torch.no_grad()
def class_grid(G, clf, test: Split, *, per_class: int = 6, candidates: int = 2000, seed: int) -> np.ndarray:
    """Generated samples beside real ones, one row per class: `per_class` real test images of the class, a blank
    column, then `per_class` generated samples of that class: for a conditional generator the first it draws for
    the class, else the first of `candidates` samples that the classifier assigns to it (blank where it assigns
    fewer: a class the generator misses shows as an empty right half). (rows, cols, C) in [0, 1]."""
    real, labels = to_float(test.x).cpu().numpy(), test.y.cpu().numpy()
    if G.conditional:  # per_class samples of class 0, then of class 1, ...
        k = G.num_classes
        assigned = torch.arange(k).repeat_interleave(per_class).numpy()
        fake = generate(G, len(assigned), seed=seed, device=test.x.device, classes=torch.from_numpy(assigned))
    else:
        fake = generate(G, candidates, seed=seed, device=test.x.device)
        _, probs = classifier_view(clf, fake)
        assigned, k = probs.argmax(1), probs.shape[1]
    fake = fake.cpu().numpy()
    blank = np.ones_like(real[0])
    tiles = []
    for c in range(k):
        mine, theirs = real[labels == c][:per_class], fake[assigned == c][:per_class]
        tiles += [*mine, *[blank] * (per_class - len(mine)), blank, *theirs, *[blank] * (per_class - len(theirs))]
    return image_grid(np.stack(tiles), 2 * per_class + 1)
