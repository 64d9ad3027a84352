"""The sweep driver: runs, resumes, extends or re-reads a sweep with Ray Tune, grutune's Optuna TPE searcher and ASHA
early stopping. It knows nothing of classifiers or GANs: a `Sweep` says what to run (grutune.trials defines the two).

`run_sweep` in its steps: find the sweep's folder (`storage.place`), open it (bind it to this process, fetch and repair
its journal, say what is resumed or why a new sweep starts), run its Tune experiments until the study holds its trials
or its budget is spent, then read back one row per trial (`results`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from grutune.cluster import trial_resources, trial_slots
from grutune.errors import GrutuneError, StorageFull
from grutune.sweep.binding import SweepRun, bind, location
from grutune.sweep.budget import budget_allows_trial, spend_limit, spent, startup_count, time_allows_trial
from grutune.sweep.budget import trial_seconds as seconds_of
from grutune.sweep.definition import Sweep, code_changes
from grutune.sweep.full_storage import StorageGuard, full_seen, guarded, storage_errors, watch_storage
from grutune.sweep.journal import (
    created_all,
    created_trials,
    journal_progress,
    load_study,
    repair_journal,
    study_counts,
)
from grutune.sweep.results import SearchResult, summarise, trial_id, trial_rows
from grutune.sweep.searcher import GrutuneSearcher
from grutune.sweep.storage import (
    SEGMENT_PREFIX,
    STATE,
    JournalSync,
    SweepPlace,
    move,
    place,
    read_state,
    segments,
    write_state,
)
from grutune.sweep.top_k import TopKPlan, TopKScheduler, experiment_plan

__all__ = ["SweepInterrupted", "pending_trials", "run_sweep"]

log = logging.getLogger(__name__)


class SweepInterrupted(GrutuneError):
    """The sweep stopped before all its trials finished; its state is kept for a resume."""


@dataclass(frozen=True)
class _Run:
    """How this process runs a sweep: fixed before its first Tune experiment."""

    sweep: Sweep
    where: SweepPlace
    trainable: object  # Tune's trainable, with its data, settings and resources
    resources: dict[str, float]
    concurrency: int  # trials at once
    max_seconds: tuple[float, str] | None  # the spend budget as trial-seconds, and the setting that gives it
    callbacks: list
    reuse_actors: bool


def run_sweep(
    sweep: Sweep,
    arrays: dict,
    settings,
    *,
    state_dir: Path,
    callbacks: list | None = None,
    remote: bool = False,
) -> SearchResult:
    """Run, resume, extend or re-read a sweep: Tune + grutune's Optuna TPE searcher (journal storage) + ASHA on
    `sweep.metric`.

    The sweep's folder is `<params.storage>/<sweep id>` (default storage: `state_dir`), named by its identity (see
    grutune.sweep.definition): a changed space, budget, data version or trial code is a new sweep, an interrupted one
    resumes, a finished one asked for more trials goes on in a new Tune experiment of the same study, and a finished
    one is only read back. `settings` is the trial settings dataclass; its `threads`, `journal` and `study` are
    filled in here.
    """
    s = sweep.params
    where = place(sweep.sweep_id, s.storage, f"{sweep.key}.storage", state_dir)
    resources = trial_resources(s.resources, remote, sweep.key)
    settings = replace(
        settings, threads=max(1, int(resources["cpu"])), journal=str(where.journal), study=sweep.sweep_id
    )
    sync = JournalSync(sweep.sweep_id) if where.journal_uri else None
    run = _Run(
        sweep=sweep,
        where=where,
        trainable=tune.with_resources(
            tune.with_parameters(guarded(sweep.trainable, sweep.metric), data=arrays, settings=settings), resources
        ),
        resources=resources,
        # Tune keeps as many trials pending as this allows: enough to fill every slot the cluster has.
        concurrency=s.max_concurrent_trials or trial_slots(resources, s.num_samples, remote),
        max_seconds=spend_limit(s, sweep.key, resources),
        callbacks=[*(callbacks or []), *([sync] if sync else [])],
        # On this machine a trial process serves one trial after another: starting a process per trial cost about
        # 1.5 s a trial (benchmarks/tune_overhead.py). Not on a cluster, where nodes can be lost: Ray Tune 2.60 fails
        # a trial outright, whatever max_failures says, when the node of the process it was handed dies while the
        # process is being reset for it (its controller retries only RUNNING trials, and a trial being reset is
        # PENDING). Found by tests/test_cluster.py under load.
        reuse_actors=not remote,
    )
    _quiet_tune()
    with storage_errors(f"{sweep.key}.storage", where):
        names = _open(run, sync)
        all_results = _run_experiments(run, names)
    return _results(run, names, all_results)


def _quiet_tune() -> None:
    # Tune warns about trials that had not reported yet when a sweep stopped; they are resumed all the same.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # A bounded number of checkpoints per trial forces an experiment snapshot per report; that is intended.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _bind(
    run: _Run, segment: str, known: frozenset = frozenset(), trials_before: int = 0, plan: TopKPlan | None = None
) -> None:
    """Bind the sweep for its experiment `segment`; `plan`: its top_k screen (`experiment_plan`), None under ASHA."""
    s, where = run.sweep.params, run.where
    bind(
        run.sweep.sweep_id,
        SweepRun(
            journal=where.journal,
            target=s.num_samples if plan is None else trials_before + plan.n,
            max_concurrent=run.concurrency,
            segment=segment,
            journal_uri=where.journal_uri,
            origin=location(where.uri),
            known=known,
            max_trial_epochs=s.max_trial_epochs if plan is None else None,  # a top_k plan fits the budget
            min_trial_epochs=s.grace_period,
            max_trial_seconds=run.max_seconds[0] if run.max_seconds else None,
        ),
    )


def _open(run: _Run, sync: JournalSync | None) -> list[str]:
    """Bind the sweep to this process, bring its journal here and repair it, say what is resumed (or why a new
    sweep starts), record what it is; return its Tune experiments' names (a new sweep: its first)."""
    sweep, where, s = run.sweep, run.where, run.sweep.params
    sid = sweep.sweep_id
    _bind(run, "")
    if sync:
        sync.download()
    if (backup := repair_journal(where.journal)) is not None:
        log.warning(
            "repaired %s: its last record was cut (a kill or a full disk while it was written); the original is kept "
            "as %s",
            where.journal,
            backup.name,
        )
    last = read_state(where.local_dir)
    names = segments(where.uri)
    if names:
        trials, _ = study_counts(where.journal, sid)
        more = f", from {trials} to {s.num_samples} trials" if trials != s.num_samples else ""
        if last.get("max_concurrent") not in (None, run.concurrency):
            more += f", {run.concurrency} at a time (was {last['max_concurrent']})"
        log.info(
            "resuming sweep %s%s from %s: finished trials are kept, unfinished ones continue from their last "
            "checkpoint",
            sid,
            more,
            where.uri,
        )
    else:
        _say_why_new(sweep, where)
    write_state(
        where.local_dir,
        {
            "sweep_id": sid,
            "settings": sweep.settings_id,
            "code": sweep.code,
            "num_samples": s.num_samples,
            "max_concurrent": run.concurrency,
        },
    )
    return names or [f"{SEGMENT_PREFIX}1"]


def _say_why_new(sweep: Sweep, where: SweepPlace) -> None:
    """A new sweep whose settings match an earlier one's differs from it in its trial code: say so, in one line."""
    earlier = []
    for state_file in where.local_dir.parent.glob(f"*/{STATE}"):
        state = read_state(state_file.parent)
        if state.get("settings") == sweep.settings_id and state.get("sweep_id") != sweep.sweep_id:
            earlier.append((state_file.stat().st_mtime, state))
    if not earlier:
        return
    state = max(earlier, key=lambda e: e[0])[1]
    changed = code_changes(state.get("code") or {}, sweep.code)
    log.info(
        "the trial code changed since sweep %s (%s): starting sweep %s; %s is kept as it was",
        state["sweep_id"],
        ", ".join(changed) or "the code",
        sweep.sweep_id,
        state["sweep_id"],
    )


def _tuner(run: _Run, name: str, path: str, trials_before: int, plan: TopKPlan | None):
    """The Tune experiment `name` of the sweep: restored where Tune can, else new."""
    sweep, s = run.sweep, run.sweep.params
    # The trials this experiment creates at most (it may create fewer: the searcher ends a sweep whose budget is
    # spent); earlier experiments of the study created the rest.
    samples = max(1, s.num_samples - trials_before) if plan is None else plan.n
    if tune.Tuner.can_restore(path):
        # The searcher and callbacks come back from Tune's snapshot; `bind` gave them today's places and limits.
        try:
            _read_snapshot(path)
            return tune.Tuner.restore(path, trainable=run.trainable, resume_unfinished=True, resume_errored=False)
        except (EOFError, pickle.UnpicklingError, json.JSONDecodeError) as e:  # killed or full while Tune wrote it
            aside = f"{name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
            log.warning(
                "Tune experiment %s cannot be restored (%s: its state was cut off while it was written); moved "
                "aside as %s, and started again: the study keeps its trials",
                path,
                type(e).__name__,
                aside,
            )
            move(path, f"{run.where.uri}/{aside}")
    return tune.Tuner(
        run.trainable,
        param_space={k: v for k, v in s.space.items() if not isinstance(v, tuple)},  # fixed values
        tune_config=tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            reuse_actors=run.reuse_actors,
            num_samples=samples,
            search_alg=GrutuneSearcher(
                study_name=sweep.sweep_id,
                space=s.space,
                seed=sweep.seed,
                metric=sweep.metric,
                mode=sweep.mode,
                max_epochs=s.max_epochs,
                startup_trials=startup_count(s),
                costs=sweep.costs,
                columns=sweep.columns,
                origin=location(run.where.uri),
                multivariate=s.multivariate,
                constant_liar=s.constant_liar,
                points_to_evaluate=s.points_to_evaluate,
                tune_samples=samples,
                screen_epochs=None if plan is None else s.grace_period,
            ),
            scheduler=ASHAScheduler(
                time_attr="epoch",
                max_t=s.max_epochs,
                grace_period=s.grace_period,
                reduction_factor=s.reduction_factor,
            )
            if plan is None
            else TopKScheduler(plan, sweep.sweep_id, sweep.metric, sweep.mode),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=run.where.uri,
            callbacks=run.callbacks,
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            stop=StorageGuard(sweep.sweep_id),
            # Not one: after a hard kill the last experiment snapshot may point at an earlier checkpoint.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
        ),
    )


def _read_snapshot(path: str) -> None:
    """Read a Tune experiment's newest snapshot (`experiment_state-<time>.json`, Tune's documented experiment
    folder): JSONDecodeError where a full disk or a kill cut it, which Tune itself would only meet mid-`fit`."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(path)
    states = sorted(
        f.path
        for f in fs.get_file_info(pyarrow.fs.FileSelector(root))
        if Path(f.path).name.startswith("experiment_state-") and f.path.endswith(".json")
    )
    if states:
        with fs.open_input_stream(states[-1]) as f:
            json.loads(f.readall())


def _run_experiments(run: _Run, names: list[str]) -> list:
    """Run the sweep's newest Tune experiment (reading back the finished ones), and new ones while the study lacks
    trials that its budget pays for; return every experiment's results. `names` grows with each new experiment."""
    sweep, where, s = run.sweep, run.where, run.sweep.params
    sid = sweep.sweep_id
    all_results = []
    while True:
        name = names[-1]
        for earlier in names[:-1][len(all_results) :]:  # finished experiments: read back, not run
            all_results.append(tune.Tuner.restore(f"{where.uri}/{earlier}", trainable=run.trainable).get_results())
        known = frozenset(trial_id(r) for results in all_results for r in results)
        trials_before = sum(len(results) for results in all_results)
        plan = experiment_plan(s, trials_before, all_results)
        _bind(run, name, known, trials_before, plan)
        tuner = _tuner(run, name, f"{where.uri}/{name}", trials_before, plan)
        with pending_trials(run.concurrency), watch_storage(sid):
            results = tuner.fit()
            if (why := full_seen(sid)) is not None:  # Tune's last snapshot may be cut: the next run sees to it
                raise StorageFull(why)
        all_results.append(results)
        study = load_study(where.journal, sid)
        done = created_trials(study)
        trials, finished = len(done), sum(t.state.is_finished() for t in done)
        ran_all = created_all(study, name) or trials >= s.num_samples
        if results.num_terminated + results.num_errors < len(results) or not ran_all:
            # Tune stops gracefully on Ctrl-C and returns what it has; a partial sweep must not become the output.
            raise SweepInterrupted(
                f"sweep {sid} stopped with {finished} of {s.num_samples} trials finished; its "
                f"state is kept in {where.uri}: run `dvc repro` again to resume it"
            )
        if finished >= s.num_samples and trials >= s.num_samples:
            return all_results
        if s.scheduler == "top_k" and experiment_plan(s, trials, all_results).n == 0:
            if s.max_trial_epochs is not None:
                log.info("sweep %s: its budget of %d trial-epochs pays for no further screen", sid, s.max_trial_epochs)
            return all_results
        if finished == trials and not budget_allows_trial(done, s.max_trial_epochs, s.max_epochs, s.grace_period):
            log.info("sweep %s: its budget of %d trial-epochs pays for no further trial", sid, s.max_trial_epochs)
            return all_results
        max_seconds = run.max_seconds[0] if run.max_seconds else None
        if finished == trials and not time_allows_trial(done, max_seconds, s.max_epochs, s.grace_period):
            log.info(
                "sweep %s: its budget of %g %s pays for no further trial (%d trials spent %s)",
                sid,
                getattr(s.budget, run.max_seconds[1]),
                run.max_seconds[1],
                trials,
                spent(sum(seconds_of(t) for t in done), run.resources, s.price_per_hour),
            )
            return all_results
        if not len(results):  # an experiment that ran nothing would be followed by another forever
            raise GrutuneError(
                f"sweep {sid}: its study holds {trials} trials, {finished} finished, and Tune ran none "
                f"of the {s.num_samples} asked for; see {where.journal}"
            )
        # This experiment is complete (Tune cannot be given more trials for it): the study goes on in a new one.
        names.append(f"{SEGMENT_PREFIX}{len(names) + 1}")


def _results(run: _Run, names: list[str], all_results: list) -> SearchResult:
    """One row per trial of every experiment, with what the journal knows of it, summarised for the stage."""
    sweep, where = run.sweep, run.where
    configs: dict = {}
    for name in names:  # a trial that never reported has no config in its Result; the experiment's trials have
        configs.update(tune.ExperimentAnalysis(f"{where.uri}/{name}").get_all_configs())
    rows = trial_rows(
        [r for results in all_results for r in results],
        sweep,
        journal_progress(where.journal, sweep.sweep_id, sweep.better),
        configs,
        run.resources,
    )
    return summarise(sweep, rows, where.uri)


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
