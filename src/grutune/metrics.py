"""Evaluation metrics in numpy float64: Frechet distance (FID), Inception Score, precision and recall of a generated
distribution, class shares, confusion matrix, per-class accuracy.

Inputs may be numpy arrays or torch tensors (on any device).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "class_share",
    "confusion_matrix",
    "dominates",
    "frechet_distance",
    "inception_score",
    "pareto_front",
    "per_class_accuracy",
    "precision_recall",
]


def _numpy(x, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; round-off negatives are clipped to 0."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(feats_a, feats_b) -> float:
    """FID between two feature sets (N, F): ||mu_a - mu_b||^2 + Tr(Sa + Sb - 2 sqrt(Sa Sb)).

    Tr sqrt(Sa Sb) is taken as Tr sqrt(sqrt(Sa) Sb sqrt(Sa)): the same eigenvalues, but a symmetric PSD
    matrix, so eigh gives a real, stable answer even when Sa or Sb is singular (N <= F).
    """
    a, b = _numpy(feats_a, np.float64), _numpy(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"expected two (N, F) feature arrays with the same F and N >= 2, got {a.shape}, {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))  # (F, F)
    root_a = _sqrt_psd(cov_a)
    eig = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    tr_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    fid = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt
    return float(max(fid, 0.0))  # round-off can take an exact 0 just below


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) on each of `splits` chunks of probs (N, K); returns (mean, std).

    It ranges from 1 (every prediction the same) to K (confident predictions spread evenly over K classes).
    """
    p = _numpy(probs, np.float64)
    if p.ndim != 2 or len(p) < splits or splits < 1:
        raise ValueError(f"expected probabilities (N, K) with N >= splits={splits}, got shape {p.shape}")
    scores = []
    for part in np.array_split(p, splits):
        p_y = part.mean(0, keepdims=True)
        safe = np.where(part > 0, part, 1.0)  # 0 * log 0 = 0, and p_y > 0 wherever part > 0
        kl = np.sum(part * (np.log(safe) - np.log(np.where(part > 0, p_y, 1.0))), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)), clipped at 0 against round-off."""
    return np.clip((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0, None)


def _knn_radii(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Each point's squared distance to its k-th nearest neighbour in x, itself excluded."""
    out = np.empty(len(x))
    for i in range(0, len(x), chunk):
        d = _sq_distances(x[i : i + chunk], x)
        out[i : i + chunk] = np.partition(d, k, axis=1)[:, k]  # column 0 of the sorted row is the point itself
    return out


def _coverage(points: np.ndarray, manifold: np.ndarray, radii: np.ndarray, chunk: int) -> float:
    """The share of `points` inside at least one ball (centre in `manifold`, squared radius in `radii`)."""
    inside = 0
    for i in range(0, len(points), chunk):
        inside += int((_sq_distances(points[i : i + chunk], manifold) <= radii[None, :]).any(1).sum())
    return inside / len(points)


def precision_recall(real, fake, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall of a generated distribution (Kynkaanniemi et al., 2019), in feature space.

    Each set's manifold is the union of balls around its points, each reaching the point's k-th nearest neighbour
    in its own set. Precision: the share of generated samples inside the real manifold (are samples realistic?);
    recall: the share of real samples inside the generated manifold (is the real variety covered?). Identical sets
    give 1 and 1; sets far apart 0 and 0.
    """
    a, b = _numpy(real, np.float64), _numpy(fake, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) <= k:
        raise ValueError(f"expected two (N, F) feature arrays with the same F and N > k={k}, got {a.shape}, {b.shape}")
    real_r, fake_r = _knn_radii(a, k, chunk), _knn_radii(b, k, chunk)
    return _coverage(b, a, real_r, chunk), _coverage(a, b, fake_r, chunk)


def class_share(probs, num_classes: int | None = None) -> np.ndarray:
    """(K,) float64: the share of samples a classifier assigns to each class (its argmax)."""
    p = _numpy(probs, np.float64)
    k = num_classes or p.shape[1]
    return np.bincount(p.argmax(1), minlength=k)[:k] / max(len(p), 1)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts: rows are true classes, columns predicted classes."""
    t, p = _numpy(y_true).astype(np.int64).ravel(), _numpy(y_pred).astype(np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    for name, y in (("y_true", t), ("y_pred", p)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} has labels outside [0, {num_classes}): {y.min()}..{y.max()}")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def per_class_accuracy(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(K,) float64: the fraction of each true class predicted correctly (recall); NaN for an absent class."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(1)
    out = np.full(num_classes, np.nan)
    np.divide(np.diag(cm), support, out=out, where=support > 0)
    return out


# --------------------------------------------------------------------------- Pareto front


def dominates(a, b, senses) -> bool:
    """Whether point a dominates b: at least as good in every objective and better in one. `senses` holds +1 for an
    objective to maximise and -1 for one to minimise."""
    at_least = all(s * x >= s * y for x, y, s in zip(a, b, senses))
    return at_least and any(s * x > s * y for x, y, s in zip(a, b, senses))


def pareto_front(points, senses) -> list[int]:
    """Indices of the non-dominated points (ties: equal points are all kept), in their given order. O(n^2), for
    the few hundred trials of a sweep."""
    pts = [tuple(float(v) for v in p) for p in points]
    return [i for i, p in enumerate(pts) if not any(dominates(q, p, senses) for j, q in enumerate(pts) if j != i)]
