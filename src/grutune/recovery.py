"""The crash-recovery protocol: the Optuna journal is the sweep's source of truth, not Tune's snapshot.

The protocol:
1. The study lives in an Optuna journal file (`<sweep id>.optuna.journal`), appended to on every ask, report and tell;
   a hard kill cannot leave it behind. Each Optuna trial carries its Tune trial id as the user attribute `TUNE_ID`.
2. Tune restores its searcher from a pickle of its last experiment snapshot, which can be older than the journal
   (and a searcher passed anew on restore is silently dropped). So `JournalOptunaSearch.restore` reloads the study
   from the journal and re-attaches Tune's trial ids: finished trials stay finished, a trial asked for just before
   the kill ("orphan") is handed out again instead of asking Optuna for one more, and TPE is reseeded past what the
   journal holds so it does not draw again the configs it drew after the snapshot.
3. A trial that finished after the snapshot is restarted by Tune. It first asks the journal (`finished_result`) and,
   when the journal holds its final result, re-reports it instead of training again. A trial created *and* finished
   after the snapshot is unknown to the restored Tune, which creates a new trial in its place: that new trial is
   handed the finished one (its config, and the alias `ALIAS + new id` -> old id in the study's user attributes), and
   replays its result the same way. So the study never gets a trial more than `num_samples`.
4. Results tables read epochs and values from the journal too (`journal_progress`), since Tune's result files of
   such a trial are rewritten by the replay.
5. With cloud storage the journal is kept locally and copied up after every finished trial (`JournalSync`).
6. Adding trials: the number of trials is not part of a sweep's identity. A restored experiment is told the new
   number (`retarget`), so it creates only the missing trials, and TPE sees the whole study.
7. Resuming elsewhere: a restored experiment is also told today's concurrency (`retarget`, `resume_settings`), so a
   sweep resumed on a bigger cluster fills it, and a changed `max_concurrent_trials` takes effect.

Private attributes this depends on (tested with ray 2.60 and optuna 5.0, the versions pyproject.toml pins):
- ray.tune.search.optuna.OptunaSearch: `_ot_study`, `_ot_trials` ({tune id: optuna Trial}), `_completed_trials`
  (a set of tune ids), `_study_name`, `_storage`, `_sampler`; its `suggest` asks `_ot_study` for a new trial unless
  `_ot_trials` already holds one for the id.
- optuna.trial.FrozenTrial `_trial_id`, to rebuild a live `optuna.trial.Trial` for a running trial.
- Tune's search generator state file, `search_gen_state-*.json` (keys `counter`, `total_samples`, `finished`, and
  `name:ConcurrencyLimiter` -> {`max_concurrent`}).
- ray.tune.Tuner `_local_tuner` and its `_tune_config` (a dataclass), which `Tuner.fit` reads on a restored Tuner.
tests/test_search.py's SIGKILL-and-resume test exercises every one of them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils.util import unflatten_dict

TUNE_ID = "tune_trial_id"  # the Optuna user attribute holding a trial's Tune trial id
ALIAS = "tune_alias:"      # study user attribute ALIAS + <new Tune id> -> the Tune id of the finished trial it replays
LIMITER = "name:ConcurrencyLimiter"  # the concurrency limiter's entry in Tune's search generator state
STEP = "value@epoch"       # multi-objective studies: trial user attribute STEP + <epoch> -> that epoch's metric
COST = "cost:"             # trial user attribute COST + <name> -> a cost the trial reported (params, latency_ms, ...)


def intermediate(t: optuna.trial.FrozenTrial) -> dict[int, float]:
    """A trial's metric by epoch: Optuna's intermediate values, or, in a multi-objective study (where Optuna has
    none), the STEP user attributes."""
    if t.intermediate_values:
        return dict(t.intermediate_values)
    return {int(k[len(STEP):]): float(v) for k, v in t.user_attrs.items() if k.startswith(STEP)}


def costs(t: optuna.trial.FrozenTrial) -> dict[str, float]:
    """The costs a trial reported (empty for sweeps that report none)."""
    return {k[len(COST):]: v for k, v in t.user_attrs.items() if k.startswith(COST)}


def load_study(journal: Path | str, study_name: str | None, sampler=None) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=JournalStorage(JournalFileBackend(str(journal))),
                             sampler=sampler)


def tpe_sampler(seed: int, startup_trials: int) -> optuna.samplers.TPESampler:
    """TPE, random for its first `startup_trials`, with the constant liar: a running trial counts as a poor result,
    so trials suggested while others run do not pile onto one region (Optuna's default since 4.x; stated here
    because the sweep relies on it)."""
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, constant_liar=True)


class JournalOptunaSearch(OptunaSearch):
    """OptunaSearch whose study lives in an Optuna journal file, and which restores from it (see the module doc).

    It also tells Optuna what Tune did, as Optuna's own pruners would leave the study: every epoch's metric is an
    intermediate value at step = epoch (the last epoch too, which Tune hands only to `on_trial_complete`); a trial
    ASHA stopped before `max_epochs` is PRUNED (Optuna then takes its last intermediate value as its value); a
    diverged, collapsed or errored trial is FAIL; a trial that ran all `max_epochs` is COMPLETE with its final
    epoch's value, which is what the objective is at the full budget (trials.csv also gives its best epoch).

    With `costs` (minimised objectives after the metric, e.g. params, latency_ms) the study is multi-objective: a
    COMPLETE trial holds every objective, and multi-objective TPE proposes from them. Optuna keeps no intermediate
    values in such a study, so each epoch's metric is a STEP user attribute instead; PRUNED and FAIL stay as above.
    """

    def __init__(self, *, journal: Path, study_name: str, seed: int, metric: str, mode: str, max_epochs: int,
                 startup_trials: int, costs: tuple[str, ...] = ()):
        metrics, modes = (metric, mode) if not costs else ([metric, *costs], [mode, *["min"] * len(costs)])
        super().__init__(metric=metrics, mode=modes, study_name=study_name,
                         sampler=tpe_sampler(seed, startup_trials),
                         storage=JournalStorage(JournalFileBackend(str(journal))))
        self._primary, self._costs = metric, tuple(costs)
        self._seed_base, self._startup_trials = seed, startup_trials
        self._max_epochs = max_epochs
        self._orphans: list = []
        self._finished_orphans: list = []  # finished in the journal, created after Tune's snapshot
        self._steps: dict[int, set[int]] = {}  # Optuna trial number -> steps already reported

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        # Tune hands over its own metric (ASHA's: val_accuracy alone); the study keeps the objectives given here.
        return super().set_search_properties(None, None, config, **spec)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # The pickled sampler's random state is from the snapshot: reseed it past everything the journal holds,
        # or it would draw again the configs it drew between the snapshot and the crash.
        n = len(optuna.load_study(study_name=self._study_name, storage=self._storage).trials)
        self._sampler = tpe_sampler(self._seed_base + n, self._startup_trials)
        study = optuna.load_study(study_name=self._study_name, storage=self._storage, sampler=self._sampler)
        # Trials Tune's snapshot knows: running ones, and finished ones (a searcher restored before keeps only the
        # running ones in `_ot_trials`; the finished ones are in `_completed_trials`).
        known = set(self._ot_trials) | set(self._completed_trials)
        self._ot_study, self._ot_trials, self._orphans, self._finished_orphans = study, {}, [], []
        aliased = {v for k, v in study.user_attrs.items() if k.startswith(ALIAS)}
        for t in study.get_trials(deepcopy=False):
            tid = t.user_attrs.get(TUNE_ID)
            self._steps[t.number] = set(intermediate(t))
            if t.state.is_finished():
                self._completed_trials.add(tid)
                if tid not in known and tid not in aliased:
                    self._finished_orphans.append(t)
            elif tid in known:
                self._ot_trials[tid] = optuna.trial.Trial(study, t._trial_id)
            else:
                self._orphans.append(optuna.trial.Trial(study, t._trial_id))

    def suggest(self, trial_id: str):
        if trial_id not in self._ot_trials and not self._orphans and self._finished_orphans:
            done = self._finished_orphans.pop(0)  # Tune re-creates a trial it forgot: give it the finished one
            self._ot_study.set_user_attr(ALIAS + trial_id, done.user_attrs[TUNE_ID])
            self._completed_trials.add(trial_id)
            return unflatten_dict(done.params)
        if trial_id not in self._ot_trials and self._orphans:
            self._ot_trials[trial_id] = self._orphans.pop(0)
        config = super().suggest(trial_id)
        if config is not None:
            self._ot_trials[trial_id].set_user_attr(TUNE_ID, trial_id)
        return config

    def _report(self, trial_id: str, result: dict) -> None:
        """The epoch's metric as an intermediate value at step = epoch (once per step: a resumed trial may re-report),
        and, with its first epoch, the costs the trial measured."""
        ot_trial = self._ot_trials[trial_id]
        step, steps = int(result["epoch"]), self._steps.setdefault(ot_trial.number, set())
        if step not in steps:
            if not steps:
                for key in ("params", "latency_ms", "latency_batch_ms"):
                    if key in result:
                        ot_trial.set_user_attr(COST + key, float(result[key]))
            if self._costs:
                ot_trial.set_user_attr(f"{STEP}{step}", float(result[self._primary]))
            else:
                ot_trial.report(float(result[self._primary]), step)
            steps.add(step)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials:
            return  # a trial replayed after a crash re-reports what the journal already holds
        if not result.get("diverged"):
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return  # finished before a crash, then replayed by Tune from a stale snapshot
        ot_trial = self._ot_trials[trial_id]
        result = result or {}
        if "epoch" in result:  # the final result reaches the searcher here, not in on_trial_result
            ot_trial.set_user_attr("epochs", int(result["epoch"]))
        objectives = (self._primary, *self._costs)
        if error or result.get("diverged") or any(k not in result for k in objectives):
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        else:
            self._report(trial_id, result)
            if int(result["epoch"]) < self._max_epochs:  # stopped early by ASHA
                self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            else:
                values = [float(result[k]) for k in objectives]
                self._ot_study.tell(ot_trial, values if self._costs else values[0],
                                    state=optuna.trial.TrialState.COMPLETE)
        self._completed_trials.add(trial_id)


def finished_result(journal: str | None, study: str | None, trial_id: str, metric: str) -> dict | None:
    """The final result the journal holds for Tune trial `trial_id`, if it finished before a crash that Tune's last
    snapshot missed (readable where the journal is: the driver's node, or every node with shared storage)."""
    if not journal or not Path(journal).exists():
        return None
    loaded = load_study(journal, study)
    trial_id = loaded.user_attrs.get(ALIAS + trial_id, trial_id)
    for t in loaded.get_trials(deepcopy=False):
        if t.user_attrs.get(TUNE_ID) == trial_id and t.state.is_finished():
            failed = t.state == optuna.trial.TrialState.FAIL
            steps = intermediate(t)
            epochs = max([t.user_attrs.get("epochs", 0), *steps])
            value = t.values[0] if t.values else (list(steps.values()) or [0.0])[-1]
            return {"epoch": epochs, metric: float(value), **costs(t), **({"diverged": 1} if failed else {})}
    return None


def journal_progress(journal: Path, study_name: str, better) -> dict[str, tuple[int, float, int, bool, dict]]:
    """{tune trial id: (epochs, best value, Optuna trial number, succeeded, costs)} from the journal, which a hard
    kill cannot leave behind Tune's own result files. `better(a, b)` says whether value a beats b."""
    if not journal.exists():
        return {}
    out = {}
    study = load_study(journal, study_name)
    new_id = {old: k[len(ALIAS):] for k, old in study.user_attrs.items() if k.startswith(ALIAS)}
    for t in study.get_trials(deepcopy=False):
        if TUNE_ID in t.user_attrs:
            steps = intermediate(t)
            values = [*steps.values(), *(t.values[:1] if t.values else [])]
            epochs = max([t.user_attrs.get("epochs", 0), *steps])
            best = math.nan
            for v in values:
                best = v if better(v, best) else best
            ok = t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            out[new_id.get(t.user_attrs[TUNE_ID], t.user_attrs[TUNE_ID])] = (epochs, best, t.number, ok, costs(t))
    return out


def finished_count(journal: Path, study_name: str) -> int:
    """How many of the study's trials have finished (in any state)."""
    return sum(t.state.is_finished() for t in load_study(journal, study_name).get_trials(deepcopy=False))


def retarget(exp_path: str, num_samples: int, max_concurrent: int) -> tuple[int, int | None]:
    """Make a Tune experiment that is about to be restored create `num_samples` trials in all, `max_concurrent` at
    a time; return how many trials, and how many at a time, it was set to before (None: no limit was saved). This
    is how a finished sweep is extended (or a smaller target is accepted), and how a sweep resumed on another
    cluster fills that cluster's slots, not those of the one it started on.

    Tune restores both from its search generator's state, whatever the restored Tuner is given: the newest
    `search_gen_state-*.json` in the experiment directory, a cloudpickle of {"counter", "total_samples",
    "finished", "name:ConcurrencyLimiter": {"max_concurrent", ...}, ...}. That file is rewritten here (in place,
    where the experiment is: a path or a cloud URI). `resume_settings` does the same for the saved TuneConfig.
    """
    import pyarrow.fs
    import ray.cloudpickle as cloudpickle

    fs, root = pyarrow.fs.FileSystem.from_uri(exp_path)
    files = fs.get_file_info(pyarrow.fs.FileSelector(root))
    newest = max((f.path for f in files if Path(f.path).name.startswith("search_gen_state-")), default=None)
    if newest is None:
        return num_samples, None
    with fs.open_input_stream(newest) as f:
        state = cloudpickle.loads(f.read())
    before = state["total_samples"]
    limiter = state.get(LIMITER)
    was = limiter["max_concurrent"] if limiter else None
    if before != num_samples or (limiter and was != max_concurrent):
        state.update(total_samples=num_samples, finished=state["counter"] >= num_samples)
        if limiter:
            limiter["max_concurrent"] = max_concurrent
        tmp = f"{Path(newest).parent}/.retarget-{Path(newest).name}"
        with fs.open_output_stream(tmp) as f:
            f.write(cloudpickle.dumps(state))
        fs.move(tmp, newest)
    return before, was


def resume_settings(tuner: tune.Tuner, max_concurrent: int, reuse_actors: bool) -> None:
    """Give a restored Tuner today's concurrency and actor reuse. Tune rebuilds its concurrency limit (and the
    number of trials it keeps pending) from the TuneConfig it pickled when the sweep started (`tuner.pkl`), so a
    sweep started on a laptop and resumed on a cluster would otherwise keep the laptop's 2 slots."""
    local = tuner._local_tuner  # None only under Ray Client (ray://), which grutune does not use
    if local is not None:
        local._tune_config = dataclasses.replace(local._tune_config, max_concurrent_trials=max_concurrent,
                                                 reuse_actors=reuse_actors)


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
