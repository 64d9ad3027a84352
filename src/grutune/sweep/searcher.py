"""grutune's Tune `Searcher`: Optuna's TPE on a journal-backed study, and the crash-recovery protocol around it. The
journal is the sweep's source of truth; the searcher keeps it on Optuna's public ask-and-tell API and Tune's public
`Searcher` API alone.

How it recovers from a kill, and what a sweep's folder holds: `grutune.sweep.recovery`.

Public APIs used: `ray.tune.search.Searcher` (suggest, on_trial_result, on_trial_complete, save, restore,
set_search_properties, FINISHED); `optuna.Study.ask`/`tell` (by trial number), `optuna.create_study`,
`BaseSampler.sample_independent`, and the public methods of `optuna.storages.BaseStorage` for writing to a trial by
its number (intermediate values, user attributes, parameters). tests/test_private_api.py fails when `src/` reaches
into a private attribute.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray.tune.search import Searcher

from grutune.objectives import COST_COLUMNS
from grutune.space import optuna_distributions
from grutune.sweep.binding import SweepRun, bound
from grutune.sweep.budget import budget_allows_trial, time_allows_trial
from grutune.sweep.journal import ALIAS, COST, DIVERGED, DONE, SECONDS, SEGMENT, STEP, TUNE_ID, WAITING, intermediate
from grutune.sweep.recovery import FORMAT, VERSION, complete_orphan, load_state, recover, retell, save_state

__all__ = ["FORMAT", "STORAGE_FULL", "VERSION", "GrutuneSearcher", "tpe_sampler"]

STORAGE_FULL = "storage_full"  # a trial's result key: a write of the trial failed for want of room (the why)


def tpe_sampler(
    seed: int, startup_trials: int, multivariate: bool = False, constant_liar: bool = True
) -> optuna.samplers.TPESampler:
    """TPE, random for its first `startup_trials`. `multivariate`: one joint density over all hyperparameters rather
    than one per hyperparameter (Optuna's multivariate TPE), single- and multi-objective alike. `constant_liar`: a
    running trial counts as a poor result, so trials suggested while others run stay away from it (Optuna's advice
    for parallel workers; benchmarks/search_replay.py measured no difference either way at 2, 8 or 32 in flight).
    Stated in full because the sweep relies on each."""
    with warnings.catch_warnings():  # Optuna marks both options experimental; the benchmarks measure them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup_trials, constant_liar=constant_liar, multivariate=multivariate
        )


class GrutuneSearcher(Searcher):
    """Optuna TPE over a journal-backed study, as a Tune `Searcher` written on Optuna's ask-and-tell API.

    It tells Optuna what Tune did, as Optuna's own pruners would leave the study: every epoch's metric is an
    intermediate value at step = epoch (the last epoch too, which Tune hands only to `on_trial_complete`); a trial
    ASHA stopped before `max_epochs` is PRUNED (Optuna then takes its last intermediate value as its value); a
    diverged or collapsed trial is PRUNED at the worst value (the `worst` it reports) at the epoch it diverged,
    marked `DIVERGED`, so that TPE learns the region is bad; an errored trial is FAIL; a trial that ran all
    `max_epochs` is COMPLETE with its final epoch's value, which is what the objective is at the full budget
    (trials.csv also gives its best epoch).

    With `costs` (minimised objectives after the metric, e.g. params, latency_ms) the study is multi-objective: a
    COMPLETE trial holds every objective, and multi-objective TPE proposes from them. Optuna keeps no intermediate
    values in such a study, so each epoch's metric is a STEP user attribute instead; PRUNED and FAIL stay as above.

    With `SweepRun.max_trial_epochs` or `max_trial_seconds`, it creates a trial only where the budget pays for it: see
    `budget_allows_trial` and `time_allows_trial` (each trial's training seconds are its SECONDS user attribute).
    A study's first trials are `points_to_evaluate`, in order (each enqueued with Optuna's `enqueue_trial` just
    before it is asked for, so a resumed study goes on with the next point), the hyperparameters a point leaves out
    drawn as usual.

    It creates trials until the study holds `SweepRun.target`, at most `SweepRun.max_concurrent` at once, then
    says FINISHED. Pickled (Tune keeps it with the experiment), it holds no path and no study: those come from
    `bind` when it is first used.
    """

    def __init__(
        self,
        *,
        study_name: str,
        space: dict[str, Any],
        seed: int,
        metric: str,
        mode: str,
        max_epochs: int,
        startup_trials: int,
        costs: tuple[str, ...] = (),
        columns: tuple[str, ...] = (),
        origin: str = "",
        multivariate: bool = False,
        constant_liar: bool = True,
        points_to_evaluate: list[dict[str, Any]] = (),
        tune_samples: int | None = None,
        screen_epochs: int | None = None,
    ):
        super().__init__(metric=metric, mode=mode)
        self.multivariate, self.constant_liar = multivariate, constant_liar
        self.points_to_evaluate = [dict(p) for p in points_to_evaluate]
        self.origin = origin  # `location` of the sweep where this experiment started
        # The Tune trials this experiment creates at most (its num_samples; None: until the searcher says FINISHED).
        # Tune asks for none after the last, so handing it out is when the experiment has created all its trials.
        self.tune_samples = tune_samples
        # With search.scheduler top_k, a trial that has trained its screen epochs waits there (paused, holding no
        # slot) until the screen is decided: only trials still in their screen count against the trials at once.
        self.screen_epochs = screen_epochs
        self.study_name, self.space, self.seed = study_name, dict(space), seed
        self.primary, self.mode_, self.costs, self.max_epochs = metric, mode, tuple(costs), max_epochs
        self.startup_trials = startup_trials
        self.columns = tuple(columns)  # what a trial measures besides the metric, kept with its first epoch
        self.live: dict[str, int] = {}  # Tune id -> Optuna trial number: handed out, not finished
        self.done: set[str] = set()  # Tune ids whose result the study holds (or replays)
        self._reset()

    _TRANSIENT = ("_study", "_run", "_storage", "_study_id", "_orphans", "_finished_orphans", "_steps", "_moved")

    def _reset(self) -> None:
        self._moved = False  # restored where the experiment did not start: it creates no trials
        self._study: optuna.Study | None = None
        self._run: SweepRun | None = None
        self._orphans: list[int] = []  # asked for before a kill, never handed to Tune: handed out next
        self._finished_orphans: list[optuna.trial.FrozenTrial] = []  # finished after Tune's snapshot
        self._steps: dict[int, set[int]] = {}  # Optuna trial number -> steps already reported

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __setstate__(self, state: dict) -> None:
        state.setdefault("constant_liar", True)  # pickled by grutune before the option: it ran with the liar
        state.setdefault("points_to_evaluate", [])
        state.setdefault("columns", COST_COLUMNS)  # pickled before the option: it kept the classifier's costs
        state.setdefault("tune_samples", None)  # pickled before the option: its experiment ran until FINISHED
        state.setdefault("screen_epochs", None)  # pickled before the option: ASHA's sweep
        self.__dict__.update(state)
        self._reset()

    # ----------------------------------------------------------------------- the study

    def _open(self) -> optuna.Study:
        if self._study is not None:
            return self._study
        run = bound(self.study_name)
        storage = JournalStorage(JournalFileBackend(str(run.journal)))
        directions = ["maximize" if self.mode_ == "max" else "minimize", *["minimize"] * len(self.costs)]
        # Seeded past what the journal holds, so a restored sampler does not draw again what it drew before.
        n = (
            len(storage.get_all_trials(storage.get_study_id_from_name(self.study_name), deepcopy=False))
            if self.study_name in {s.study_name for s in storage.get_all_studies()}
            else 0
        )
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in Journal" line per run
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=self.study_name,
                load_if_exists=True,
                sampler=tpe_sampler(self.seed + n, self.startup_trials, self.multivariate, self.constant_liar),
                directions=directions,
            )
        finally:
            optuna.logging.set_verbosity(verbosity)
        self._study, self._run, self._storage = study, run, storage
        self._study_id = storage.get_study_id_from_name(self.study_name)
        aliased = {v for k, v in study.user_attrs.items() if k.startswith(ALIAS)}
        trials = study.get_trials(deepcopy=False)
        self._steps = {t.number: set(intermediate(t)) for t in trials}
        r = recover(trials, live=self.live, done=self.done, aliased=aliased, known=run.known)
        for tid in r.finished:
            del self.live[tid]
            self.done.add(tid)
        for t in r.untold:
            self._retell(study, t)
        self._orphans, self._finished_orphans = r.orphans, r.finished_orphans
        return study

    def _retell(self, study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        retell(study, t, max_epochs=self.max_epochs, cost_names=self.costs)

    def _trial_id(self, number: int) -> int:
        return self._storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    # ----------------------------------------------------------------------- Tune's Searcher API

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        # Tune hands over its own metric (ASHA's: val_accuracy alone); the study keeps the objectives given here.
        return True

    def suggest(self, trial_id: str):
        study = self._open()
        run = self._run
        if self._moved:
            return self._finish()  # its restored trials run on; the sweep's next experiment creates the rest
        if self._finished_orphans and not self._orphans:
            finished = self._finished_orphans.pop(0)  # Tune re-creates a trial it forgot: give it the finished one
            study.set_user_attr(ALIAS + trial_id, finished.user_attrs[TUNE_ID])
            self.done.add(trial_id)
            return self._handed_out(dict(finished.params))
        if self._running() >= run.max_concurrent:
            return None
        every = [] if self._orphans else study.get_trials(deepcopy=False)  # one read of the study per suggestion
        if self._orphans:
            number = self._orphans.pop(0)
            complete_orphan(study, self._storage, number, space=self.space, points_to_evaluate=self.points_to_evaluate)
        elif len(created := [t for t in every if t.state != WAITING]) >= run.target:
            return self._finish()
        elif not budget_allows_trial(
            created, run.max_trial_epochs, self.max_epochs, run.min_trial_epochs
        ) or not time_allows_trial(created, run.max_trial_seconds, self.max_epochs, run.min_trial_epochs):
            # A running trial that ASHA stops early frees budget: wait for it; with none running, the sweep is done.
            return None if any(t.state == optuna.trial.TrialState.RUNNING for t in created) else self._finish()
        else:
            waiting = len(every) > len(created)  # a point enqueued before a kill, not yet asked for
            if not waiting and len(created) < len(self.points_to_evaluate):  # a known-good point first
                study.enqueue_trial(self.points_to_evaluate[len(created)])
            number = study.ask(optuna_distributions(self.space)).number  # Optuna hands out an enqueued trial first
        tid = self._trial_id(number)
        self._storage.set_trial_user_attr(tid, TUNE_ID, trial_id)
        self._storage.set_trial_user_attr(tid, SEGMENT, run.segment)
        self.live[trial_id] = number
        return self._handed_out(dict(self._storage.get_trial(tid).params))

    def _running(self) -> int:
        """Trials handed out and not finished, less those waiting at their screen (`screen_epochs`)."""
        if self.screen_epochs is None:
            return len(self.live)
        return sum(max(self._steps.get(n, ()), default=0) < self.screen_epochs for n in self.live.values())

    def _handed_out(self, config: dict) -> dict:
        """`config`, for a new Tune trial. With the experiment's last trial (`tune_samples`: Tune asks for no more,
        so `suggest` will not say FINISHED), `DONE` is written as `_finish` writes it."""
        if self.tune_samples is not None and len(self.live) + len(self.done) >= self.tune_samples:
            self._study.set_user_attr(DONE + self._run.segment, True)
        return config

    def _finish(self):
        """FINISHED, also written in the study (`DONE` + the experiment's name), so the driver tells an experiment
        that ended because it had created its trials from one that was interrupted."""
        self._study.set_user_attr(DONE + self._run.segment, True)
        return Searcher.FINISHED

    def _report(self, trial_id: str, result: dict) -> None:
        """The epoch's metric as an intermediate value at step = epoch (once per step: a resumed trial may re-report),
        and, with its first epoch, what the trial measured besides it (`columns`)."""
        number = self.live[trial_id]
        tid = self._trial_id(number)
        step, steps = int(result["epoch"]), self._steps.setdefault(number, set())
        if step not in steps:
            if "time_total_s" in result:  # Tune's measure of the trial's training time so far
                self._storage.set_trial_user_attr(tid, SECONDS, float(result["time_total_s"]))
            if not steps:
                for key in self.columns:
                    if key in result:
                        self._storage.set_trial_user_attr(tid, COST + key, float(result[key]))
            if self.costs:
                self._storage.set_trial_user_attr(tid, f"{STEP}{step}", float(result[self.primary]))
            else:
                self._storage.set_trial_intermediate_value(tid, step, float(result[self.primary]))
            steps.add(step)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._open()
        if trial_id in self.done or trial_id not in self.live:
            return  # a trial replayed after a crash re-reports what the journal already holds
        if STORAGE_FULL in result:  # no epoch's value: the driver's StorageGuard stops the sweep on it
            return
        if not result.get("diverged"):
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        study = self._open()
        if trial_id in self.done or trial_id not in self.live:
            return  # finished before a crash, then replayed by Tune from a stale snapshot
        number = self.live[trial_id]
        if not result and not error:  # Tune stopped it while it was paused or pending: the journal has its epochs
            self._retell(study, study.get_trials(deepcopy=False)[number])
            del self.live[trial_id]
            self.done.add(trial_id)
            return
        result = result or {}
        if "epoch" in result:  # the final result reaches the searcher here, not in on_trial_result
            self._storage.set_trial_user_attr(self._trial_id(number), "epochs", int(result["epoch"]))
        objectives = (self.primary, *self.costs)
        if result.get("diverged") and not error and self.primary in result:
            # A diverged (or collapsed) trial reached TPE as the worst value at the epoch it diverged, so TPE
            # learns where the learning rate is too high; FAIL would hide it from TPE.
            self._storage.set_trial_user_attr(self._trial_id(number), DIVERGED, True)
            self._report(trial_id, {**result, self.primary: float(result[self.primary])})
            study.tell(number, state=optuna.trial.TrialState.PRUNED)
        elif error or result.get("diverged") or any(k not in result for k in objectives):
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            self._report(trial_id, result)
            if int(result["epoch"]) < self.max_epochs:  # stopped early by ASHA
                study.tell(number, state=optuna.trial.TrialState.PRUNED)
            else:
                values = [float(result[k]) for k in objectives]
                study.tell(number, values if self.costs else values[0], state=optuna.trial.TrialState.COMPLETE)
        del self.live[trial_id]
        self.done.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        save_state(checkpoint_path, self.study_name, self.live, self.done)

    def restore(self, checkpoint_path: str) -> None:
        self.live, self.done = load_state(checkpoint_path)
        self._reset()
        self._open()
        # Reconciled with the journal now, also for an experiment that has nothing left to run.
        self._moved = self.origin != self._run.origin
