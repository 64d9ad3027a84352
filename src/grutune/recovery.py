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
   when the journal holds its final result, re-reports it instead of training again.
4. Results tables read epochs and values from the journal too (`journal_progress`), since Tune's result files of
   such a trial are rewritten by the replay.
5. With cloud storage the journal is kept locally and copied up after every finished trial (`JournalSync`).

Private attributes this depends on (tested with ray 2.60 and optuna 5.0, the versions pyproject.toml pins):
- ray.tune.search.optuna.OptunaSearch: `_ot_study`, `_ot_trials` ({tune id: optuna Trial}), `_completed_trials`
  (a set of tune ids), `_study_name`, `_storage`, `_sampler`; its `suggest` asks `_ot_study` for a new trial unless
  `_ot_trials` already holds one for the id.
- optuna.trial.FrozenTrial `_trial_id`, to rebuild a live `optuna.trial.Trial` for a running trial.
tests/test_search.py's SIGKILL-and-resume test exercises every one of them.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.search.optuna import OptunaSearch

TUNE_ID = "tune_trial_id"  # the Optuna user attribute holding a trial's Tune trial id


def load_study(journal: Path | str, study_name: str | None, sampler=None) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=JournalStorage(JournalFileBackend(str(journal))),
                             sampler=sampler)


class JournalOptunaSearch(OptunaSearch):
    """OptunaSearch whose study lives in an Optuna journal file, and which restores from it (see the module doc)."""

    def __init__(self, *, journal: Path, study_name: str, seed: int, metric: str, mode: str):
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
            tid = t.user_attrs.get(TUNE_ID)
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
            self._ot_trials[trial_id].set_user_attr(TUNE_ID, trial_id)
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


def finished_result(journal: str | None, study: str | None, trial_id: str, metric: str) -> dict | None:
    """The final result the journal holds for Tune trial `trial_id`, if it finished before a crash that Tune's last
    snapshot missed (readable where the journal is: the driver's node, or every node with shared storage)."""
    if not journal or not Path(journal).exists():
        return None
    for t in load_study(journal, study).get_trials(deepcopy=False):
        if t.user_attrs.get(TUNE_ID) == trial_id and t.state.is_finished():
            failed = t.state != optuna.trial.TrialState.COMPLETE
            epochs = max([t.user_attrs.get("epochs", 0), *t.intermediate_values])
            value = t.value if t.value is not None else (list(t.intermediate_values.values()) or [0.0])[-1]
            return {"epoch": epochs, metric: float(value), **({"diverged": 1} if failed else {})}
    return None


def journal_progress(journal: Path, study_name: str, better) -> dict[str, tuple[int, float, int, bool]]:
    """{tune trial id: (epochs, best value, Optuna trial number, completed)} from the journal, which a hard kill
    cannot leave behind Tune's own result files. `better(a, b)` says whether value a beats b."""
    if not journal.exists():
        return {}
    out = {}
    for t in load_study(journal, study_name).get_trials(deepcopy=False):
        if TUNE_ID in t.user_attrs:
            values = [*t.intermediate_values.values(), *([t.value] if t.value is not None else [])]
            epochs = max([t.user_attrs.get("epochs", 0), *t.intermediate_values])
            best = math.nan
            for v in values:
                best = v if better(v, best) else best
            out[t.user_attrs[TUNE_ID]] = (epochs, best, t.number, t.state == optuna.trial.TrialState.COMPLETE)
    return out


def finished_count(journal: Path, study_name: str) -> int:
    """How many of the study's trials have finished (in any state)."""
    return sum(t.state.is_finished() for t in load_study(journal, study_name).get_trials(deepcopy=False))


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
