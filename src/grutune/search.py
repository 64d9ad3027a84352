"""The classifier sweep: Ray Tune runs Optuna's TPE with ASHA early stopping over the space in params.yaml.

The trainable is a plain function of `config`; it calls the same `fit()` as the final `train` stage and only adds
Tune reporting and per-epoch checkpoints around it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from grutune.config import Params, TrialConfig
from grutune.data import Prepared
from grutune.errors import GrutuneError
from grutune.models import GRUClassifier
from grutune.training import Split, fit, pick_device

METRIC, MODE = "val_accuracy", "max"
CHECKPOINT = "checkpoint.pt"


# --------------------------------------------------------------------------- search space

def tune_param_space(space: dict[str, Any]) -> dict[str, Any]:
    """Turn the validated params.yaml space into Tune distributions (OptunaSearch converts them for TPE)."""
    out = {}
    for key, dim in space.items():
        if not isinstance(dim, tuple):
            out[key] = dim  # fixed value
            continue
        kind, args = dim
        out[key] = {"choice": lambda a: tune.choice(a),
                    "uniform": lambda a: tune.uniform(*a),
                    "loguniform": lambda a: tune.loguniform(*a),
                    "int": lambda a: tune.randint(a[0], a[1] + 1)}[kind](args)  # randint's high is exclusive
    return out


def sweep_id(params: Params, dataset: str, content_hash: str) -> str:
    """A sweep's identity: its search space, its budget and the data version. Anything else is a new sweep."""
    s = params.search
    key = {"dataset": dataset, "data": content_hash, "seed": params.seed, "space": s.space,
           "budget": [s.num_samples, s.max_epochs, s.grace_period, s.reduction_factor, s.train_subset]}
    return f"{dataset}-" + hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- trial

def run_trial(config: dict, *, data: dict[str, np.ndarray], settings: dict) -> None:
    """One Tune trial: train for up to `max_epochs`, reporting val accuracy and a checkpoint every epoch."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # not one "checkpoint created" line per epoch
    torch.set_num_threads(settings["threads"])
    hp = TrialConfig(**{k: config[k] for k in TrialConfig.model_fields})
    device = pick_device()
    torch.manual_seed(settings["seed"])
    model = GRUClassifier(in_shape=settings["in_shape"], num_classes=settings["num_classes"],
                          **hp.model_kwargs()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=hp.lr)
    start_epoch = 0
    if (ckpt := tune.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"]

    def report(m: dict) -> None:
        with tempfile.TemporaryDirectory() as d:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": m["epoch"],
                        "config": hp.model_dump()}, Path(d) / CHECKPOINT)
            tune.report(m, checkpoint=tune.Checkpoint.from_directory(d))

    fit(model, opt, Split.of(data["x_train"], data["y_train"], device),
        Split.of(data["x_val"], data["y_val"], device),
        epochs=settings["max_epochs"], batch_size=hp.batch_size, seed=settings["seed"],
        start_epoch=start_epoch, subset=settings["train_subset"], on_epoch=report)


# --------------------------------------------------------------------------- driver

def init_ray() -> bool:
    """Join the cluster in RAY_ADDRESS, or start a local Ray; returns True when joining an existing cluster.

    Token authentication stays on (Ray's default). Only Ray's notice that it is on by default is quieted; a user
    who sets RAY_AUTH_MODE keeps full control. The dashboard is not started for a local Ray.
    """
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    remote = bool(os.environ.get("RAY_ADDRESS"))
    if not ray.is_initialized():
        ray.init(include_dashboard=None if remote else False, log_to_driver=True)
    return remote


def trial_resources(params: Params, remote: bool) -> dict[str, float]:
    """Per-trial resources from params; on a local Ray, capped to what this machine has so trials can start.

    On a cluster they are taken as asked: the autoscaler adds the GPU nodes they need.
    """
    want = {"cpu": params.search.resources.cpu, "gpu": params.search.resources.gpu}
    if remote:
        return want
    have = ray.cluster_resources()
    got = {"cpu": min(want["cpu"], have.get("CPU", 1)), "gpu": want["gpu"] if have.get("GPU") else 0.0}
    if got != want:
        print(f"search.resources {want} exceed this machine's {{'cpu': {have.get('CPU', 0):g}, "
              f"'gpu': {have.get('GPU', 0):g}}}: each trial gets {got}")
    return got


@dataclass(frozen=True)
class SearchResult:
    sweep_id: str
    best: dict[str, Any]          # trial_id, val_accuracy, epochs, config
    trials: list[dict[str, Any]]  # one row per trial
    summary: dict[str, Any]       # counts and timing, for DVC metrics


def _trial_rows(results, max_epochs: int) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        df = r.metrics_dataframe
        has = df is not None and METRIC in df and len(df)
        epochs = int(df["epoch"].max()) if has else 0
        status = ("errored" if r.error is not None else "completed" if epochs >= max_epochs else "pruned")
        hp = {k: r.config.get(k) for k in TrialConfig.model_fields}
        rows.append({"trial_id": (r.metrics or {}).get("trial_id") or Path(r.path).name, "status": status, **hp,
                     "best_val_accuracy": float(df[METRIC].max()) if has else float("nan"),
                     "epochs": epochs})
    return rows


def run_search(params: Params, data: Prepared, *, state_dir: Path, callbacks: list | None = None,
               remote: bool = False) -> SearchResult:
    """Run (or finish) the sweep for one dataset and return its best config and per-trial table."""
    sid = sweep_id(params, data.name, data.content_hash)
    s = params.search
    exp_dir = Path(state_dir).resolve() / sid
    if exp_dir.exists():  # a sweep interrupted before it finished: start it again cleanly
        print(f"discarding the unfinished sweep state in {exp_dir}")
        shutil.rmtree(exp_dir)
    resources = trial_resources(params, remote)
    settings = {"in_shape": tuple(int(d) for d in data.x_train.shape[1:]), "num_classes": len(data.classes),
                "max_epochs": s.max_epochs, "train_subset": s.train_subset, "seed": params.seed,
                "threads": max(1, int(resources["cpu"]))}
    arrays = {k: getattr(data, k) for k in ("x_train", "y_train", "x_val", "y_val")}
    trainable = tune.with_resources(tune.with_parameters(run_trial, data=arrays, settings=settings), resources)
    tuner = tune.Tuner(
        trainable,
        param_space=tune_param_space(s.space),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, num_samples=s.num_samples,
            max_concurrent_trials=s.max_concurrent_trials or None,
            search_alg=OptunaSearch(seed=params.seed),
            scheduler=ASHAScheduler(time_attr="epoch", max_t=s.max_epochs, grace_period=s.grace_period,
                                    reduction_factor=s.reduction_factor)),
        run_config=tune.RunConfig(
            name=sid, storage_path=str(exp_dir.parent), callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    # One checkpoint kept per trial forces an experiment snapshot per report; that is intended, not a bottleneck.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    t0 = time.time()
    results = tuner.fit()
    wall = time.time() - t0
    rows = _trial_rows(results, s.max_epochs)
    ok = [r for r in rows if r["status"] != "errored" and r["best_val_accuracy"] == r["best_val_accuracy"]]
    if not ok:
        raise GrutuneError(f"every trial of sweep {sid} failed; see the trial logs under {exp_dir}")
    top = max(ok, key=lambda r: r["best_val_accuracy"])
    best = {"dataset": data.name, "sweep_id": sid, "data_hash": data.content_hash, "trial_id": top["trial_id"],
            "val_accuracy": top["best_val_accuracy"], "epochs": top["epochs"],
            "config": TrialConfig(**{k: top[k] for k in TrialConfig.model_fields}).model_dump()}
    counts = {st: sum(r["status"] == st for r in rows) for st in ("completed", "pruned", "errored")}
    summary = {"best_val_accuracy": top["best_val_accuracy"], "trials": len(rows), **counts,
               "epochs_run": sum(r["epochs"] for r in rows), "wall_time_s": round(wall, 1)}
    return SearchResult(sid, best, rows, summary)
