"""Metrics against closed forms, hand-built examples and a brute-force FID."""

import numpy as np
import pytest
import torch

from grutune.metrics import (
    confusion_matrix,
    dominates,
    frechet_distance,
    inception_score,
    pareto_front,
    per_class_accuracy,
)

pytestmark = pytest.mark.filterwarnings("error")


def features(n=400, f=8, seed=0, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(f, f)) * scale  # a full, non-diagonal covariance
    return rng.normal(size=(n, f)) @ mixing + shift


def brute_force_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Tr sqrt(Sa Sb) from the (complex) eigenvalues of the non-symmetric product Sa Sb."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    tr_sqrt = torch.linalg.eigvals(cov_a @ cov_b).sqrt().sum().real
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    return float(mean_term + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt)


def test_fid_of_a_sample_with_itself_is_zero():
    a = features()
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)


def test_fid_of_a_shifted_copy_is_the_squared_shift():
    a, f, d = features(f=8), 8, 0.3
    assert frechet_distance(a, a + d) == pytest.approx(f * d**2, rel=1e-7)


def test_fid_is_symmetric_and_matches_brute_force():
    a, b = features(seed=1), features(seed=2, scale=1.5, shift=0.2)
    fid = frechet_distance(a, b)
    assert fid > 1
    assert frechet_distance(b, a) == pytest.approx(fid, rel=1e-9)
    assert fid == pytest.approx(brute_force_fid(a, b), rel=1e-7)


def test_fid_in_one_dimension_is_the_gaussian_closed_form():
    """For 1-D Gaussians: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2, with the samples' own statistics."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 2.0, size=(300, 1)), rng.normal(-0.5, 0.5, size=(200, 1))
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)


def test_fid_takes_tensors_and_singular_covariances():
    a, b = features(n=5, f=16, seed=4), features(n=6, f=16, seed=5)  # N < F: both covariances are singular
    fid = frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    assert np.isfinite(fid) and fid == pytest.approx(frechet_distance(a, b), rel=1e-5)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    with pytest.raises(ValueError, match="same F"):
        frechet_distance(a, b[:, :3])


def test_inception_score_bounds():
    k, n = 10, 1000
    confident_and_spread = np.eye(k)[np.arange(n) % k]  # every split holds each class equally often
    mean, std = inception_score(confident_and_spread, splits=10)
    assert mean == pytest.approx(k) and std == pytest.approx(0, abs=1e-12)
    identical = np.tile(np.array([0.7, 0.2, 0.1]), (n, 1))
    assert inception_score(torch.from_numpy(identical), splits=5) == pytest.approx((1.0, 0.0))


def test_inception_score_of_a_hand_computed_mixture():
    """Half one-hot on class 0, half uniform over two classes: p(y) = (3/4, 1/4)."""
    probs = np.array([[1.0, 0.0]] * 2 + [[0.5, 0.5]] * 2)
    kl_onehot = np.log(1 / 0.75)
    kl_uniform = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    mean, std = inception_score(probs, splits=1)
    assert mean == pytest.approx(np.exp((kl_onehot + kl_uniform) / 2)) and std == 0


def test_confusion_matrix_and_per_class_accuracy():
    y_true = [0, 0, 1, 2, 2, 2]
    y_pred = torch.tensor([0, 1, 1, 2, 0, 2])
    cm = confusion_matrix(y_true, y_pred, num_classes=4)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(per_class_accuracy(y_true, y_pred, 4), [0.5, 1.0, 2 / 3, np.nan])
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 4], [0, 1], num_classes=4)


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_is_non_dominated_and_complete(seed):
    """Made-up (accuracy up, params down, latency down) results: no front point is dominated by any point, and
    every point off the front is dominated by a front point."""
    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.uniform(0.7, 0.95, 60), rng.integers(1, 40, 60) * 1e4, rng.uniform(0.1, 3, 60)])
    pts[5] = pts[9]  # an exact tie: both stay, neither dominates the other
    senses = (1, -1, -1)
    front = pareto_front(pts, senses)
    assert front == sorted(front) and len(front) >= 2
    for i in front:
        assert not any(dominates(pts[j], pts[i], senses) for j in range(len(pts)))
    for i in set(range(len(pts))) - set(front):
        assert any(dominates(pts[j], pts[i], senses) for j in front)


def test_pareto_front_by_hand():
    senses = (1, -1)  # accuracy up, params down
    pts = [(0.90, 100), (0.92, 300), (0.89, 50), (0.91, 400), (0.92, 300), (0.85, 60)]
    # (0.91, 400) is beaten by (0.92, 300); (0.85, 60) by (0.89, 50); the two (0.92, 300) tie
    assert pareto_front(pts, senses) == [0, 1, 2, 4]
    assert pareto_front([(0.5,)], (1,)) == [0]
    assert not dominates((0.9, 100), (0.9, 100), senses) and dominates((0.9, 99), (0.9, 100), senses)


def test_precision_and_recall_of_identical_disjoint_and_collapsed_sets():
    """Kynkaanniemi et al.'s precision and recall: identical sets 1 and 1; sets far apart 0 and 0; a generator
    collapsed onto the middle of the real distribution is precise (1) but covers little of it (recall near 0)."""
    from grutune.metrics import precision_recall

    real = features(n=300, f=6, seed=7)
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    assert precision_recall(real, real + 1e3) == (0.0, 0.0)
    collapsed = real.mean(0) + 0.01 * features(n=300, f=6, seed=8)
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.1
    half = real[np.argsort(real[:, 0])[:150]]  # only the lower half along one direction: precise, half the recall
    precision, recall = precision_recall(real, half)
    assert precision == 1.0 and 0.3 < recall < 0.7
    with pytest.raises(ValueError, match="same F"):
        precision_recall(real, real[:, :3])


def test_class_share_counts_the_argmax():
    from grutune.metrics import class_share

    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    assert class_share(probs).tolist() == [0.5, 0.25, 0.25]
