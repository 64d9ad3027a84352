"""The classifier sweep: Ray Tune runs Optuna's TPE with ASHA early stopping over the space in params.yaml.

The trainable is a plain function of `config`; it calls the same `fit()` as the final `train` stage and only adds
Tune reporting and per-epoch checkpoints around it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import ray
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from grutune.config import GanTrialConfig, Params, TrialConfig
from grutune.data import Prepared
from grutune.errors import GrutuneError
from grutune.gan import classifier_view, diversity, generate, optimizers, train_gan
from grutune.metrics import frechet_distance
from grutune.models import Discriminator, GRUClassifier, GRUGenerator, build_classifier, to_float
from grutune.training import NonFiniteLoss, Split, fit, pick_device

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


def identity(name: str, budget, seed: int, content_hash: str, extra=None) -> str:
    """A sweep's identity: its search space, its budget and the data version. Anything else is a new sweep."""
    key = {"dataset": name, "data": content_hash, "seed": seed, "space": budget.space,
           "budget": [budget.num_samples, budget.max_epochs, budget.grace_period, budget.reduction_factor,
                      budget.train_subset]}
    if extra:
        key["extra"] = extra
    return f"{name}-" + hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:10]


def sweep_id(params: Params, dataset: str, content_hash: str) -> str:
    """The classifier sweep's identity for one dataset."""
    return identity(dataset, params.search, params.seed, content_hash)


class JournalOptunaSearch(OptunaSearch):
    """OptunaSearch whose study lives in an Optuna journal file: the sweep's search history survives any crash.

    Tune restores a searcher from a pickle of its last snapshot, which after a hard kill can be older than the
    journal (and a searcher passed anew on restore is silently dropped). So on restore the study is reloaded from
    the journal and Tune's trial ids are re-attached from a user attribute: TPE keeps its whole history, trials
    that finished after the snapshot stay finished, and a trial asked for just before the kill is handed out again
    instead of asking Optuna for one more.
    """

    TUNE_ID = "tune_trial_id"

    def __init__(self, *, journal: Path, study_name: str, seed: int, metric: str = METRIC, mode: str = MODE):
        super().__init__(metric=metric, mode=mode, study_name=study_name, sampler=optuna.samplers.TPESampler(seed=seed),
                         storage=JournalStorage(JournalFileBackend(str(journal))))
        self._seed_base = seed
        self._orphans: list = []

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # The pickled sampler's random state is from the snapshot: reseed it past everything the journal holds,
        # or it would draw again the configs it drew between the snapshot and the crash.
        n = len(optuna.load_study(study_name=self._study_name, storage=self._storage).trials)
        self._sampler = optuna.samplers.TPESampler(seed=self._seed_base + n)
        study = optuna.load_study(study_name=self._study_name, storage=self._storage, sampler=self._sampler)
        known = set(self._ot_trials)
        self._ot_study, self._ot_trials, self._orphans = study, {}, []
        for t in study.get_trials(deepcopy=False):
            tid = t.user_attrs.get(self.TUNE_ID)
            if t.state.is_finished():
                self._completed_trials.add(tid)
            elif tid in known:
                self._ot_trials[tid] = optuna.trial.Trial(study, t._trial_id)
            else:
                self._orphans.append(optuna.trial.Trial(study, t._trial_id))

    def suggest(self, trial_id: str):
        if trial_id not in self._ot_trials and self._orphans:
            self._ot_trials[trial_id] = self._orphans.pop(0)
        config = super().suggest(trial_id)
        if config is not None:
            self._ot_trials[trial_id].set_user_attr(self.TUNE_ID, trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials:
            return  # a trial replayed after a crash re-reports what the journal already holds
        if not result.get("diverged"):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return  # finished before a crash, then replayed by Tune from a stale snapshot
        ot_trial = self._ot_trials[trial_id]
        if result and "epoch" in result:  # the final result reaches the searcher here, not in on_trial_result
            ot_trial.set_user_attr("epochs", int(result["epoch"]))
        if error or (result or {}).get("diverged"):
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


# --------------------------------------------------------------------------- trial

def run_trial(config: dict, *, data: dict[str, np.ndarray], settings: dict) -> None:
    """One Tune trial: train for up to `max_epochs`, reporting val accuracy and a checkpoint every epoch."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # not one "checkpoint created" line per epoch
    if (done := _finished_result(settings, METRIC)) is not None:
        tune.report(done)  # finished before a crash that Tune's last snapshot missed: the journal knows better
        return
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

    node = ray.get_runtime_context().get_node_id()

    def report(m: dict) -> None:
        m = {**m, "resumed_from_epoch": start_epoch, "node_id": node}
        with tempfile.TemporaryDirectory() as d:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": m["epoch"],
                        "config": hp.model_dump()}, Path(d) / CHECKPOINT)
            tune.report(m, checkpoint=tune.Checkpoint.from_directory(d))

    epochs_done = [start_epoch]
    try:
        fit(model, opt, Split.of(data["x_train"], data["y_train"], device),
            Split.of(data["x_val"], data["y_val"], device),
            epochs=settings["max_epochs"], batch_size=hp.batch_size, seed=settings["seed"],
            start_epoch=start_epoch, subset=settings["train_subset"],
            on_epoch=lambda m: (epochs_done.append(m["epoch"]), report(m)))
    except NonFiniteLoss as e:
        # Stop at once and say so: retrying a diverged config would only diverge again.
        tune.report({"epoch": epochs_done[-1] + 1, METRIC: 0.0, "diverged": 1, "error": str(e),
                     "resumed_from_epoch": start_epoch, "node_id": node})


class Collapsed(RuntimeError):
    """The generator draws (nearly) one image whatever the noise."""


def run_gan_trial(config: dict, *, data: dict, settings: dict) -> None:
    """One GAN trial: train epoch by epoch, reporting the classifier-feature FID (lower is better) and a checkpoint.

    A collapsed generator (samples far less varied than real images) or a NaN loss stops the trial at once; it is
    counted as failed and never picked.
    """
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    if (done := _finished_result(settings, "fid")) is not None:
        tune.report(done)
        return
    torch.set_num_threads(settings["threads"])
    hp = GanTrialConfig(**{k: config[k] for k in GanTrialConfig.model_fields})
    device = pick_device()
    torch.manual_seed(settings["seed"])
    shape = settings["in_shape"]
    G = GRUGenerator(out_shape=shape, noise_dim=settings["noise_dim"], hidden_size=hp.hidden_size,
                     num_layers=hp.num_layers).to(device)
    D = Discriminator(in_shape=shape, backbone=hp.backbone).to(device)
    clf = build_classifier(settings["classifier_kwargs"]).to(device)
    clf.load_state_dict(data["classifier"])
    opt_g, opt_d = optimizers(G, D, lr_g=hp.lr_g, lr_d=hp.lr_d)
    start_epoch = 0
    if (ckpt := tune.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT, map_location=device, weights_only=True)
        for module, key in ((G, "generator"), (D, "discriminator"), (opt_g, "opt_g"), (opt_d, "opt_d")):
            module.load_state_dict(state[key])
        start_epoch = state["epoch"]
    n = min(settings["eval_samples"], len(data["x_val"]))
    real = to_float(Split.of(data["x_val"][:n], data["y_val"][:n], device).x)
    real_features, _ = classifier_view(clf, real)
    node = ray.get_runtime_context().get_node_id()
    epochs_done = [start_epoch]

    def report(m: dict) -> None:
        fake = generate(G, n, seed=settings["seed"], device=device)
        spread = diversity(fake, real)
        if spread < settings["min_diversity"]:
            raise Collapsed(f"generator collapsed: sample diversity {spread:.3f} (real images: 1)")
        epochs_done.append(m["epoch"])
        r = {**m, "fid": float(frechet_distance(classifier_view(clf, fake)[0], real_features)), "diversity": spread,
             "resumed_from_epoch": start_epoch, "node_id": node}
        with tempfile.TemporaryDirectory() as d:
            torch.save({"generator": G.state_dict(), "discriminator": D.state_dict(), "opt_g": opt_g.state_dict(),
                        "opt_d": opt_d.state_dict(), "epoch": m["epoch"], "config": hp.model_dump()},
                       Path(d) / CHECKPOINT)
            tune.report(r, checkpoint=tune.Checkpoint.from_directory(d))

    try:
        train_gan(G, D, opt_g, opt_d, Split.of(data["x_train"], data["y_train"], device),
                  epochs=settings["max_epochs"], batch_size=settings["batch_size"], seed=settings["seed"],
                  start_epoch=start_epoch, subset=settings["train_subset"], on_epoch=report)
    except (NonFiniteLoss, Collapsed) as e:
        tune.report({"epoch": epochs_done[-1] + 1, "fid": 1e12, "diverged": 1, "error": str(e),
                     "resumed_from_epoch": start_epoch, "node_id": node})


def _finished_result(settings: dict, metric: str) -> dict | None:
    """The final result the Optuna journal holds for this Tune trial, if it finished before a crash that Tune's
    last snapshot missed (readable where the journal is: the driver's node, or every node with shared storage)."""
    journal = settings.get("journal")
    if not journal or not Path(journal).exists():
        return None
    trial_id = tune.get_context().get_trial_id()
    study = optuna.load_study(study_name=settings.get("study"), storage=JournalStorage(JournalFileBackend(journal)))
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(JournalOptunaSearch.TUNE_ID) == trial_id and t.state.is_finished():
            failed = t.state != optuna.trial.TrialState.COMPLETE
            epochs = max([t.user_attrs.get("epochs", 0), *t.intermediate_values])
            value = t.value if t.value is not None else (list(t.intermediate_values.values()) or [0.0])[-1]
            return {"epoch": epochs, metric: float(value), **({"diverged": 1} if failed else {})}
    return None


# --------------------------------------------------------------------------- driver

def init_ray() -> bool:
    """Join a running Ray cluster (RAY_ADDRESS, or one started with `ray start` on this node), else start one.

    Returns True when joining an existing cluster. Token authentication stays on (Ray's default); only Ray's notice
    that it is on by default is quieted. A Ray started here runs without its dashboard.
    """
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if not ray.is_initialized():
        # Trial processes' own output stays in Ray's logs: Tune reports each trial's progress and errors (with the
        # traceback saved in the trial's directory), and Ray's worker-shutdown noise stays out of the run's output.
        ray.init(include_dashboard=False if not os.environ.get("RAY_ADDRESS") else None, log_to_driver=False)
    node = getattr(ray._private.worker, "_global_node", None)  # the node this driver started, if it started one
    return not (node is not None and getattr(node, "head", False))


def trial_resources(resources, remote: bool) -> dict[str, float]:
    """Per-trial resources from params; on a Ray started here, capped to what this machine has so trials can start.

    On a cluster they are taken as asked: the autoscaler adds the GPU nodes they need.
    """
    want = {"cpu": resources.cpu, "gpu": resources.gpu}
    if remote:
        return want
    have = ray.cluster_resources()
    got = {"cpu": min(want["cpu"], have.get("CPU", 1)), "gpu": want["gpu"] if have.get("GPU") else 0.0}
    if got != want:
        print(f"resources per trial {want} exceed this machine's {{'cpu': {have.get('CPU', 0):g}, "
              f"'gpu': {have.get('GPU', 0):g}}}: each trial gets {got}")
    return got


class SweepInterrupted(GrutuneError):
    """The sweep stopped before all its trials finished; its state is kept for a resume."""


@dataclass(frozen=True)
class Sweep:
    """What a sweep is: the classifier's and the GAN's differ only in these."""

    name: str            # dataset name, or e.g. "gan-mnist"
    budget: Any          # SearchParams or GanSearchParams: num_samples, max_epochs, ..., resources, space
    hp_model: type       # the pydantic model of one trial's hyperparameters
    metric: str
    mode: str            # "max" or "min"
    trainable: Any       # a function of (config, *, data, settings)
    seed: int
    data_hash: str
    extra_identity: Any = None

    @property
    def sweep_id(self) -> str:
        return identity(self.name, self.budget, self.seed, self.data_hash, self.extra_identity)

    def better(self, a: float, b: float) -> bool:
        """Whether value a beats b (NaN never does)."""
        return a == a and (b != b or (a > b if self.mode == "max" else a < b))


@dataclass(frozen=True)
class SearchResult:
    sweep_id: str
    best: dict[str, Any]          # trial_id, val_accuracy, epochs, config
    trials: list[dict[str, Any]]  # one row per trial
    summary: dict[str, Any]       # counts and timing, for DVC metrics
    progress: list[dict[str, Any]]  # best-so-far metric after each trial, in the order they were proposed
    progress_time: list[dict[str, Any]]  # the same, in the order trials ended, against wall time


STATUSES = ("completed", "pruned", "failed", "errored")


def _journal_progress(journal: Path, study_name: str, sweep: "Sweep") -> dict[str, tuple[int, float, int, bool]]:
    """{tune trial id: (epochs, best value, Optuna trial number, completed)} from the Optuna journal, which a hard kill cannot leave behind Tune's
    own result files."""
    if not journal.exists():
        return {}
    study = optuna.load_study(study_name=study_name, storage=JournalStorage(JournalFileBackend(str(journal))))
    out = {}
    for t in study.get_trials(deepcopy=False):
        if JournalOptunaSearch.TUNE_ID in t.user_attrs:
            values = [*t.intermediate_values.values(), *([t.value] if t.value is not None else [])]
            epochs = max([t.user_attrs.get("epochs", 0), *t.intermediate_values])
            best = float("nan")
            for v in values:
                best = v if sweep.better(v, best) else best
            out[t.user_attrs[JournalOptunaSearch.TUNE_ID]] = (epochs, best, t.number,
                                                              t.state == optuna.trial.TrialState.COMPLETE)
    return out


def _trial_rows(results, sweep: "Sweep", journal: dict[str, tuple[int, float, int, bool]]) -> list[dict[str, Any]]:
    """One row per trial: completed (ran max_epochs), pruned (stopped by ASHA), failed (diverged), errored (raised)."""
    rows, metric = [], sweep.metric
    for r in results:
        df = r.metrics_dataframe
        has = df is not None and metric in df and len(df) > 0
        tid = (r.metrics or {}).get("trial_id") or _trial_id_from_dir(r.path)
        j_epochs, j_best, number, j_complete = journal.get(tid, (0, float("nan"), -1, False))
        epochs = max(int(df["epoch"].max()) if has else 0, j_epochs)
        diverged = has and "diverged" in df and bool(df["diverged"].fillna(0).max())
        # A trial the journal records as complete finished before a crash; if Tune then failed to restore it from a
        # stale snapshot (its checkpoint already rotated away), that error does not undo its result.
        errored = r.error is not None and not j_complete
        status = ("errored" if errored else "failed" if diverged
                  else "completed" if epochs >= sweep.budget.max_epochs else "pruned")
        best = float("nan")
        if not diverged:
            for v in [*(df[metric].tolist() if has else []), j_best]:
                best = float(v) if sweep.better(float(v), best) else best
        hp = {k: r.config.get(k) for k in sweep.hp_model.model_fields}
        error_file = Path(r.path) / "error.txt"
        ended = float(df["timestamp"].max()) if has and "timestamp" in df else float("nan")
        time_s = float(df["time_total_s"].max()) if has and "time_total_s" in df else 0.0
        rows.append({"trial": number, "trial_id": tid, "status": status, **hp, f"best_{metric}": best,
                     "epochs": epochs,
                     "resumed_from_epoch": int(df["resumed_from_epoch"].max()) if has and "resumed_from_epoch" in df
                     else 0,
                     "error": str(error_file) if errored and error_file.exists() else "",
                     "_ended": ended, "_time_s": round(time_s, 1)})
    return sorted(rows, key=lambda r: (r["trial"], r["trial_id"]))  # in the order Optuna proposed them


def _trial_id_from_dir(path: str) -> str:
    """Tune names a trial's directory <trainable>_<trial id>_<index>_<config>; a trial that never reported has
    only this to go by."""
    import re

    m = re.search(r"_([0-9a-f]{8}|[0-9a-f]{5}_[0-9]{5})_\d+_", Path(path).name)
    return m.group(1) if m else Path(path).name


def _is_uri(path: str) -> bool:
    return "://" in path


def run_search(params: Params, data: Prepared, *, state_dir: Path, callbacks: list | None = None,
               remote: bool = False, trainable_fn=run_trial) -> SearchResult:
    """Run, resume or re-read the classifier sweep for one dataset; return its best config and per-trial table."""
    sweep = Sweep(name=data.name, budget=params.search, hp_model=TrialConfig, metric=METRIC, mode=MODE,
                  trainable=trainable_fn, seed=params.seed, data_hash=data.content_hash)
    settings = {"in_shape": tuple(int(d) for d in data.x_train.shape[1:]), "num_classes": len(data.classes),
                "max_epochs": params.search.max_epochs, "train_subset": params.search.train_subset,
                "seed": params.seed}
    arrays = {k: getattr(data, k) for k in ("x_train", "y_train", "x_val", "y_val")}
    result = run_sweep(sweep, arrays, settings, state_dir=state_dir, callbacks=callbacks, remote=remote)
    result.best["dataset"] = data.name
    return result


def gan_sweep(params: Params, data: Prepared, classifier_hash: str) -> Sweep:
    """The GAN sweep on gan.dataset. Its FID depends on the classifier too, so that is part of its identity."""
    g = params.gan
    return Sweep(name=f"gan-{data.name}", budget=params.gan_search, hp_model=GanTrialConfig, metric="fid",
                 mode="min", trainable=run_gan_trial, seed=params.seed, data_hash=data.content_hash,
                 extra_identity={"classifier": classifier_hash, "batch_size": g.batch_size, "noise_dim": g.noise_dim,
                                 "eval_samples": params.gan_search.eval_samples,
                                 "min_diversity": params.gan_search.min_diversity})


def run_gan_search(params: Params, data: Prepared, classifier: dict, classifier_hash: str, *, state_dir: Path,
                   callbacks: list | None = None, remote: bool = False) -> SearchResult:
    """The GAN sweep on gan.dataset: minimise the FID in the feature space of the classifier trained on it."""
    g = params.gan
    sweep = gan_sweep(params, data, classifier_hash)
    settings = {"in_shape": tuple(int(d) for d in data.x_train.shape[1:]), "noise_dim": g.noise_dim,
                "batch_size": g.batch_size, "max_epochs": params.gan_search.max_epochs,
                "train_subset": params.gan_search.train_subset, "eval_samples": params.gan_search.eval_samples,
                "min_diversity": params.gan_search.min_diversity,
                "seed": params.seed, "classifier_kwargs": dict(classifier["model_kwargs"])}
    arrays = {"x_train": data.x_train, "y_train": data.y_train, "x_val": data.x_val, "y_val": data.y_val,
              "classifier": {k: v.cpu() for k, v in classifier["model"].items()}}
    result = run_sweep(sweep, arrays, settings, state_dir=state_dir, callbacks=callbacks, remote=remote)
    result.best["dataset"] = data.name
    return result


def run_sweep(sweep: Sweep, arrays: dict, settings: dict, *, state_dir: Path, callbacks: list | None = None,
              remote: bool = False) -> SearchResult:
    """Run, resume or re-read a sweep: Tune + Optuna TPE (journal storage) + ASHA on `sweep.metric`.

    The sweep's state lives under `budget.storage` (default: `state_dir`), named by its identity: a changed space,
    budget or data version is a new sweep, an interrupted one resumes, and a finished one is only read back.
    """
    sid, s = sweep.sweep_id, sweep.budget
    storage = s.storage or str(Path(state_dir).resolve())
    if not _is_uri(storage):
        storage = str(Path(storage).resolve())
    exp_path = f"{storage.rstrip('/')}/{sid}"
    # The Optuna journal sits beside Tune's experiment directory when that is a (shared) path. With a cloud URI it
    # is kept locally and copied up after every finished trial (JournalSync).
    local_journal_dir = Path(storage) if not _is_uri(storage) else Path(state_dir).resolve()
    journal = local_journal_dir / f"{sid}.optuna.journal"
    sync = JournalSync(journal, f"{storage.rstrip('/')}/{journal.name}") if _is_uri(storage) else None
    resources = trial_resources(s.resources, remote)
    settings = {**settings, "threads": max(1, int(resources["cpu"])), "journal": str(journal), "study": sid}
    trainable = tune.with_resources(tune.with_parameters(sweep.trainable, data=arrays, settings=settings), resources)
    callbacks = [*(callbacks or []), *([sync] if sync else [])]

    # Tune warns about trials that had not reported yet when a sweep stopped; they are resumed all the same.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if tune.Tuner.can_restore(exp_path):
        if sync:
            sync.download()
        print(f"resuming sweep {sid} from {exp_path}: finished trials are kept, unfinished ones continue from "
              f"their last checkpoint")
        # Callbacks and the searcher come back from the sweep's saved state (ours: JournalOptunaSearch).
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        journal.unlink(missing_ok=True)  # Tune never recorded this sweep: start its study afresh too
        local_journal_dir.mkdir(parents=True, exist_ok=True)
        tuner = tune.Tuner(
            trainable,
            param_space=tune_param_space(s.space),
            tune_config=tune.TuneConfig(
                metric=sweep.metric, mode=sweep.mode, num_samples=s.num_samples,
                max_concurrent_trials=s.max_concurrent_trials or None,
                search_alg=JournalOptunaSearch(journal=journal, study_name=sid, seed=sweep.seed,
                                               metric=sweep.metric, mode=sweep.mode),
                scheduler=ASHAScheduler(time_attr="epoch", max_t=s.max_epochs, grace_period=s.grace_period,
                                        reduction_factor=s.reduction_factor)),
            run_config=tune.RunConfig(
                name=sid, storage_path=storage, callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=s.max_failures),
                # Not one: after a hard kill the last experiment snapshot may point at an earlier checkpoint.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=3)),
        )
    # A bounded number of checkpoints per trial forces an experiment snapshot per report; that is intended.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    results = tuner.fit()
    progress = _journal_progress(journal, sid, sweep)
    finished = sum(t.state.is_finished() for t in optuna.load_study(
        study_name=sid, storage=JournalStorage(JournalFileBackend(str(journal)))).get_trials(deepcopy=False))
    if finished < s.num_samples or results.num_terminated + results.num_errors < len(results):
        # Tune stops gracefully on Ctrl-C and returns what it has; a partial sweep must not become the stage's output.
        raise SweepInterrupted(f"sweep {sid} stopped with {finished} of {s.num_samples} trials finished; its state "
                               f"is kept in {exp_path}: run `dvc repro` again to resume it")
    rows = _trial_rows(results, sweep, progress)
    key = f"best_{sweep.metric}"
    ok = [r for r in rows if r["status"] in ("completed", "pruned") and r[key] == r[key]]
    if not ok:
        raise GrutuneError(f"no trial of sweep {sid} succeeded; see the trial directories under {exp_path}")
    top = ok[0]
    for r in ok[1:]:
        top = r if sweep.better(r[key], top[key]) else top
    best = {"sweep_id": sid, "data_hash": sweep.data_hash, "trial_id": top["trial_id"], sweep.metric: top[key],
            "epochs": top["epochs"],
            "config": sweep.hp_model(**{k: top[k] for k in sweep.hp_model.model_fields}).model_dump()}
    counts = {st: sum(r["status"] == st for r in rows) for st in STATUSES}
    by_time = sorted((r for r in rows if r["_ended"] == r["_ended"]), key=lambda r: r["_ended"])
    t0 = min((r["_ended"] - r["_time_s"] for r in by_time), default=0.0)
    # The sweep's wall time: from its first trial's start to its last trial's end, across resumes.
    wall = by_time[-1]["_ended"] - t0 if by_time else 0.0
    summary = {key: top[key], "trials": len(rows), **counts,
               "epochs_run": sum(r["epochs"] for r in rows), "wall_time_s": round(wall, 1)}
    return SearchResult(sid, best, [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], summary,
                        _best_so_far(rows, sweep, "trial", lambda r: r["trial"]),
                        _best_so_far(by_time, sweep, "wall_time_s", lambda r: round(r["_ended"] - t0, 1)))


def _best_so_far(rows: list[dict], sweep: Sweep, x: str, value_of_x) -> list[dict]:
    """The best metric so far after each row (failed and errored trials bring no improvement)."""
    out, best, m = [], float("nan"), sweep.metric
    for r in rows:
        v = r[f"best_{m}"] if r["status"] in ("completed", "pruned") else float("nan")
        best = v if sweep.better(v, best) else best
        out.append({x: value_of_x(r), f"trial_{m}": "" if v != v else v, f"best_{m}": "" if best != best else best})
    return out


class JournalSync(tune.Callback):
    """Keeps a copy of the local Optuna journal at a cloud URI, so the search history outlives the head node."""

    def __init__(self, local: Path, uri: str):
        self.local, self.uri = local, uri

    def _fs(self):
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(self.uri)

    def download(self) -> None:
        import pyarrow.fs

        fs, path = self._fs()
        if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
            self.local.parent.mkdir(parents=True, exist_ok=True)
            pyarrow.fs.copy_files(path, str(self.local), source_filesystem=fs,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())

    def upload(self) -> None:
        import pyarrow.fs

        if self.local.exists():
            fs, path = self._fs()
            pyarrow.fs.copy_files(str(self.local), path, source_filesystem=pyarrow.fs.LocalFileSystem(),
                                  destination_filesystem=fs)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.upload()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.upload()

    def on_experiment_end(self, trials, **info):
        self.upload()
