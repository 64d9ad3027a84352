"""A sweep's Optuna journal: its source of truth (the protocol is in `grutune.sweep.recovery`). What the journal
holds of each trial, how it is repaired after a cut write, how it is read, and how it is kept in cloud storage.

Each trial carries its Tune trial id (user attribute `TUNE_ID`) and the Tune experiment that ran it (`SEGMENT`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from grutune.errors import GrutuneError

__all__ = [
    "ALIAS",
    "COST",
    "DIVERGED",
    "DONE",
    "JOURNAL",
    "SECONDS",
    "SEGMENT",
    "STEP",
    "TUNE_ID",
    "WAITING",
    "JournalTrial",
    "costs",
    "created_all",
    "created_trials",
    "epochs_run",
    "finished_result",
    "intermediate",
    "journal_progress",
    "load_study",
    "repair_journal",
    "study_counts",
]

TUNE_ID = "tune_trial_id"  # the Optuna user attribute holding a trial's Tune trial id
SEGMENT = "tune_experiment"  # the Optuna user attribute naming the Tune experiment (segment) that ran the trial
ALIAS = "tune_alias:"  # study user attribute ALIAS + <new Tune id> -> the Tune id of the finished trial it replays
STEP = "value@epoch"  # multi-objective studies: trial user attribute STEP + <epoch> -> that epoch's metric
SECONDS = "seconds"  # trial user attribute -> the training seconds it has run (Tune's time_total_s)
COST = "cost:"  # trial user attribute COST + <name> -> a cost the trial reported (params, latency_ms, ...)
JOURNAL = "optuna.journal"  # the study, in the sweep's folder
DONE = "created_all:"  # study user attribute DONE + <Tune experiment>: that experiment created all its trials
DIVERGED = "diverged"  # trial user attribute: it diverged (NaN loss) or collapsed; PRUNED at the worst value


def intermediate(t: optuna.trial.FrozenTrial) -> dict[int, float]:
    """A trial's metric by epoch: Optuna's intermediate values, or, in a multi-objective study (where Optuna has
    none), the STEP user attributes."""
    if t.intermediate_values:
        return dict(t.intermediate_values)
    return {int(k[len(STEP) :]): float(v) for k, v in t.user_attrs.items() if k.startswith(STEP)}


def costs(t: optuna.trial.FrozenTrial) -> dict[str, float]:
    """The costs a trial reported (empty for sweeps that report none)."""
    return {k[len(COST) :]: v for k, v in t.user_attrs.items() if k.startswith(COST)}


def load_study(journal: Path | str, study_name: str | None, sampler=None) -> optuna.Study:
    return optuna.load_study(
        study_name=study_name, storage=JournalStorage(JournalFileBackend(str(journal))), sampler=sampler
    )


def epochs_run(t: optuna.trial.FrozenTrial) -> int:
    """The epochs a trial has run: its last reported step, or the epochs its final result names."""
    return max([t.user_attrs.get("epochs", 0), *intermediate(t)])


def repair_journal(path: Path) -> Path | None:
    """Cut a journal back to its last whole record when its end was cut mid-record, keeping the original beside
    it; return the backup's path (None: nothing to repair). Optuna would otherwise append the next record to the
    half line, losing it and breaking every later replay. A damaged record before the last is not guessed at."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    lines = data.split(b"\n")  # the part after the last newline is b"" for a whole file
    for i, line in enumerate(lines[:-1]):
        try:
            json.loads(line)
        except ValueError:
            if i < len(lines) - 2:
                raise GrutuneError(
                    f"{path}: record {i + 1} of {len(lines) - 1} is damaged, so the sweep's history "
                    f"cannot be read; restore the file from a backup, or delete the sweep's folder "
                    f"{path.parent} to start the sweep again"
                ) from None
            lines = lines[:i] + [b""]  # a cut last record that happens to end in a newline
            break
    else:
        if not lines[-1]:
            return None
        lines = lines[:-1] + [b""]  # a cut last record: no newline ends it
    backup = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.copy2(path, backup)
    tmp = path.with_name(f".{path.name}.repair")
    tmp.write_bytes(b"\n".join(lines))
    os.replace(tmp, path)
    return backup


def finished_result(journal: str | None, study: str | None, trial_id: str, metric: str) -> dict | None:
    """The final result the journal holds for Tune trial `trial_id`, if it finished before a crash that Tune's last
    snapshot missed (readable where the journal is: the driver's node, or every node with shared storage)."""
    if not journal or not Path(journal).exists():
        return None
    loaded = load_study(journal, study)
    trial_id = loaded.user_attrs.get(ALIAS + trial_id, trial_id)
    for t in loaded.get_trials(deepcopy=False):
        if t.user_attrs.get(TUNE_ID) == trial_id and t.state.is_finished():
            failed = t.state == optuna.trial.TrialState.FAIL or bool(t.user_attrs.get(DIVERGED))
            steps = intermediate(t)
            epochs = epochs_run(t)
            value = t.values[0] if t.values else (list(steps.values()) or [0.0])[-1]
            return {"epoch": epochs, metric: float(value), **costs(t), **({"diverged": 1} if failed else {})}
    return None


class JournalTrial(NamedTuple):
    """What the journal holds of one trial, for the results table."""

    epochs: int
    best: float  # the best value of the metric it reported (NaN: none)
    number: int  # its Optuna trial number
    succeeded: bool  # COMPLETE or PRUNED, not diverged
    costs: dict  # what it measured besides the metric (COST attributes)
    seconds: float  # its training seconds (SECONDS; 0 before its first epoch)


def journal_progress(journal: Path, study_name: str, better) -> dict[str, JournalTrial]:
    """{tune trial id: JournalTrial} from the journal, which a hard kill cannot leave behind Tune's own result files.
    `better(a, b)` says whether value a beats b."""
    if not journal.exists():
        return {}
    out = {}
    study = load_study(journal, study_name)
    new_id = {old: k[len(ALIAS) :] for k, old in study.user_attrs.items() if k.startswith(ALIAS)}
    for t in study.get_trials(deepcopy=False):
        if TUNE_ID in t.user_attrs:
            steps = intermediate(t)
            values = [*steps.values(), *(t.values[:1] if t.values else [])]
            epochs = epochs_run(t)
            best = math.nan
            for v in values:
                best = v if better(v, best) else best
            ok = t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) and not t.user_attrs.get(
                DIVERGED
            )
            out[new_id.get(t.user_attrs[TUNE_ID], t.user_attrs[TUNE_ID])] = JournalTrial(
                epochs, best, t.number, ok, costs(t), float(t.user_attrs.get(SECONDS, 0.0))
            )
    return out


WAITING = optuna.trial.TrialState.WAITING


def created_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's trials that were handed out (not one enqueued and not yet asked for)."""
    return [t for t in study.get_trials(deepcopy=False) if t.state != WAITING]


def study_counts(journal: Path, study_name: str) -> tuple[int, int]:
    """(trials in the study, trials finished in any state); (0, 0) before the study exists."""
    if not journal.exists():
        return 0, 0
    try:
        trials = created_trials(load_study(journal, study_name))
    except KeyError:  # the journal holds no such study yet
        return 0, 0
    return len(trials), sum(t.state.is_finished() for t in trials)


def created_all(study: optuna.Study, segment: str) -> bool:
    """Whether the searcher of Tune experiment `segment` said it had created all its trials."""
    return bool(study.user_attrs.get(DONE + segment))
