"""How good a generator is, in the feature space and class probabilities of the classifier the `train` stage
trained on the same dataset: nothing is downloaded, and scores are comparable within grutune (not with published
Inception-network numbers).

`FidScorer` scores a generator during training (a trial's epochs, the final GAN's scored epochs); `evaluate_gan` is
the gan_eval stage's test scores (FID, Inception Score, precision and recall, class shares, each beside the same score
for real images) and its grids of samples.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from grutune.images import image_grid
from grutune.metrics import class_share, frechet_distance, inception_score, precision_recall
from grutune.models import to_float
from grutune.training import EVAL_BATCH, Split

__all__ = ["FidScorer", "class_grid", "classifier_view", "diversity", "evaluate_gan", "generate", "score"]


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
