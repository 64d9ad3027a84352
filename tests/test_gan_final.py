"""The final GAN (grutune.gan.final): its settings from params, the epoch with the best validation FID kept, its
refusal to ship a collapsed generator, a resume that ends as a straight run, its checkpoint read back, and the gan
and gan_eval stages' jobs in this process (on Ray Train: tests/test_final_runner.py)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from grutune.config import load_params
from grutune.data import load_prepared
from grutune.errors import Collapsed, GrutuneError
from grutune.final.checkpoints import save_checkpoint
from grutune.final.ray_train import RunHooks
from grutune.final.runner import InProcess
from grutune.gan.final import (
    FinalGanSettings,
    GanEvalJob,
    GanJob,
    load_generator,
    portable,
    score_final,
    train_best,
)
from grutune.gan.scoring import FidScorer, class_grid, evaluate_gan
from grutune.gan.training import Recipe, new_gan
from grutune.models import to_float
from grutune.training import Split
from tiny_models import gan_config, gan_settings, scoring_classifier

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(prepared_mnist):
    return load_prepared(prepared_mnist(n_train=600, n_test=100, val_fraction=0.2))


@pytest.fixture(scope="module")
def clf():
    return scoring_classifier()


def test_the_settings_are_the_gan_budget_scored_as_the_sweep_scores_its_trials(tmp_path, write_params):
    over = {"gan": {"epochs": 7, "train_subset": None}, "gan_search": {"min_diversity": 0.25}, "seed": 3}
    params = load_params(write_params(tmp_path / "params.yaml", over))
    settings = FinalGanSettings.of(params)
    assert settings == FinalGanSettings(
        epochs=7,
        noise_dim=params.gan.noise_dim,
        subset=None,
        eval_samples=params.gan_search.eval_samples,  # validation images, as a trial scores; not gan.eval_samples
        eval_every=params.gan.eval_every,
        min_diversity=0.25,
        seed=3,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 8  # type: ignore[misc]


def trained_and_scored(hp, recipe, clf, data, settings, *, device):
    """The final GAN as the gan and gan_eval stages make it: `train_best`, then `score_final`."""
    return score_final(train_best(hp, recipe, clf, data, settings, device=device), clf, data, settings, device=device)


def test_the_final_gan_is_the_epoch_with_the_best_validation_fid(data, clf):
    torch.manual_seed(0)
    final = trained_and_scored(
        gan_config(lr_g=2e-2, lr_d=2e-2),
        Recipe(batch_size=32, ema_decay=0.0),
        clf,
        data,
        gan_settings(epochs=4),
        device=CPU,
    )
    val_fids = {m["epoch"]: m["val_fid"] for m in final.history}
    best = min(val_fids, key=val_fids.get)
    assert best != 4, "the test needs a run whose last epoch is not its best"
    assert final.metrics["best_epoch"] == best and final.metrics["val_fid"] == val_fids[best]
    # The generator handed back is that epoch's, not the last: it scores the same FID again on the same images.
    again = FidScorer(clf, to_float(Split.of(data.x_val[:50], data.y_val[:50], CPU).x), seed=0)(final.G)
    assert again["fid"] == pytest.approx(val_fids[best], rel=1e-9)


def test_scoring_every_few_epochs_scores_those_and_the_last(data, clf):
    final = trained_and_scored(
        gan_config(),
        Recipe(batch_size=64),
        clf,
        data,
        gan_settings(epochs=5, subset=64, eval_samples=20, eval_every=2),
        device=CPU,
    )
    assert [m["epoch"] for m in final.history if "val_fid" in m] == [2, 4, 5]
    assert final.metrics["best_epoch"] in (2, 4, 5)


def test_the_final_gan_fails_when_every_scored_epoch_collapsed(data, clf):
    with pytest.raises(Collapsed) as e:
        trained_and_scored(
            gan_config(),
            Recipe(batch_size=64),
            clf,
            data,
            gan_settings(epochs=2, subset=64, eval_samples=20, min_diversity=10.0),
            device=CPU,
        )
    msg = str(e.value)
    assert "collapsed at every scored epoch" in msg and "epoch 1: 0." in msg and "epoch 2: 0." in msg
    assert "min_diversity 10.0" in msg and "'generator': 'deconv'" in msg


def test_a_final_gan_resumed_from_an_epochs_checkpoint_ends_as_a_straight_run(data, clf):
    """`train_best` with `checkpoint` and `resume` (as the gan stage uses them on a cluster): restarted from its
    epoch-2 state, it keeps the same epoch with the same weights as a run that never stopped. The noise comes from
    torch's global random state, so this depends on restoring it."""
    saved = []

    def checkpoint(state: dict) -> None:  # written at once, as a checkpoint is (the state holds live tensors)
        f = io.BytesIO()
        torch.save(state, f)
        saved.append(f.getvalue())

    args = (gan_config(lr_g=2e-2, lr_d=2e-2), Recipe(batch_size=32, ema_decay=0.9), clf, data, gan_settings(epochs=4))
    straight = train_best(*args, device=CPU, hooks=RunHooks(checkpoint=checkpoint))
    states = [torch.load(io.BytesIO(b), weights_only=True) for b in saved]
    assert [s["epoch"] for s in states] == [1, 2, 3, 4]
    torch.rand(1000)  # other random draws between the stop and the resume
    resumed = train_best(*args, device=CPU, hooks=RunHooks(resume=states[1]))
    assert (resumed.best_epoch, resumed.val_fid) == (straight.best_epoch, straight.val_fid)
    assert [m["g_loss"] for m in resumed.history] == [m["g_loss"] for m in straight.history]
    for name, w in straight.G.state_dict().items():
        assert torch.equal(w, resumed.G.state_dict()[name]), name


def test_the_generator_is_read_back_as_saved_and_refused_for_other_data(tmp_path):
    torch.manual_seed(0)
    G = new_gan(gan_config(generator="rows"), shape=(28, 28, 1), noise_dim=8, device=CPU).G
    save_checkpoint(tmp_path / "gan.pt", G, data_hash="sha256:abc", epoch=3)
    loaded, ckpt = load_generator(tmp_path / "gan.pt", "sha256:abc")
    assert type(loaded) is type(G) and loaded.kwargs == G.kwargs and ckpt["epoch"] == 3
    z = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(loaded(z), G(z))
    with pytest.raises(GrutuneError, match=r"trained on other data \(sha256:abc\).*rerun the gan stage"):
        load_generator(tmp_path / "gan.pt", "sha256:abd")


def test_the_stages_jobs_in_this_process_are_train_best_then_evaluate_gan_and_class_grid(data, clf):
    """The gan and gan_eval stages' jobs, run in this process: the generator, discriminator and curves of
    `train_best`, each epoch shown as it ends; then the test scores and grids of `evaluate_gan` and `class_grid`."""
    settings, recipe = gan_settings(), Recipe(batch_size=32, ema_decay=0.9)
    shown = []
    trained = InProcess(CPU).run(GanJob(gan_config(), recipe, settings, portable(clf), data), on_epoch=shown.append)
    straight = train_best(gan_config(), recipe, clf, data, settings, device=CPU)
    assert [m["epoch"] for m in shown] == [1, 2] and trained.history == shown

    def untimed(history):
        return [{k: v for k, v in m.items() if k != "images_per_s"} for m in history]

    assert untimed(trained.history) == untimed(straight.history)
    assert (trained.best_epoch, trained.val_fid) == (straight.best_epoch, straight.val_fid)
    for mine, theirs in ((trained.G, straight.G), (trained.D, straight.D)):
        assert mine.kwargs == theirs.kwargs
        for k, w in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[k], w), k

    scores = InProcess(CPU).run(GanEvalJob(portable(trained.G), portable(clf), data, eval_samples=50, seed=0))
    metrics, grid = evaluate_gan(straight.G, clf, data, eval_samples=50, seed=0, device=CPU)
    by_class = class_grid(straight.G, clf, Split.of(data.x_test, data.y_test, CPU), seed=0)
    assert scores.metrics == metrics
    assert np.array_equal(scores.grid, grid) and np.array_equal(scores.by_class, by_class)


def test_a_conditional_final_gan_trains_is_read_back_and_scored_per_class(data, clf, tmp_path):
    """`gan_search.space.conditional: true` end to end in this process: train_best builds a conditional GAN for the
    dataset's classes, its checkpoint rebuilds it exactly, and gan_eval's job scores its class consistency."""
    hp = gan_config(generator="rows", conditional=True)
    trained = train_best(hp, Recipe(batch_size=32, ema_decay=0.9), clf, data, gan_settings(), device=CPU)
    assert trained.G.num_classes == data.num_classes == trained.D.num_classes
    save_checkpoint(tmp_path / "gan.pt", trained.G, data_hash=data.content_hash, epoch=trained.best_epoch)
    loaded, _ = load_generator(tmp_path / "gan.pt", data.content_hash)
    z, y = torch.randn(4, 8), torch.tensor([0, 3, 5, 9])
    with torch.no_grad():
        assert torch.equal(loaded(z, y), trained.G(z, y))
    scores = InProcess(CPU).run(GanEvalJob(portable(loaded), portable(clf), data, eval_samples=50, seed=0))
    assert scores.metrics["conditional"] and 0 <= scores.metrics["class_consistency"] <= 1
    assert set(scores.metrics["per_class"]) == set(data.classes)
    assert all(0 <= row["class_consistency"] <= 1 for row in scores.metrics["per_class"].values())
    assert scores.by_class.shape == class_grid(loaded, clf, Split.of(data.x_test, data.y_test, CPU), seed=0).shape
