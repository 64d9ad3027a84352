"""The sweep driver: Ray Tune runs Optuna's TPE (journal-backed, see recovery.py) with ASHA early stopping.

It knows nothing of classifiers or GANs: a `Sweep` names the metric, the trial model and the trainable, and the
two sweeps are defined in search.py. Runs, resumes or re-reads a sweep by its identity.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from grutune.cluster import show_resources, trial_resources, trial_slots
from grutune.config import SweepParams
from grutune.errors import GrutuneError
from grutune.io import is_uri, not_a_directory, workspace_root, write_json
from grutune.recovery import (
    JOURNAL,
    GrutuneSearcher,
    JournalSync,
    SweepRun,
    bind,
    budget_allows_trial,
    created_all,
    created_trials,
    journal_progress,
    load_study,
    location,
    repair_journal,
    study_counts,
    time_allows_trial,
    trial_seconds,
)
from grutune.sweep_results import SearchResult, summarise, trial_id, trial_rows
from grutune.trials import TrialSettings

__all__ = [
    "SEGMENT_PREFIX",
    "Sweep",
    "SweepInterrupted",
    "identity",
    "pending_trials",
    "run_sweep",
    "segments",
    "tune_param_space",
]

log = logging.getLogger(__name__)


def tune_param_space(space: dict[str, Any]) -> dict[str, Any]:
    """Turn the validated params.yaml space into Tune distributions (OptunaSearch converts them for TPE)."""
    kinds = {
        "choice": lambda a: tune.choice(a),
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "int": lambda a: tune.randint(a[0], a[1] + 1),
    }  # randint's high is exclusive
    return {key: kinds[dim[0]](dim[1]) if isinstance(dim, tuple) else dim for key, dim in space.items()}


def identity(name: str, budget: SweepParams, seed: int, content_hash: str, extra=None) -> str:
    """A sweep's identity: its search space, its per-trial budget and the data version; a change in any of them is a
    new sweep. The number of trials is not part of it: raising it adds trials to the same study."""
    key = {
        "dataset": name,
        "data": content_hash,
        "seed": seed,
        "space": budget.space,
        "budget": [
            budget.max_epochs,
            budget.grace_period,
            budget.reduction_factor,
            budget.train_subset,
            budget.startup_trials,
        ],
    }
    if len(objectives := getattr(budget, "objectives", [])) > 1:  # single-objective sweeps keep their old ids
        key["objectives"] = objectives
    if extra:
        key["extra"] = extra
    return f"{name}-" + hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Sweep:
    """What a sweep is: the classifier's and the GAN's differ only in these."""

    name: str  # dataset name, or e.g. "gan-mnist"
    key: str  # its section of params.yaml: "search" or "gan_search"
    budget: SweepParams
    hp_model: type[BaseModel]  # one trial's hyperparameters
    metric: str
    mode: str  # "max" or "min"
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


def spend_limit(sweep: Sweep, resources: dict[str, float]) -> tuple[float, str] | None:
    """The sweep's `budget` as trial-seconds of trials holding `resources`, and the setting that gives it; where a
    budget is set in a resource the trials do not hold here (gpu_hours without GPUs), it says so."""
    s = sweep.budget
    if s.budget.gpu_hours is not None and not resources.get("gpu"):  # a trial always holds CPUs: cpu_hours binds
        log.warning(
            "%s.budget.gpu_hours does not bound this sweep: its trials hold no GPU here (resources per trial %s)",
            sweep.key,
            show_resources(resources),
        )
    return s.budget.trial_seconds(resources, s.price_per_hour)


def _spent(seconds: float, resources: dict[str, float], prices) -> str:
    """Trial-seconds as a user reads a sweep's spend: trial-hours, GPU-hours where trials hold GPUs, dollars where
    there are prices."""
    out = [f"{seconds / 3600:.3g} trial-hours"]
    if resources.get("gpu"):
        out.append(f"{seconds * resources['gpu'] / 3600:.3g} GPU-hours")
    if prices.set:
        out.append(f"${seconds * prices.per_second(resources):.2f}")
    return ", ".join(out)


SEGMENT_PREFIX = "tune-"  # a sweep's Tune experiments: tune-1, tune-2, ... (see recovery.py)


def segments(sweep_uri: str) -> list[str]:
    """The names of a sweep's Tune experiments, oldest first."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(sweep_uri)
    if fs.get_file_info(root).type == pyarrow.fs.FileType.NotFound:
        return []
    names = [
        Path(f.path).name
        for f in fs.get_file_info(pyarrow.fs.FileSelector(root))
        if f.type == pyarrow.fs.FileType.Directory
    ]
    found = [n for n in names if n.startswith(SEGMENT_PREFIX) and n[len(SEGMENT_PREFIX) :].isdigit()]
    return sorted(found, key=lambda n: int(n[len(SEGMENT_PREFIX) :]))


@contextlib.contextmanager
def pending_trials(n: int):
    """Tune keeps up to `n` trials pending (TUNE_MAX_PENDING_TRIALS_PG, Tune's documented setting), so an
    autoscaler sees the demand of every free slot at once. A value the user set is kept."""
    key = "TUNE_MAX_PENDING_TRIALS_PG"
    old = os.environ.get(key)
    if old is None:
        os.environ[key] = str(n)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)


def _move(src: str, dst: str) -> None:
    import pyarrow.fs

    fs, src_path = pyarrow.fs.FileSystem.from_uri(src)
    fs.move(src_path, pyarrow.fs.FileSystem.from_uri(dst)[1])


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_sweep(
    sweep: Sweep,
    arrays: dict,
    settings: TrialSettings,
    *,
    state_dir: Path,
    callbacks: list | None = None,
    remote: bool = False,
) -> SearchResult:
    """Run, resume, extend or re-read a sweep: Tune + grutune's Optuna TPE searcher (journal storage) + ASHA on
    `sweep.metric`.

    The sweep's folder is `<budget.storage>/<sweep id>` (default storage: `state_dir`), named by its identity: a
    changed space, budget or data version is a new sweep, an interrupted one resumes, a finished one asked for
    more trials goes on in a new Tune experiment of the same study, and a finished one is only read back.
    """
    sid, s = sweep.sweep_id, sweep.budget
    key = f"{sweep.key}.storage"
    storage = s.storage or str(Path(state_dir).resolve())
    if not is_uri(storage):  # a relative path is the DVC workspace's, also in a queued experiment's temp copy
        storage = str((workspace_root() / storage).resolve())
    if not is_uri(storage) and (file := not_a_directory(storage)) is not None:  # state_dir; params are checked
        raise GrutuneError(f"{key}: {storage} cannot hold sweeps: {file} is a file, not a directory")
    sweep_uri = f"{storage.rstrip('/')}/{sid}"
    if not is_uri(storage) and (
        Path(f"{sweep_uri}.optuna.journal").exists() or any(Path(sweep_uri).glob("experiment_state-*.json"))
    ):
        raise GrutuneError(
            f"sweep {sid} in {storage} was saved by an earlier grutune, whose state rested on Ray's and "
            f"Optuna's private internals; this version cannot resume it. Finish it with the earlier "
            f"grutune, or move {sweep_uri} and {sweep_uri}.optuna.journal away to start it again"
        )
    # The Optuna journal is in the sweep's folder when that is a (shared) path. With a cloud URI it is kept locally
    # and copied up after every finished trial (JournalSync).
    local_dir = Path(sweep_uri) if not is_uri(storage) else Path(state_dir).resolve() / sid
    journal = local_dir / JOURNAL
    journal_uri = f"{sweep_uri}/{JOURNAL}" if is_uri(storage) else None
    try:
        local_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GrutuneError(f"{key}: cannot create the sweep's folder {local_dir}: {e.strerror}") from None
    resources = trial_resources(s.resources, remote, sweep.key)
    max_seconds = spend_limit(sweep, resources)
    settings = replace(settings, threads=max(1, int(resources["cpu"])), journal=str(journal), study=sid)
    trainable = tune.with_resources(tune.with_parameters(sweep.trainable, data=arrays, settings=settings), resources)
    sync = JournalSync(sid) if journal_uri else None
    callbacks = [*(callbacks or []), *([sync] if sync else [])]
    # Tune keeps as many trials pending as this allows: enough to fill every slot the cluster has.
    concurrency = s.max_concurrent_trials or trial_slots(resources, s.num_samples, remote)
    # On this machine a trial process serves one trial after another: starting a process per trial cost about 1.5 s
    # a trial (benchmarks/tune_overhead.py). Each trial seeds torch and sets its threads itself. Not on a cluster,
    # where nodes can be lost: Ray Tune 2.60 fails a trial outright, whatever max_failures says, when the node of
    # the process it was handed dies while the process is being reset for it (its controller's trial-failure handler
    # retries only RUNNING trials, and a trial being reset is PENDING). Found by tests/test_cluster.py under load.
    reuse_actors = not remote
    # Tune warns about trials that had not reported yet when a sweep stopped; they are resumed all the same.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # A bounded number of checkpoints per trial forces an experiment snapshot per report; that is intended.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    bind(
        sid,
        SweepRun(
            journal=journal, target=s.num_samples, max_concurrent=concurrency, segment="", journal_uri=journal_uri
        ),
    )
    if sync:
        sync.download()
    if (backup := repair_journal(journal)) is not None:
        log.warning(
            "repaired %s: its last record was cut (a kill or a full disk while it was written); the original is kept "
            "as %s",
            journal,
            backup.name,
        )
    last = _read_json(local_dir / "sweep.json")
    names = segments(sweep_uri)
    if names:
        trials, _ = study_counts(journal, sid)
        more = f", from {trials} to {s.num_samples} trials" if trials != s.num_samples else ""
        if last.get("max_concurrent") not in (None, concurrency):
            more += f", {concurrency} at a time (was {last['max_concurrent']})"
        log.info(
            "resuming sweep %s%s from %s: finished trials are kept, unfinished ones continue from their last "
            "checkpoint",
            sid,
            more,
            sweep_uri,
        )
    write_json(
        local_dir / "sweep.json",
        {
            "format": "grutune-sweep",
            "version": 1,
            "sweep_id": sid,
            "num_samples": s.num_samples,
            "max_concurrent": concurrency,
        },
    )
    names = names or [f"{SEGMENT_PREFIX}1"]
    all_results = []
    while True:
        name = names[-1]
        path = f"{sweep_uri}/{name}"
        for earlier in names[:-1][len(all_results) :]:  # finished experiments: read back, not run
            all_results.append(tune.Tuner.restore(f"{sweep_uri}/{earlier}", trainable=trainable).get_results())
        known = frozenset(trial_id(r) for results in all_results for r in results)
        bind(
            sid,
            SweepRun(
                journal=journal,
                target=s.num_samples,
                max_concurrent=concurrency,
                segment=name,
                journal_uri=journal_uri,
                origin=location(sweep_uri),
                known=known,
                max_trial_epochs=s.max_trial_epochs,
                min_trial_epochs=s.grace_period,
                max_trial_seconds=max_seconds[0] if max_seconds else None,
            ),
        )
        tuner = None
        if tune.Tuner.can_restore(path):
            # The searcher and callbacks come back from Tune's snapshot; `bind` gave them today's places and limits.
            try:
                tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
            except (EOFError, pickle.UnpicklingError) as e:  # killed while Tune wrote its first state
                aside = f"{name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
                log.warning(
                    "Tune experiment %s cannot be restored (%s: its state was cut off while it was written); moved "
                    "aside as %s, and started again: the study keeps its trials",
                    path,
                    type(e).__name__,
                    aside,
                )
                _move(f"{sweep_uri}/{name}", f"{sweep_uri}/{aside}")
        if tuner is None:
            tuner = tune.Tuner(
                trainable,
                param_space={k: v for k, v in s.space.items() if not isinstance(v, tuple)},  # fixed values
                tune_config=tune.TuneConfig(
                    metric=sweep.metric,
                    mode=sweep.mode,
                    reuse_actors=reuse_actors,
                    num_samples=-1,  # the searcher says when the study is complete (bound, not saved)
                    search_alg=GrutuneSearcher(
                        study_name=sid,
                        space=s.space,
                        seed=sweep.seed,
                        metric=sweep.metric,
                        mode=sweep.mode,
                        max_epochs=s.max_epochs,
                        startup_trials=s.startup_count,
                        costs=sweep.costs,
                        origin=location(sweep_uri),
                        multivariate=s.multivariate,
                        constant_liar=s.constant_liar,
                        points_to_evaluate=s.points_to_evaluate,
                    ),
                    scheduler=ASHAScheduler(
                        time_attr="epoch",
                        max_t=s.max_epochs,
                        grace_period=s.grace_period,
                        reduction_factor=s.reduction_factor,
                    ),
                ),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=sweep_uri,
                    callbacks=callbacks,
                    failure_config=tune.FailureConfig(max_failures=s.max_failures),
                    # Not one: after a hard kill the last experiment snapshot may point at an earlier checkpoint.
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
                ),
            )
        with pending_trials(concurrency):
            results = tuner.fit()
        all_results.append(results)
        study = load_study(journal, sid)
        done = created_trials(study)
        trials, finished = len(done), sum(t.state.is_finished() for t in done)
        if results.num_terminated + results.num_errors < len(results) or not created_all(study, name):
            # Tune stops gracefully on Ctrl-C and returns what it has; a partial sweep must not become the output.
            raise SweepInterrupted(
                f"sweep {sid} stopped with {finished} of {s.num_samples} trials finished; its "
                f"state is kept in {sweep_uri}: run `dvc repro` again to resume it"
            )
        if finished >= s.num_samples and trials >= s.num_samples:
            break
        if finished == trials and not budget_allows_trial(done, s.max_trial_epochs, s.max_epochs, s.grace_period):
            log.info("sweep %s: its budget of %d trial-epochs pays for no further trial", sid, s.max_trial_epochs)
            break
        if finished == trials and not time_allows_trial(
            done, max_seconds[0] if max_seconds else None, s.max_epochs, s.grace_period
        ):
            spent = sum(trial_seconds(t) for t in done)
            unit = max_seconds[1]
            log.info(
                "sweep %s: its budget of %g %s pays for no further trial (%d trials spent %s)",
                sid,
                getattr(s.budget, unit),
                unit,
                trials,
                _spent(spent, resources, s.price_per_hour),
            )
            break
        if not len(results):  # an experiment that ran nothing would be followed by another forever
            raise GrutuneError(
                f"sweep {sid}: its study holds {trials} trials, {finished} finished, and Tune ran none "
                f"of the {s.num_samples} asked for; see {journal}"
            )
        # This experiment is complete (Tune cannot be given more trials for it): the study goes on in a new one.
        names.append(f"{SEGMENT_PREFIX}{len(names) + 1}")
    configs: dict = {}
    for name in names:  # a trial that never reported has no config in its Result; the experiment's trials have
        configs.update(tune.ExperimentAnalysis(f"{sweep_uri}/{name}").get_all_configs())
    rows = trial_rows(
        [r for results in all_results for r in results],
        sweep,
        journal_progress(journal, sid, sweep.better),
        configs,
        resources,
    )
    return summarise(sweep, rows, sweep_uri)
