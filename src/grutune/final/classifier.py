"""The final classifier: the sweep's pick retrained from scratch on train+val and tested, as the `train` stage's
job (`ClassifierJob`, run where grutune.final.runner decides: in this process, or on Ray Train workers, data-parallel
where there are several).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from grutune.data import Prepared, dataset_spec
from grutune.final.checkpoints import restore_rng, rng_state
from grutune.final.ray_train import RunHooks
from grutune.metrics import per_class_accuracy
from grutune.models import RecurrentClassifier, build_classifier
from grutune.objectives import TrialConfig
from grutune.training import Augment, Split, evaluate, fit, hardware, inference_cost, new_classifier

__all__ = ["ClassifierJob", "FinalClassifier", "FinalRun", "retrain_and_test", "test_metrics"]


@dataclass(frozen=True)
class FinalRun:
    """The final classifier after `retrain_and_test`: its per-epoch history and its test results."""

    model: RecurrentClassifier
    history: list[dict]
    test: dict  # loss, accuracy, pred (the test split's predicted labels)


def retrain_and_test(
    hp,
    data,
    *,
    epochs: int,
    seed: int,
    device: torch.device,
    augment: bool = False,
    hooks: RunHooks | None = None,
) -> FinalRun:
    """Train a config from scratch on train+val of a Prepared dataset, then evaluate it on the test split (with
    `hooks.progress`, a progress bar within each epoch on a terminal; with `augment`, random shifts, plus flips where
    the dataset's classes allow them).

    With `hooks.checkpoint`, it is called after every epoch with the run's state (`{"model", "optimizer", "epoch",
    "history", "rng"}`); such a state given back as `hooks.resume` continues the run after that epoch as if it had
    not stopped: the data order and learning rate of each epoch depend only on the seed and the epoch, and the random
    state that dropout draws from is restored. With `hooks.shard` of more than one worker, it trains data-parallel.
    """
    hooks = hooks or RunHooks()
    torch.manual_seed(seed)
    model, opt = new_classifier(hp, in_shape=data.x_train.shape[1:], num_classes=len(data.classes), device=device)
    history: list[dict] = []
    if (resume := hooks.resume) is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        history = list(resume["history"])
        restore_rng(resume, device)
    train = Split.of(np.concatenate([data.x_train, data.x_val]), np.concatenate([data.y_train, data.y_val]), device)
    aug = Augment.for_images(data.image_shape, dataset_spec(data.name).flip) if augment else None

    def epoch_end(m: dict) -> None:
        history.append(m)
        hooks.on_epoch(m)
        if hooks.checkpoint is not None:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": m["epoch"]}
            hooks.checkpoint({**state, "history": history, **rng_state(device)})

    trained = model
    shard = hooks.shard if hooks.shard is not None and hooks.shard[1] > 1 else None
    if shard is not None:  # gradients averaged over the processes; its start broadcast from rank 0
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    fit(
        trained,
        opt,
        train,
        None,
        epochs=epochs,
        batch_size=hp.batch_size,
        seed=seed,
        start_epoch=len(history),
        shard=shard,
        schedule_epochs=epochs,
        on_epoch=epoch_end,
        progress=hooks.progress,
        augment=aug,
    )
    return FinalRun(model, history, evaluate(model, Split.of(data.x_test, data.y_test, device)))


def test_metrics(test: dict, data) -> dict:
    """The classifier's test results as the train stage reports them: accuracy, loss, and accuracy per class."""
    per_class = per_class_accuracy(data.y_test, test["pred"].numpy(), len(data.classes))
    return {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "per_class_accuracy": {c: float(a) for c, a in zip(data.classes, per_class)},
    }


@dataclass(frozen=True)
class FinalClassifier:
    """The train stage's job done, wherever it ran: the final run (its model on this process's CPU) and what the
    trained model costs, measured where it trained."""

    final: FinalRun
    cost: dict  # params, latency_ms, latency_batch_ms (training.inference_cost)
    hardware: str  # where the latencies were measured, in words
    resumed_from_epoch: int = 0  # on Ray Train: the epoch whose checkpoint a lost worker's run went on from


@dataclass(frozen=True)
class ClassifierJob:
    """The train stage's job (a grutune.final.runner.Job): `retrain_and_test` of a config, then its size and speed
    where it trained."""

    hp: TrialConfig
    data: Prepared
    epochs: int
    seed: int
    augment: bool
    shown: ClassVar[tuple[str, ...]] = ("train_loss", "train_accuracy")

    @property
    def name(self) -> str:
        return f"train-{self.data.name}"

    def identity(self) -> dict[str, Any]:
        return dict(
            hp=self.hp.model_dump(),
            data=self.data.content_hash,
            epochs=self.epochs,
            seed=self.seed,
            augment=self.augment,
        )

    def run(self, device: torch.device, hooks: RunHooks) -> dict:
        final = retrain_and_test(
            self.hp, self.data, epochs=self.epochs, seed=self.seed, device=device, augment=self.augment, hooks=hooks
        )
        return {
            "model": final.model.state_dict(),
            "model_kwargs": dict(final.model.kwargs),
            "history": final.history,
            "test": final.test,
            "cost": inference_cost(final.model, self.data.image_shape, device),  # the deployed model's, measured here
            "hardware": hardware(device),
        }

    def outcome(self, result: dict) -> FinalClassifier:
        model = build_classifier(result["model_kwargs"], result["model"])
        return FinalClassifier(
            FinalRun(model, list(result["history"]), dict(result["test"])),
            dict(result["cost"]),
            result["hardware"],
            result.get("resumed_from_epoch", 0),
        )
