"""The sweep driver: Ray Tune runs Optuna's TPE (journal-backed, see recovery.py) with ASHA early stopping.

It knows nothing of classifiers or GANs: a `Sweep` names the metric, the trial model and the trainable, and the
two sweeps are defined in search.py. Runs, resumes or re-reads a sweep by its identity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import ray
import yaml
from pydantic import BaseModel
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from grutune.config import SweepParams
from grutune.errors import GrutuneError
from grutune.io import workspace_root
from grutune.recovery import (JournalOptunaSearch, JournalSync, finished_count, journal_progress, resume_settings,
                              retarget)
from grutune.sweep_results import SearchResult, summarise, trial_rows
from grutune.trials import TrialSettings


def tune_param_space(space: dict[str, Any]) -> dict[str, Any]:
    """Turn the validated params.yaml space into Tune distributions (OptunaSearch converts them for TPE)."""
    kinds = {"choice": lambda a: tune.choice(a),
             "uniform": lambda a: tune.uniform(*a),
             "loguniform": lambda a: tune.loguniform(*a),
             "int": lambda a: tune.randint(a[0], a[1] + 1)}  # randint's high is exclusive
    return {key: kinds[dim[0]](dim[1]) if isinstance(dim, tuple) else dim for key, dim in space.items()}


def identity(name: str, budget: SweepParams, seed: int, content_hash: str, extra=None) -> str:
    """A sweep's identity: its search space, its per-trial budget and the data version; a change in any of them is a
    new sweep. The number of trials is not part of it: raising it adds trials to the same study."""
    key = {"dataset": name, "data": content_hash, "seed": seed, "space": budget.space,
           "budget": [budget.max_epochs, budget.grace_period, budget.reduction_factor, budget.train_subset,
                      budget.startup_trials]}
    if len(objectives := getattr(budget, "objectives", [])) > 1:  # single-objective sweeps keep their old ids
        key["objectives"] = objectives
    if extra:
        key["extra"] = extra
    return f"{name}-" + hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Sweep:
    """What a sweep is: the classifier's and the GAN's differ only in these."""

    name: str                   # dataset name, or e.g. "gan-mnist"
    budget: SweepParams
    hp_model: type[BaseModel]   # one trial's hyperparameters
    metric: str
    mode: str                   # "max" or "min"
    trainable: Callable[..., None]  # a function of (config, *, data, settings)
    seed: int
    data_hash: str
    extra_identity: Any = None
    costs: tuple[str, ...] = ()  # objectives minimised besides `metric` (a multi-objective sweep); Pareto front
    columns: tuple[str, ...] = ()  # what trials report besides the metric, kept in trials.csv (e.g. the costs)

    @property
    def sweep_id(self) -> str:
        return identity(self.name, self.budget, self.seed, self.data_hash, self.extra_identity)

    def better(self, a: float, b: float) -> bool:
        """Whether value a beats b (NaN never does)."""
        return not math.isnan(a) and (math.isnan(b) or (a > b if self.mode == "max" else a < b))


class SweepInterrupted(GrutuneError):
    """The sweep stopped before all its trials finished; its state is kept for a resume."""


def init_ray() -> bool:
    """Join a running Ray cluster (RAY_ADDRESS, or one started with `ray start` on this node), else start one.

    Returns True when joining an existing cluster. Token authentication stays on (Ray's default); only Ray's notice
    that it is on by default is quieted. A Ray started here runs without its dashboard. Trial processes' own output
    stays in Ray's logs: Tune reports each trial's progress and errors (with the traceback saved in the trial's
    directory), and Ray's worker-shutdown noise stays out of the run's output.
    """
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if ray.is_initialized():
        return True
    # Ray's own lookup: RAY_ADDRESS, else a cluster started with `ray start` on this machine, else a new local one.
    ctx = ray.init(include_dashboard=False if not os.environ.get("RAY_ADDRESS") else None, log_to_driver=False)
    # A session's name ends with the id of the process that started it: this one, if no cluster was running.
    return not ctx.address_info["session_dir"].endswith(f"_{os.getpid()}")


def trial_resources(resources, remote: bool) -> dict[str, float]:
    """Per-trial resources from params, changed only where trials could never start.

    On a Ray started here, they are capped to what this machine has. On a cluster they are taken as asked (the
    autoscaler adds the nodes they need), except that GPUs are dropped where the cluster has none and its
    autoscaler (if any) can add none: a fixed CPU cluster, such as a few `ray start` nodes. Ray's `memory` resource
    is asked for only where `resources.memory` is set.
    """
    want = {"cpu": resources.cpu, "gpu": resources.gpu}
    if resources.memory:
        want["memory"] = float(resources.memory)
    have = ray.cluster_resources()
    config = autoscaling_config() if remote else None
    gpus = have.get("GPU", 0) or any(t.get("resources", {}).get("GPU", 0)
                                     for t in (config or {}).get("available_node_types", {}).values())
    got = {"cpu": want["cpu"] if remote else min(want["cpu"], have.get("CPU", 1)),
           "gpu": want["gpu"] if gpus else 0.0}
    if "memory" in want:
        got["memory"] = want["memory"] if remote else min(want["memory"], have.get("memory", 0))
    if got != want:
        where = "this cluster's" if remote else "this machine's"
        had = {k: have.get(k.upper() if k != "memory" else k, 0) for k in want}
        print(f"resources per trial {_show(want)} exceed {where} {_show(had)}: each trial gets {_show(got)}")
    return got


def _show(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"'{k}': " + (f"{v / 2**20:.0f}MiB" if k == "memory" else f"{v:g}")
                           for k, v in resources.items()) + "}"


AUTOSCALING_CONFIG_ENV = "GRUTUNE_AUTOSCALING_CONFIG"  # the autoscaler's cluster config, where it is not the default
AUTOSCALING_CONFIG = "~/ray_bootstrap_config.yaml"      # where `ray up` puts it on the head node


def _fits(node: dict[str, float], resources: dict[str, float]) -> int:
    """How many trials of `resources` one node of these resources holds. A node type that declares no `memory` (an
    autoscaler's, whose memory comes from its instance type) is not limited by it."""
    n = int(node.get("CPU", 0) // resources["cpu"]) if resources["cpu"] else 10**6
    if resources.get("memory") and "memory" in node:
        n = min(n, int(node["memory"] // resources["memory"]))
    return min(n, int(node.get("GPU", 0) // resources["gpu"])) if resources["gpu"] else n


def autoscaler_slots(config: dict, resources: dict[str, float]) -> int:
    """Trial slots of an autoscaling cluster at its largest: the head plus every worker type at its `max_workers`,
    within the cluster's own `max_workers`, the roomiest types first."""
    types = config.get("available_node_types", {})
    head = config.get("head_node_type")
    slots = _fits(types.get(head, {}).get("resources", {}), resources) if head in types else 0
    budget = config.get("max_workers", 10**6)
    for per_node, count in sorted(((_fits(t.get("resources", {}), resources), t.get("max_workers", 0))
                                   for name, t in types.items() if name != head), reverse=True):
        count = min(count, budget)
        slots, budget = slots + per_node * count, budget - count
    return slots


def autoscaling_config() -> dict | None:
    """The autoscaler's cluster config, where this node has one (a `ray up` head, or GRUTUNE_AUTOSCALING_CONFIG)."""
    path = Path(os.environ.get(AUTOSCALING_CONFIG_ENV) or AUTOSCALING_CONFIG).expanduser()
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def trial_slots(resources: dict[str, float], num_samples: int, remote: bool) -> int:
    """How many trials of these resources the Ray cluster holds at once (on an autoscaling cluster, `remote`: once
    it has grown to its largest), at most `num_samples` and at least 1."""
    # Node by node: a trial's bundle lives on one node, so CPUs (or memory) left over on two nodes do not add up.
    slots = sum(_fits(node["Resources"], resources) for node in ray.nodes() if node["Alive"])
    if remote and (config := autoscaling_config()) is not None:
        slots = max(slots, autoscaler_slots(config, resources))
    return max(1, min(slots, num_samples))


def _is_uri(path: str) -> bool:
    return "://" in path


def run_sweep(sweep: Sweep, arrays: dict, settings: TrialSettings, *, state_dir: Path,
              callbacks: list | None = None, remote: bool = False) -> SearchResult:
    """Run, resume or re-read a sweep: Tune + Optuna TPE (journal storage) + ASHA on `sweep.metric`.

    The sweep's state lives under `budget.storage` (default: `state_dir`), named by its identity: a changed space,
    budget or data version is a new sweep, an interrupted one resumes, and a finished one is only read back.
    """
    sid, s = sweep.sweep_id, sweep.budget
    storage = s.storage or str(Path(state_dir).resolve())
    if not _is_uri(storage):  # a relative path is the DVC workspace's, also in a queued experiment's temp copy
        storage = str((workspace_root() / storage).resolve())
    exp_path = f"{storage.rstrip('/')}/{sid}"
    # The Optuna journal sits beside Tune's experiment directory when that is a (shared) path. With a cloud URI it
    # is kept locally and copied up after every finished trial (JournalSync).
    local_journal_dir = Path(storage) if not _is_uri(storage) else Path(state_dir).resolve()
    journal = local_journal_dir / f"{sid}.optuna.journal"
    sync = JournalSync(journal, f"{storage.rstrip('/')}/{journal.name}") if _is_uri(storage) else None
    resources = trial_resources(s.resources, remote)
    settings = replace(settings, threads=max(1, int(resources["cpu"])), journal=str(journal), study=sid)
    trainable = tune.with_resources(tune.with_parameters(sweep.trainable, data=arrays, settings=settings), resources)
    callbacks = [*(callbacks or []), *([sync] if sync else [])]

    # Tune warns about trials that had not reported yet when a sweep stopped; they are resumed all the same.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # Tune keeps as many trials pending as this allows: enough to fill every slot the cluster has.
    concurrency = s.max_concurrent_trials or trial_slots(resources, s.num_samples, remote)
    # On this machine a trial process serves one trial after another: starting a process per trial cost about 1.5 s
    # a trial (benchmarks/tune_overhead.py). Each trial seeds torch and sets its threads itself. Not on a cluster,
    # where nodes can be lost: Ray Tune 2.60 fails a trial outright, whatever max_failures says, when the node of
    # the process it was handed dies while the process is being reset for it (TuneController._process_trial_failure
    # retries only RUNNING trials, and a trial being reset is PENDING). Found by tests/test_cluster.py under load.
    reuse_actors = not remote
    if tune.Tuner.can_restore(exp_path):
        if sync:
            sync.download()
        before, was = retarget(exp_path, s.num_samples, concurrency)
        more = f", from {before} to {s.num_samples} trials" if before != s.num_samples else ""
        if was is not None and was != concurrency:
            more += f", {concurrency} at a time (was {was})"
        print(f"resuming sweep {sid}{more} from {exp_path}: finished trials are kept, unfinished ones continue from "
              f"their last checkpoint")
        # Callbacks and the searcher come back from the sweep's saved state (ours: JournalOptunaSearch).
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=False)
        resume_settings(tuner, concurrency, reuse_actors)
    else:
        journal.unlink(missing_ok=True)  # Tune never recorded this sweep: start its study afresh too
        local_journal_dir.mkdir(parents=True, exist_ok=True)
        tuner = tune.Tuner(
            trainable,
            param_space=tune_param_space(s.space),
            tune_config=tune.TuneConfig(
                metric=sweep.metric, mode=sweep.mode, num_samples=s.num_samples,
                reuse_actors=reuse_actors, max_concurrent_trials=concurrency,
                search_alg=JournalOptunaSearch(journal=journal, study_name=sid, seed=sweep.seed,
                                               metric=sweep.metric, mode=sweep.mode, max_epochs=s.max_epochs,
                                               startup_trials=s.startup_trials, costs=sweep.costs),
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
    finished = finished_count(journal, sid)
    if finished < s.num_samples or results.num_terminated + results.num_errors < len(results):
        # Tune stops gracefully on Ctrl-C and returns what it has; a partial sweep must not become the stage's output.
        raise SweepInterrupted(f"sweep {sid} stopped with {finished} of {s.num_samples} trials finished; its state "
                               f"is kept in {exp_path}: run `dvc repro` again to resume it")
    # A trial that never reported has no config in its Result; the experiment's trials all have theirs.
    configs = tune.ExperimentAnalysis(exp_path).get_all_configs()
    rows = trial_rows(results, sweep, journal_progress(journal, sid, sweep.better), configs)
    return summarise(sweep, rows, exp_path)
