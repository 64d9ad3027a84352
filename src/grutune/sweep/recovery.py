"""How a sweep recovers from a kill: the searcher's state file, and what the journal says about the trials that Tune's
snapshot knows as running. `grutune.sweep.searcher.GrutuneSearcher` applies it; this module holds the rules.

A sweep is a folder, `<storage>/<sweep id>/`, holding:
- `optuna.journal`: the Optuna study (journal storage), appended to on every ask, report and tell; a hard kill
  cannot leave it behind. Each trial carries its Tune trial id (user attribute `TUNE_ID`) and the Tune experiment
  that ran it (`SEGMENT`). With cloud storage it is kept locally and copied up every time Tune saves the
  experiment's state, before that state is copied up, so the copy is never older than Tune's snapshot
  (`grutune.sweep.storage.JournalSync`).
- `tune-1/`, `tune-2/`, ...: Tune experiments ("segments"). A sweep runs in its newest segment; a finished sweep
  that is asked for more trials goes on in a new segment, with the same study (Tune cannot add trials to an
  experiment it has finished without rewriting its private state, so grutune does not ask it to).
- `sweep.json`: what the sweep is (its settings' id and its trial code's digests) and what the last run was asked
  for (trials, trials at once), for the messages only (`grutune.sweep.storage`).
Nothing saved names an absolute path: a project moved or copied elsewhere finds its sweep under its own storage.

The protocol:
1. Where the sweep is and how it runs today (the journal's path, the number of trials, the trials at once) are not
   state: the driver binds them for this process (`grutune.sweep.binding`) before Tune runs, and the searcher, new
   or restored by Tune, reads them from there. A sweep copied to another path therefore writes to its own journal,
   and a sweep resumed on a bigger cluster fills it.
2. `GrutuneSearcher.save` writes a small JSON file of its own (`save_state`; `FORMAT`, `VERSION`: which Tune
   trials it handed out and which finished), which Tune keeps with its experiment snapshot. On restore the journal
   is read again (`recover`), since Tune's snapshot can be older than it: finished trials stay finished; a trial
   asked for just before a kill ("orphan") is handed out again instead of asking Optuna for one more; TPE is seeded
   past what the journal holds.
3. A trial that finished after the snapshot is restarted by Tune. It first asks the journal (`finished_result`)
   and, when the journal holds its final result, re-reports it instead of training again. A trial created *and*
   finished after the snapshot is unknown to the restored Tune, which creates a new trial in its place: that new
   trial is handed the finished one (its config, and the alias `ALIAS + new id` -> old id in the study's user
   attributes), and replays its result the same way. So the study never gets a trial more than asked for.
4. Results tables read epochs and values from the journal too (`grutune.sweep.journal.journal_progress`), since
   Tune's result files of such a trial are rewritten by the replay.
5. A journal whose last record was cut (a kill or a full disk during a write) is repaired to its last whole record
   before anything opens it, and the original is kept beside it (`grutune.sweep.journal.repair_journal`).
6. `Study.ask` writes a trial, then its hyperparameters one record at a time: a kill or a full disk in between leaves
   an orphan with part of its config. Before it is handed out again, its missing hyperparameters are drawn by the
   study's sampler (a point of `points_to_evaluate`: the point's values) and written with
   `BaseStorage.set_trial_param`, so no trial reaches Tune without its whole config and TPE is told nothing false.
7. A full storage is a kill, not a verdict: a trial whose checkpoint cannot be written reports so (`STORAGE_FULL`,
   from the driver's wrapper around the trainable) and the driver's `StorageGuard` stops Tune on that result, before
   the scheduler or this searcher sees it; a journal write that fails stops it the same way. No trial is told `FAIL`
   for want of room; the next run resumes the stopped trials from their last whole checkpoint.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from grutune.errors import GrutuneError
from grutune.io import write_text
from grutune.space import optuna_distributions
from grutune.sweep.journal import TUNE_ID, WAITING, costs, intermediate

__all__ = ["FORMAT", "VERSION", "Recovered", "complete_orphan", "load_state", "recover", "retell", "save_state"]

FORMAT, VERSION = "grutune-searcher", 1  # the searcher's state file

log = logging.getLogger(__name__)


def save_state(path: str | Path, study_name: str, live: dict[str, int], done: set[str]) -> None:
    """The searcher's state, as JSON: which Tune trials it handed out (and their Optuna numbers) and which finished.
    Everything else is in the journal."""
    state = {"format": FORMAT, "version": VERSION, "study": study_name, "live": live, "done": sorted(done)}
    write_text(path, json.dumps(state, indent=1) + "\n")


def load_state(path: str | Path) -> tuple[dict[str, int], set[str]]:
    """(live, done) from a state file `save_state` wrote; a clear error for anything else."""
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise GrutuneError(f"{path}: not a grutune searcher state ({e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise GrutuneError(
            f"{path}: not a grutune searcher state (format {state.get('format')!r})"
            if isinstance(state, dict)
            else f"{path}: not a grutune searcher state"
        )
    if state.get("version") != VERSION:
        raise GrutuneError(
            f"{path}: searcher state version {state.get('version')}, but this grutune "
            f"reads version {VERSION}: resume the sweep with the grutune that started it"
        )
    return {str(k): int(v) for k, v in state["live"].items()}, set(state["done"])


@dataclass
class Recovered:
    """What the journal says of a restored experiment's trials, against the Tune ids it handed out (`live`) and saw
    finish (`done`) as of Tune's snapshot."""

    finished: list[str] = field(default_factory=list)  # live in the snapshot, finished in the journal since
    untold: list[optuna.trial.FrozenTrial] = field(default_factory=list)  # Tune finished them; the tell was cut
    orphans: list[int] = field(default_factory=list)  # asked for before a kill, never handed to Tune
    finished_orphans: list[optuna.trial.FrozenTrial] = field(default_factory=list)  # created and finished since


def recover(
    trials: list[optuna.trial.FrozenTrial],
    *,
    live: dict[str, int],
    done: set[str],
    aliased: set[str],
    known: frozenset,
) -> Recovered:
    """Sort the study's `trials` by what happened to them after Tune's snapshot. `aliased`: Tune ids already handed
    to a re-created trial; `known`: the Tune ids of the sweep's earlier experiments."""
    r = Recovered()
    for t in trials:
        tid = t.user_attrs.get(TUNE_ID)
        if t.state.is_finished():
            if tid in live:  # finished after Tune's snapshot: Tune re-runs it, and it replays its result
                r.finished.append(tid)
            elif tid is not None and tid not in done and tid not in aliased and tid not in known:
                r.finished_orphans.append(t)
        elif tid in done:  # Tune finished it, but the journal lost the tell (a cut journal): tell it again
            r.untold.append(t)
        elif tid not in live and t.state == optuna.trial.TrialState.RUNNING:  # not enqueued ones (WAITING)
            r.orphans.append(t.number)
    return r


def retell(study: optuna.Study, t: optuna.trial.FrozenTrial, *, max_epochs: int, cost_names: tuple[str, ...]) -> None:
    """Finish a trial from what the journal holds of it: its epochs' values and costs. FAIL if it never reported,
    PRUNED before `max_epochs`, else COMPLETE."""
    steps = intermediate(t)
    epochs = max([t.user_attrs.get("epochs", 0), *steps])
    values = [steps[max(steps)], *(costs(t).get(c) for c in cost_names)] if steps else [None]
    if None in values:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    elif epochs < max_epochs:
        study.tell(t.number, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(t.number, values if cost_names else values[0], state=optuna.trial.TrialState.COMPLETE)


def complete_orphan(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    number: int,
    *,
    space: dict,
    points_to_evaluate: list[dict],
) -> None:
    """Give an orphan the hyperparameters its ask did not write (a kill or a full disk in the middle of
    `Study.ask`, which writes them one record at a time), so no trial reaches Tune without its whole config:
    a point of `points_to_evaluate` gets the point's values, the rest are drawn by the study's sampler as `ask`
    would have drawn them. Nothing is told to TPE: the trial then runs as any other."""
    trials = study.get_trials(deepcopy=False)
    t = trials[number]
    distributions = optuna_distributions(space)
    missing = [k for k in distributions if k not in t.params]
    if not missing:
        return
    index = sum(1 for u in trials[:number] if u.state != WAITING)  # its place among the created trials
    point = points_to_evaluate[index] if index < len(points_to_evaluate) else {}
    tid = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)
    for name in missing:
        d = distributions[name]
        value = point[name] if name in point else study.sampler.sample_independent(study, t, name, d)
        storage.set_trial_param(tid, name, d.to_internal_repr(value), d)
    log.info(
        "sweep %s: trial %d was cut off while it was being created; its missing hyperparameters (%s) are drawn "
        "now and it runs as any other",
        study.study_name,
        number,
        ", ".join(missing),
    )
