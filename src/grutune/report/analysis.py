"""The numbers the report draws from a sweep's trials: the best so far and its new bests in the sweep's direction,
what each trial spent, and Optuna's importance of each hyperparameter."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import optuna

from grutune.report.inputs import SPEND, SweepResults
from grutune.space import optuna_distributions

__all__ = [
    "OK_STATUSES",
    "new_bests",
    "param_distributions",
    "param_importances",
    "running_best",
    "spend",
    "usable_trials",
]

OK_STATUSES = ("completed", "pruned")  # trials whose best metric counts


def usable_trials(s: SweepResults) -> list[dict[str, Any]]:
    return [t for t in s.trials if t["status"] in OK_STATUSES and math.isfinite(t[s.column])]


def running_best(s: SweepResults) -> np.ndarray:
    """The best value so far after each trial, in the sweep's direction and Optuna's order of the trials; failed
    and errored trials bring no improvement, and before any value the best is nan."""
    v = np.array([t[s.column] if t["status"] in OK_STATUSES else math.nan for t in s.trials], dtype=float)
    if s.objective.mode == "max":
        best = np.maximum.accumulate(np.where(np.isfinite(v), v, -np.inf))
    else:
        best = np.minimum.accumulate(np.where(np.isfinite(v), v, np.inf))
    return np.where(np.isfinite(best), best, np.nan)


def new_bests(s: SweepResults) -> list[tuple[int, float]]:
    """(trial, value) for each trial that set a new best: the steps of the best-so-far curve."""
    best, out = running_best(s), []
    for i, t in enumerate(s.trials):
        if math.isfinite(best[i]) and (i == 0 or best[i] != best[i - 1]):  # the first value, or a better one
            out.append((t["trial"], float(best[i])))
    return out


def spend(s: SweepResults) -> tuple[str, np.ndarray] | None:
    """What each trial of the sweep cost, in the most telling unit its trials.csv has for every trial (dollars,
    GPU-hours, trial-hours), and that unit; None for a trials.csv without costs."""
    for key, unit, scale in SPEND:
        v = np.array([t.get(key, math.nan) for t in s.trials], dtype=float) * scale
        if len(v) and np.isfinite(v).all() and v.sum() > 0:
            return unit, v
    return None


def param_distributions(s: SweepResults) -> dict[str, optuna.distributions.BaseDistribution]:
    """The sweep's own Optuna distributions (those of its search space) of the hyperparameters that varied among
    the usable trials; one that never varied is left out."""
    trials = usable_trials(s)
    return {k: d for k, d in optuna_distributions(s.space).items() if len({t[k] for t in trials}) > 1}


def param_importances(s: SweepResults) -> dict[str, float]:
    """Optuna's importance of each varying hyperparameter for the sweep's metric, summing to 1, most important first.

    The completed and pruned trials become an in-memory study in the sweep's direction (PED-ANOVA compares the best
    trials with all of them, so the direction decides which trials are the best). The evaluator is PED-ANOVA,
    Optuna 5's default: it needs no scikit-learn (fANOVA and mean-decrease-impurity do) and has no randomness, so it
    takes no seed and the same table always gives the same answer. Empty when there is nothing to rank: fewer than 2
    usable trials, no varying hyperparameter, or every trial scoring the same.
    """
    ok = usable_trials(s)
    dists = param_distributions(s)
    if len(ok) < 2 or not dists:
        return {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = optuna.create_study(direction="maximize" if s.objective.mode == "max" else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(
        [optuna.trial.create_trial(params={k: t[k] for k in dists}, distributions=dists, value=t[s.column]) for t in ok]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "importances will be equal" when all trials tie; handled below
        raw = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), normalize=False
        )
    total = sum(raw.values())
    if not total > 0:
        return {}
    return {k: v / total for k, v in sorted(raw.items(), key=lambda kv: -kv[1])}
