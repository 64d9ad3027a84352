"""What a sweep may spend: ASHA's arithmetic (its rungs, the epochs a trial runs on average), whether a budget of
trial-epochs or trial-seconds pays for one more trial, and a spend in the units a user reads (trial-hours, GPU-hours,
dollars)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from grutune.cluster import show_resources
from grutune.sweep.journal import SECONDS, epochs_run

if TYPE_CHECKING:
    import optuna

    from grutune.config import Budget, Prices, SweepParams

log = logging.getLogger(__name__)

__all__ = [
    "asha_rungs",
    "budget_allows_trial",
    "budget_seconds",
    "committed_epochs",
    "committed_seconds",
    "expected_trial_epochs",
    "expected_trials",
    "spend_limit",
    "spent",
    "startup_count",
    "time_allows_trial",
    "trial_seconds",
]


def asha_rungs(grace_period: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """The epochs at which Ray's ASHA decides, and the last: grace_period * reduction_factor**k below max_epochs (a
    trial reports whole epochs, so a rung at 2.5 is decided at epoch 3), then max_epochs."""
    rungs = int(math.log(max_epochs / grace_period) / math.log(reduction_factor) + 1)
    at = {math.ceil(grace_period * reduction_factor**k) for k in range(rungs)}
    return sorted(m for m in at if m < max_epochs) + [max_epochs]


def expected_trial_epochs(grace_period: int, reduction_factor: float, max_epochs: int) -> float:
    """Epochs an ASHA trial runs on average: all of them reach the grace period, and a share 1/reduction_factor of
    each rung goes on to the next (`asha_rungs`)."""
    at = asha_rungs(grace_period, reduction_factor, max_epochs)
    return at[0] + sum((b - a) / reduction_factor ** (k + 1) for k, (a, b) in enumerate(zip(at, at[1:])))


def committed_epochs(trials: list[optuna.trial.FrozenTrial], max_epochs: int) -> int:
    """Trial-epochs the study's trials have run, counting each unfinished trial as if it will run to `max_epochs`."""
    return sum(epochs_run(t) if t.state.is_finished() else max_epochs for t in trials)


def expected_trials(s: SweepParams) -> float:
    """Trials a sweep will run: `num_samples`, or fewer where `max_trial_epochs` ends it first (ASHA's trials run
    `expected_trial_epochs` on average)."""
    if s.max_trial_epochs is None:
        return s.num_samples
    per_trial = expected_trial_epochs(s.grace_period, s.reduction_factor, s.max_epochs)
    return min(s.num_samples, s.max_trial_epochs / per_trial)


def startup_count(s: SweepParams) -> int:
    """TPE's random start-up trials: `startup_trials`, or that share of the trials the sweep will run (at least 1):
    of `num_samples`, or of what `max_trial_epochs` pays for."""
    if isinstance(s.startup_trials, int):
        return s.startup_trials
    return max(1, math.ceil(s.startup_trials * expected_trials(s)))


def budget_allows_trial(
    trials: list[optuna.trial.FrozenTrial], budget: int | None, max_epochs: int, min_trial_epochs: int
) -> bool:
    """Whether a new trial fits in a budget of `budget` trial-epochs (None: no budget): the epochs run so far, every
    running trial run to the end (ASHA may promote it all the way), and the new trial's first `min_trial_epochs`.
    So a sweep ends within one trial of its budget, and with many trials in flight the end of the budget goes to the
    trials ASHA promotes, not to new trials that it would cut off (benchmarks/search_replay.py measured both)."""
    return budget is None or committed_epochs(trials, max_epochs) + min_trial_epochs <= budget


def trial_seconds(t: optuna.trial.FrozenTrial) -> float:
    """The training seconds a trial has run (Tune's time_total_s at its last reported epoch)."""
    return float(t.user_attrs.get(SECONDS, 0.0))


def committed_seconds(trials: list[optuna.trial.FrozenTrial], max_epochs: int, min_trial_epochs: int) -> float:
    """Trial-seconds the study's trials have run, each unfinished one counted as if it will run to `max_epochs` at
    the pace it has run so far (or at the sweep's, before its first epoch), and a new trial's first
    `min_trial_epochs` at the sweep's pace: what a sweep commits to if it starts one more trial."""
    ran = [(trial_seconds(t), epochs_run(t)) for t in trials]
    seconds, epochs = sum(s for s, _ in ran), sum(e for _, e in ran)
    pace = seconds / epochs if epochs else 0.0  # before any epoch is measured nothing can be charged
    total = pace * min_trial_epochs
    for t, (s, e) in zip(trials, ran):
        total += s if t.state.is_finished() else s + (max_epochs - e) * (s / e if e and s else pace)
    return total


def time_allows_trial(
    trials: list[optuna.trial.FrozenTrial], budget: float | None, max_epochs: int, min_trial_epochs: int
) -> bool:
    """Whether a new trial fits in a budget of `budget` trial-seconds (None: no budget), as `budget_allows_trial`
    does for trial-epochs, with each epoch charged at the pace measured (`committed_seconds`)."""
    return budget is None or committed_seconds(trials, max_epochs, min_trial_epochs) <= budget


def budget_seconds(budget: Budget, resources: dict[str, float], prices: Prices) -> tuple[float, str] | None:
    """A sweep's budget as seconds of one trial holding `resources`, and the setting that gives it (the tightest), or
    None where nothing bounds the sweep (no budget, or one in a resource its trials do not hold)."""
    per_second = {
        "trial_hours": 1 / 3600,
        "cpu_hours": resources.get("cpu", 0) / 3600,
        "gpu_hours": resources.get("gpu", 0) / 3600,
        "dollars": prices.per_second(resources),
    }
    caps = [
        (getattr(budget, unit) / rate, unit)
        for unit, rate in per_second.items()
        if getattr(budget, unit) is not None and rate > 0
    ]
    return min(caps) if caps else None


def spend_limit(params: SweepParams, key: str, resources: dict[str, float]) -> tuple[float, str] | None:
    """The sweep's `budget` (section `key`) as trial-seconds of trials holding `resources`, and the setting that gives
    it; where a budget is set in a resource the trials do not hold here (gpu_hours without GPUs), it says so."""
    if params.budget.gpu_hours is not None and not resources.get("gpu"):  # a trial always holds CPUs: cpu_hours binds
        log.warning(
            "%s.budget.gpu_hours does not bound this sweep: its trials hold no GPU here (resources per trial %s)",
            key,
            show_resources(resources),
        )
    return budget_seconds(params.budget, resources, params.price_per_hour)


def spent(seconds: float, resources: dict[str, float], prices: Prices) -> str:
    """Trial-seconds as a user reads a sweep's spend: trial-hours, GPU-hours where trials hold GPUs, dollars where
    there are prices."""
    out = [f"{seconds / 3600:.3g} trial-hours"]
    if resources.get("gpu"):
        out.append(f"{seconds * resources['gpu'] / 3600:.3g} GPU-hours")
    if prices.set:
        out.append(f"${seconds * prices.per_second(resources):.2f}")
    return ", ".join(out)
