"""Helpers for the sweep tests: the tiny classifier sweep they run, the Optuna study a sweep leaves, and grutune's
searcher over a journal of a test's own, bound as the driver binds it and driven as Tune drives it (no Ray)."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray.tune.search import Searcher

from grutune.sweep.binding import SweepRun, bind
from grutune.sweep.searcher import GrutuneSearcher

TINY_SEARCH = {
    "num_samples": 6,
    "startup_trials": 10,
    "max_epochs": 2,
    "grace_period": 2,
    "train_subset": 512,
    "max_concurrent_trials": 2,
    "max_failures": 1,
    "resources": {"cpu": 1, "gpu": 0},
}
TINY_SPACE = {
    "hidden_size": {"choice": [16, 24]},
    "num_layers": 1,
    "backbone": "none",
    "batch_size": 64,
    "bidirectional": False,
}


def tiny_writer(write_params):
    """tiny(path, search=None, space=None) -> path: params with the tiny search budget above, changed by
    `search`/`space` (`write_params` is conftest's fixture)."""
    return lambda path, search=None, space=None: write_params(
        path, {"search": {**TINY_SEARCH, **(search or {}), "space": {**TINY_SPACE, **(space or {})}}}
    )


def study_trials(journal_dir: Path):
    """The trials of the one sweep under `journal_dir` (a state_dir or storage), from its Optuna journal."""
    (journal,) = journal_dir.glob("*/optuna.journal")
    study = optuna.load_study(study_name=None, storage=JournalStorage(JournalFileBackend(str(journal))))
    return study.get_trials(deepcopy=False)


# --------------------------------------------------------------------------- a searcher outside Tune


def searcher_at(
    tmp_path,
    *,
    target=10,
    max_concurrent=4,
    segment="tune-1",
    max_epochs=2,
    known=(),
    max_trial_epochs=None,
    min_trial_epochs=1,
    points=(),
    max_trial_seconds=None,
    tune_samples=None,
):
    """grutune's searcher over the journal s.journal, bound as the sweep driver binds it (outside Tune)."""
    bind(
        "s",
        SweepRun(
            journal=tmp_path / "s.journal",
            target=target,
            max_concurrent=max_concurrent,
            segment=segment,
            known=frozenset(known),
            max_trial_epochs=max_trial_epochs,
            min_trial_epochs=min_trial_epochs,
            max_trial_seconds=max_trial_seconds,
        ),
    )
    return GrutuneSearcher(
        study_name="s",
        space={"lr": ("loguniform", [1e-4, 1e-2]), "cell": ("choice", ["gru", "rnn"])},
        seed=0,
        metric="val_accuracy",
        mode="max",
        max_epochs=max_epochs,
        startup_trials=2,
        points_to_evaluate=points,
        tune_samples=tune_samples,
    )


def finish_all(searcher, epochs=2) -> int:
    """Drive a bound searcher as Tune would, one trial at a time, until it says FINISHED; return trials run."""
    n = 0
    while (config := searcher.suggest(f"t{n}")) != Searcher.FINISHED:
        assert config is not None
        searcher.on_trial_result(f"t{n}", {"epoch": 1, "val_accuracy": 0.1 * n})
        searcher.on_trial_complete(f"t{n}", {"epoch": epochs, "val_accuracy": 0.1 * n})
        n += 1
    return n


def journal_study(tmp_path):
    """The study "s" of `searcher_at`'s journal."""
    return optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "s.journal"))))


def journal_trials(tmp_path):
    return journal_study(tmp_path).get_trials(deepcopy=False)
