"""Binding a sweep to this process: where its study is and how it runs today (protocol step 1 in
`grutune.sweep.recovery`). Not state: a sweep moved, copied, extended or resumed on another cluster runs with today's
values, and nothing saved names a path."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from grutune.errors import GrutuneError

__all__ = ["SweepRun", "bind", "bound", "location"]


@dataclass(frozen=True)
class SweepRun:
    """Where a sweep's study is and how it runs in this process: not state, so a sweep moved, copied, extended or
    resumed on another cluster runs with today's values."""

    journal: Path  # the study's journal file
    target: int  # trials the study should end with (num_samples)
    max_concurrent: int  # trials at once
    segment: str  # the Tune experiment now running the sweep
    journal_uri: str | None = None  # with cloud storage, where the journal is copied up to
    max_trial_epochs: int | None = None  # create no trial that would take the study past this many trial-epochs
    min_trial_epochs: int = 1  # epochs a new trial runs at least (ASHA's grace period): see `budget_allows_trial`
    max_trial_seconds: float | None = None  # create no trial that would take the study past this many trial-seconds
    origin: str = ""  # a fingerprint (not the path) of where the sweep's folder is now: see `location`
    known: frozenset = frozenset()  # Tune ids of the trials of the sweep's earlier Tune experiments


_RUNS: dict[str, SweepRun] = {}


def location(sweep_uri: str) -> str:
    """A fingerprint of where a sweep's folder is, to notice a sweep that was moved or copied without keeping the
    path. Tune keeps the experiment's original path with its snapshot and gives trials it creates after a restore
    that path (Ray 2.60), so a restored experiment that has moved creates no trials: a new one does."""
    return hashlib.sha256(sweep_uri.encode()).hexdigest()[:16]


def bind(study_name: str, run: SweepRun) -> None:
    """Tell this process's searcher of `study_name` where its journal is and how it runs."""
    _RUNS[study_name] = run


def bound(study_name: str) -> SweepRun:
    """What `bind` said of `study_name` in this process."""
    run = _RUNS.get(study_name)
    if run is None:
        raise GrutuneError(
            f"sweep {study_name} is not bound to a journal in this process: run it through grutune's search stage "
            f"(grutune.sweep.driver.run_sweep)"
        )
    return run
