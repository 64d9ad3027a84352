"""The final GAN: the GAN sweep's best config trained from scratch, keeping its epoch with the best validation FID,
then scored on the test split; as the `gan` and `gan_eval` stages' jobs (`GanJob`, `GanEvalJob`, run where
grutune.final.runner decides), and read back from the gan stage's checkpoint (`load_generator`).
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from grutune.config import Params
from grutune.data import Prepared
from grutune.errors import Collapsed
from grutune.final.checkpoints import load_checkpoint, restore_rng, rng_state
from grutune.final.ray_train import RunHooks
from grutune.gan.models import Discriminator, Generator, build_discriminator, build_generator
from grutune.gan.scoring import FidScorer, class_grid, evaluate_gan
from grutune.gan.training import Recipe, fit_gan, new_gan
from grutune.models import build_classifier, to_float
from grutune.objectives import GanTrialConfig
from grutune.training import Split

__all__ = [
    "FinalGan",
    "FinalGanSettings",
    "GanEvalJob",
    "GanEvaluation",
    "GanJob",
    "TrainedGan",
    "load_generator",
    "portable",
    "score_final",
    "train_best",
]


@dataclass(frozen=True)
class FinalGanSettings:
    """How the final GAN trains and is scored, besides its config and recipe: the gan section's budget, its epochs
    scored as the GAN sweep scores its trials. Built from params in one place, `of`."""

    epochs: int
    noise_dim: int
    subset: int | None  # images per epoch (gan.train_subset); None: the whole train split
    eval_samples: int  # samples scored against as many validation images (gan_search.eval_samples)
    eval_every: int  # epochs between scorings; the last epoch is always scored
    min_diversity: float  # below it a scored epoch has collapsed and is never kept (gan_search.min_diversity)
    seed: int

    @classmethod
    def of(cls, params: Params) -> FinalGanSettings:
        """The final GAN's settings in a Params."""
        gan, sweep = params.gan, params.gan_search
        return cls(
            **gan.model_dump(include={"epochs", "noise_dim", "eval_every"}),
            **sweep.model_dump(include={"eval_samples", "min_diversity"}),
            subset=gan.train_subset,
            seed=params.seed,
        )


@dataclass(frozen=True)
class TrainedGan:
    """What `train_best` keeps: the generator of the best epoch (EMA weights where on), its discriminator, the
    per-epoch history (with val_fid and diversity on scored epochs), and which epoch that was."""

    G: Generator
    D: Discriminator
    history: list[dict]
    best_epoch: int
    val_fid: float


def train_best(
    hp: GanTrialConfig,
    recipe: Recipe,
    clf,
    data: Prepared,
    settings: FinalGanSettings,
    *,
    device: torch.device,
    hooks: RunHooks | None = None,
) -> TrainedGan:
    """Train a GAN config from scratch on a Prepared dataset's train split and keep its epoch with the best
    validation FID (`settings.eval_samples` samples against as many validation images, in `clf`'s features).

    Every `settings.eval_every` epochs (and the last) the generator is scored: an epoch whose samples are less diverse
    than `settings.min_diversity` is collapsed and never kept. If every scored epoch collapsed, raises Collapsed
    (naming the config and the diversities), so that nothing is written.

    With `hooks.checkpoint`, it is called after every epoch with the run's state (both players, their optimisers and
    EMA, the best epoch so far, the history and the random state the noise is drawn from); such a state given back as
    `hooks.resume` continues the run after that epoch as if it had not stopped. It trains in one process: the GAN does
    not train data-parallel, so `hooks.shard` is not read.
    """
    s, hooks = settings, hooks or RunHooks()
    torch.manual_seed(s.seed)
    gan = new_gan(
        hp,
        shape=data.x_train.shape[1:],
        noise_dim=s.noise_dim,
        device=device,
        ema_decay=recipe.ema_decay,
        num_classes=data.num_classes,
    )
    train, val = Split.of(data.x_train, data.y_train, device), Split.of(data.x_val, data.y_val, device)
    val_fid = FidScorer(clf, to_float(val.x[: min(s.eval_samples, len(val))]), seed=s.seed)
    best: dict = {}
    scored: list[tuple[int, float]] = []
    history: list[dict] = []
    if (resume := hooks.resume) is not None:
        for name, part in gan.parts().items():
            part.load_state_dict(resume[name])
        best, scored, history = dict(resume["best"]), [tuple(x) for x in resume["scored"]], list(resume["history"])
        restore_rng(resume, device)

    def epoch_end(m: dict) -> None:
        if m["epoch"] % s.eval_every == 0 or m["epoch"] == s.epochs:
            score = val_fid(gan.sampler)
            m.update(val_fid=score["fid"], diversity=score["diversity"])
            scored.append((m["epoch"], score["diversity"]))
            if score["diversity"] >= s.min_diversity and score["fid"] < best.get("fid", math.inf):
                best.update(
                    fid=score["fid"],
                    epoch=m["epoch"],
                    G=copy.deepcopy(gan.sampler.state_dict()),
                    D=copy.deepcopy(gan.D.state_dict()),
                )
        history.append(m)
        hooks.on_epoch(m)
        if hooks.checkpoint is not None:
            state = {name: part.state_dict() for name, part in gan.parts().items()}
            state.update(epoch=m["epoch"], best=best, scored=scored, history=history, **rng_state(device))
            hooks.checkpoint(state)

    fit_gan(
        gan,
        train,
        recipe,
        epochs=s.epochs,
        seed=s.seed,
        start_epoch=len(history),
        subset=s.subset,
        on_epoch=epoch_end,
        progress=hooks.progress,
    )
    if not best:
        spread = ", ".join(f"epoch {e}: {d:.3f}" for e, d in scored)
        raise Collapsed(
            f"the GAN collapsed at every scored epoch: sample diversity {spread}, below "
            f"gan_search.min_diversity {s.min_diversity} (real images: 1); config {hp.model_dump()}. "
            f"Nothing was written: pick another config in gan_search's space, or lower the learning rates"
        )
    G = gan.sampler
    G.load_state_dict(best["G"])
    gan.D.load_state_dict(best["D"])
    return TrainedGan(G, gan.D, history, best["epoch"], best["fid"])


@dataclass(frozen=True)
class FinalGan:
    """`train_best` then `evaluate_gan` (`score_final`), as the gan and gan_eval stages run them one after the other."""

    G: Generator
    D: Discriminator
    history: list[dict]
    metrics: dict
    grid: np.ndarray  # (rows, cols, C) in [0, 1]


def score_final(
    t: TrainedGan, clf, data: Prepared, settings: FinalGanSettings, *, device: torch.device, grid: int = 8
) -> FinalGan:
    """A GAN `train_best` trained, scored on the test split with `settings.eval_samples` samples, as the gan and
    gan_eval stages do one after the other."""
    metrics, picture = evaluate_gan(
        t.G, clf, data, eval_samples=settings.eval_samples, seed=settings.seed, device=device, grid=grid
    )
    return FinalGan(t.G, t.D, t.history, {**metrics, "best_epoch": t.best_epoch, "val_fid": t.val_fid}, picture)


def load_generator(path, data_hash: str, device: torch.device | str = "cpu") -> tuple[Generator, dict]:
    """The gan stage's generator and its checkpoint, refusing one trained on other data than `data_hash`."""
    ckpt = load_checkpoint(path, device, data_hash=data_hash, stage="gan")
    G = build_generator(ckpt["model_kwargs"])
    G.load_state_dict(ckpt["model"])
    return G.to(device), ckpt


# --------------------------------------------------------------------------- the stages' jobs


def portable(model: torch.nn.Module) -> tuple[dict, dict]:
    """A model as a job holds it: its constructor's kwargs and its weights on the CPU."""
    return dict(model.kwargs), {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _digest(weights: dict) -> str:
    """A hash of a model's weights, for a run's name."""
    h = hashlib.sha256()
    for k, v in weights.items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class GanJob:
    """The gan stage's job (a grutune.final.runner.Job): `train_best` of the sweep's best config, scored by the
    classifier trained on the same data."""

    hp: GanTrialConfig
    recipe: Recipe
    settings: FinalGanSettings
    classifier: tuple[dict, dict]  # `portable(clf)`
    data: Prepared
    shown: ClassVar[tuple[str, ...]] = ("d_loss", "g_loss", "val_fid", "diversity")

    @property
    def name(self) -> str:
        return f"gan-{self.data.name}"

    @property
    def epochs(self) -> int:
        return self.settings.epochs

    def identity(self) -> dict[str, Any]:
        return dict(
            hp=self.hp.model_dump(),
            recipe=repr(self.recipe),
            clf=_digest(self.classifier[1]),
            data=self.data.content_hash,
            **asdict(self.settings),
        )

    def run(self, device: torch.device, hooks: RunHooks) -> dict:
        clf = build_classifier(*self.classifier).to(device)
        trained = train_best(self.hp, self.recipe, clf, self.data, self.settings, device=device, hooks=hooks)
        (gk, gw), (dk, dw) = portable(trained.G), portable(trained.D)
        return {
            "generator": gw,
            "generator_kwargs": gk,
            "discriminator": dw,
            "discriminator_kwargs": dk,
            "history": trained.history,
            "best_epoch": trained.best_epoch,
            "val_fid": trained.val_fid,
        }

    def outcome(self, result: dict) -> TrainedGan:
        G = build_generator(result["generator_kwargs"])
        G.load_state_dict(result["generator"])
        D = build_discriminator(result["discriminator_kwargs"])
        D.load_state_dict(result["discriminator"])
        return TrainedGan(G, D, list(result["history"]), result["best_epoch"], result["val_fid"])


@dataclass(frozen=True)
class GanEvaluation:
    """The gan_eval stage's job done: the test scores and the two grids of samples, (rows, cols, C) in [0, 1]."""

    metrics: dict
    grid: np.ndarray
    by_class: np.ndarray


@dataclass(frozen=True)
class GanEvalJob:
    """The gan_eval stage's job (a grutune.final.runner.Job): `evaluate_gan` and `class_grid` of the gan stage's
    generator. It has no epochs to checkpoint: on Ray Train, after a lost node it starts again."""

    generator: tuple[dict, dict]  # `portable(G)`
    classifier: tuple[dict, dict]  # `portable(clf)`
    data: Prepared
    eval_samples: int
    seed: int
    epochs: ClassVar[int] = 0
    shown: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        return f"gan-eval-{self.data.name}"

    def identity(self) -> dict[str, Any]:
        return dict(
            G=_digest(self.generator[1]),
            clf=_digest(self.classifier[1]),
            data=self.data.content_hash,
            eval_samples=self.eval_samples,
            seed=self.seed,
        )

    def run(self, device: torch.device, hooks: RunHooks) -> dict:  # no epochs: the hooks have nothing to watch
        clf = build_classifier(*self.classifier).to(device)
        G = build_generator(self.generator[0])
        G.load_state_dict(self.generator[1])
        G = G.to(device)
        metrics, grid = evaluate_gan(G, clf, self.data, eval_samples=self.eval_samples, seed=self.seed, device=device)
        by_class = class_grid(G, clf, Split.of(self.data.x_test, self.data.y_test, device), seed=self.seed)
        return {"metrics": metrics, "grid": torch.from_numpy(grid), "class_grid": torch.from_numpy(by_class)}

    def outcome(self, result: dict) -> GanEvaluation:
        return GanEvaluation(dict(result["metrics"]), result["grid"].numpy(), result["class_grid"].numpy())
