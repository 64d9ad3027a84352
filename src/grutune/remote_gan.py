"""The GAN stages' work (`gan`, `gan_eval`) as one Ray Train worker on the cluster they join, on remote.py's protocol
(checkpoints, run names, placement). Apart from remote.py so that the classifier's `train` stage does not depend on
the GAN's code: a change to the GAN does not retrain the classifier."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
import torch

from grutune.gan import TrainedGan, class_grid, evaluate_gan, train_best
from grutune.gan_models import build_discriminator, build_generator
from grutune.models import build_classifier
from grutune.remote import Placement, report_state, resumed_state, run_name, run_on_worker, worker_device
from grutune.training import Split

__all__ = ["GanEvalJob", "GanJob", "evaluate_gan_on", "train_gan"]


@dataclass(frozen=True)
class GanJob:
    """What the gan stage hands its Ray Train worker: the data and the classifier (in Ray's object store), the
    config and the training's settings (`gan.train_best`'s arguments)."""

    data: Any  # ObjectRef of a Prepared
    classifier: Any  # ObjectRef of (the classifier's kwargs, its weights)
    hp: Any  # GanTrialConfig
    recipe: Any  # gan.Recipe
    settings: dict  # epochs, noise_dim, subset, eval_samples, eval_every, min_diversity, seed


def _gan_loop(config: dict) -> None:
    job: GanJob = config["job"]
    data, (kwargs, weights) = ray.get(job.data), ray.get(job.classifier)
    device, node = worker_device(), ray.get_runtime_context().get_node_id()
    resume = resumed_state(device)
    if resume is not None and "result" in resume:
        report_state({"result": 1}, resume)
        return
    if resume is not None:
        print(f"resuming after epoch {resume['epoch']} of {job.settings['epochs']} on node {node}", flush=True)
    clf = build_classifier(kwargs, weights).to(device)

    def on_epoch(m: dict) -> None:
        fid = f"  val_fid {m['val_fid']:.3f}" if "val_fid" in m else ""
        print(
            f"epoch {m['epoch']}/{job.settings['epochs']}  d_loss {m['d_loss']:.4f}  g_loss {m['g_loss']:.4f}"
            f"{fid}  {m['images_per_s']:.0f} images/s",
            flush=True,
        )

    trained = train_best(
        job.hp,
        job.recipe,
        clf,
        data,
        **job.settings,
        device=device,
        on_epoch=on_epoch,
        resume=resume,
        checkpoint=lambda state: report_state(state["history"][-1], {**state, "node_id": node}),
    )
    report_state(
        {"result": 1},
        {
            "result": True,
            "generator": trained.G.state_dict(),
            "generator_kwargs": dict(trained.G.kwargs),
            "discriminator": trained.D.state_dict(),
            "discriminator_kwargs": dict(trained.D.kwargs),
            "history": trained.history,
            "best_epoch": trained.best_epoch,
            "val_fid": trained.val_fid,
            "node_id": node,
            "resumed_from_epoch": 0 if resume is None else resume["epoch"],
        },
    )


def train_gan(
    hp, recipe, clf, data, *, settings: dict, where: Placement, on_epoch: Callable[[dict], None] = lambda m: None
) -> TrainedGan:
    """`gan.train_best` (with `settings`) as one Ray Train worker on the cluster: a TrainedGan back on this node's
    CPU, and the node it ended on."""
    name = run_name(
        f"gan-{data.name}",
        hp=hp.model_dump(),
        recipe=repr(recipe),
        clf=_digest(clf),
        data=data.content_hash,
        **settings,
    )
    classifier = ray.put(_weights(clf))
    job = GanJob(data=ray.put(data), classifier=classifier, hp=hp, recipe=recipe, settings=settings)
    state = run_on_worker(_gan_loop, {"job": job}, name=name, where=where, on_epoch=on_epoch)
    G = build_generator(state["generator_kwargs"])
    G.load_state_dict(state["generator"])
    D = build_discriminator(state["discriminator_kwargs"])
    D.load_state_dict(state["discriminator"])
    return TrainedGan(G, D, list(state["history"]), state["best_epoch"], state["val_fid"])


@dataclass(frozen=True)
class GanEvalJob:
    """What the gan_eval stage hands its Ray Train worker: the data, classifier and generator (in Ray's object
    store) and the evaluation's settings."""

    data: Any  # ObjectRef of a Prepared
    classifier: Any  # ObjectRef of (kwargs, weights)
    generator: Any  # ObjectRef of (kwargs, weights)
    eval_samples: int
    seed: int


def _gan_eval_loop(config: dict) -> None:
    job: GanEvalJob = config["job"]
    data, device = ray.get(job.data), worker_device()
    (ck, cw), (gk, gw) = ray.get(job.classifier), ray.get(job.generator)
    clf = build_classifier(ck, cw).to(device)
    G = build_generator(gk)
    G.load_state_dict(gw)
    G = G.to(device)
    metrics, grid = evaluate_gan(G, clf, data, eval_samples=job.eval_samples, seed=job.seed, device=device)
    by_class = class_grid(G, clf, Split.of(data.x_test, data.y_test, device), seed=job.seed)
    report_state(
        {"result": 1},
        {"result": True, "metrics": metrics, "grid": torch.from_numpy(grid), "class_grid": torch.from_numpy(by_class)},
    )


def _weights(model: torch.nn.Module) -> tuple[dict, dict]:
    """A model as it travels to a worker: its constructor's kwargs and its weights on the CPU."""
    return dict(model.kwargs), {k: v.cpu() for k, v in model.state_dict().items()}


def _digest(model: torch.nn.Module) -> str:
    """A hash of a model's weights, for a run's name."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def evaluate_gan_on(where: Placement, G, clf, data, *, eval_samples: int, seed: int):
    """`gan.evaluate_gan` and `gan.class_grid` as one Ray Train worker on the cluster (an evaluation has no epochs to
    checkpoint: after a lost node it starts again): the metrics, the sample grid and the by-class grid."""
    name = run_name(
        f"gan-eval-{data.name}",
        G=_digest(G),
        clf=_digest(clf),
        data=data.content_hash,
        eval_samples=eval_samples,
        seed=seed,
    )
    job = GanEvalJob(ray.put(data), ray.put(_weights(clf)), ray.put(_weights(G)), eval_samples, seed)
    state = run_on_worker(_gan_eval_loop, {"job": job}, name=name, where=where, on_epoch=lambda m: None)
    return dict(state["metrics"]), state["grid"].numpy(), state["class_grid"].numpy()
