"""`search.scheduler: top_k`: every trial of a Tune experiment trains `grace_period` epochs (the screen); when all of
them have, the best 1/`reduction_factor` go on to `max_epochs` and the rest stop there. The synchronous one-rung
screen that benchmarks/search_replay.py measured as `random_top_k` (grace period 1, reduction factor 9: at 200
trial-epochs of 9 epochs, 104 configs screened, the 12 best trained to the end), on Tune's public scheduler interface.

The experiment's trials are planned before it starts (`top_k_plan`): the trials it creates (`n`) and how many go on
(`k`), so that the screen plus the trials that go on fit the sweep's budget of trial-epochs. While the screen runs, a
trial that has trained its screen epochs is paused (Tune keeps its checkpoint and frees its slot for the next trial:
`GrutuneSearcher` counts only trials still in their screen against the trials at once); a trial that goes on is
resumed from that checkpoint, and trains as an unpaused one would (its learning rate is a function of the epoch).
The others are stopped, which Optuna records as PRUNED at the screen epoch, as ASHA's stops are.

After a kill, Tune restores the experiment with the scheduler as it was when the experiment began, and requeues
every unfinished trial as PENDING, which it starts whatever a scheduler chooses. So the screen is never read from
Tune's state: each trial's reading at its screen epoch is the one the journal holds (the searcher writes every
epoch's value there), the decision is made again from those readings the same way (the best, ties by Tune trial
id), and the same trials go on. A trial that was waiting at its screen trains one epoch more after the restart
before it waits again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from grutune.sweep.binding import bound
from grutune.sweep.journal import SEGMENT, TUNE_ID, intermediate, load_study

__all__ = ["TopKPlan", "TopKScheduler", "experiment_plan", "top_k_plan"]


@dataclass(frozen=True)
class TopKPlan:
    """An experiment's screen: `n` trials of `screen` epochs each, the best `k` of them on to `max_epochs`."""

    n: int
    k: int
    screen: int
    max_epochs: int

    @property
    def trial_epochs(self) -> int:
        return self.n * self.screen + self.k * (self.max_epochs - self.screen)


def kept(n: int, reduction_factor: float) -> int:
    """Trials that go on from a screen of `n`: 1/reduction_factor of them, at least one."""
    return max(1, math.ceil(n / reduction_factor)) if n else 0


def top_k_plan(trials: int, budget: int | None, screen: int, max_epochs: int, reduction_factor: float) -> TopKPlan:
    """The most trials, at most `trials`, whose screen and the 1/reduction_factor that go on fit `budget`
    trial-epochs (None: no budget): at 200 trial-epochs, screen 1, reduction factor 9 and 9 epochs, 104 trials and
    the 12 best on (exactly 200)."""
    n = max(0, trials)
    if budget is not None:
        while n and n * screen + kept(n, reduction_factor) * (max_epochs - screen) > budget:
            n -= 1
    return TopKPlan(n=n, k=kept(n, reduction_factor), screen=screen, max_epochs=max_epochs)


def experiment_plan(s, trials_before: int, earlier_results: list) -> TopKPlan | None:
    """A sweep's next Tune experiment's screen (`s`: its SweepParams), from what its earlier experiments created and
    spent (their Tune results); None under ASHA."""
    if s.scheduler != "top_k":
        return None
    spent_before = sum(int(r.metrics.get("epoch") or 0) for results in earlier_results for r in results)
    budget = None if s.max_trial_epochs is None else s.max_trial_epochs - spent_before
    return top_k_plan(s.num_samples - trials_before, budget, s.grace_period, s.max_epochs, s.reduction_factor)


class TopKScheduler(FIFOScheduler):
    """Tune's `FIFOScheduler` with a screen: see the module's docstring. `metric` and `mode` as Tune's schedulers take
    them; `time_attr` is the epoch a trial reports."""

    def __init__(self, plan: TopKPlan, study_name: str, metric: str, mode: str, time_attr: str = "epoch"):
        super().__init__()
        self.plan, self.study_name, self.time_attr = plan, study_name, time_attr
        self._metric, self._mode = metric, mode
        self.readings: dict[str, float] = {}  # trial id -> its metric at the screen epoch
        self.passed: set[str] = set()  # trials that go on past the screen
        self.ended: set[str] = set()  # trials that ended before their screen reading (errors, divergence)
        self.decided = False
        self._journal: dict[str, float] | None = None  # the experiment's screen readings in the journal, once read

    def set_search_properties(self, metric, mode, **spec) -> bool:
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    # ------------------------------------------------------------------------- what a trial has shown

    def _epoch(self, result: dict | None) -> int:
        return int((result or {}).get(self.time_attr) or 0)

    def _screened(self) -> dict[str, float]:
        """{Tune trial id: its reading at the screen epoch} of this experiment's trials, as the journal holds them."""
        if self._journal is None:
            run = bound(self.study_name)
            study = load_study(run.journal, self.study_name)
            self._journal = {}
            for t in study.get_trials(deepcopy=False):
                value = intermediate(t).get(self.plan.screen)
                if t.user_attrs.get(SEGMENT) == run.segment and TUNE_ID in t.user_attrs and value is not None:
                    self._journal[t.user_attrs[TUNE_ID]] = value
        return self._journal

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        tid = trial.trial_id
        self.ended.discard(tid)  # a trial that raised and is retried (Tune adds it again)
        if trial.last_result and tid not in self.readings:  # restored after a kill, or retried
            if tid in self._screened():
                self.readings[tid] = self._screened()[tid]
            elif trial.status in (Trial.TERMINATED, Trial.ERROR):
                self.ended.add(tid)
        self._decide(tune_controller)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        tid, epoch = trial.trial_id, self._epoch(result)
        if epoch >= self.plan.max_epochs:
            return TrialScheduler.STOP
        if tid in self.passed or epoch < self.plan.screen:
            return TrialScheduler.CONTINUE
        if tid not in self.readings:
            if result.get("diverged") or self._metric not in result:
                return TrialScheduler.CONTINUE  # the trial ends itself; `on_trial_complete` counts it out
            self.readings[tid] = float(result[self._metric])
        self._decide(tune_controller, current=trial)
        if tid in self.passed:
            return TrialScheduler.CONTINUE
        return TrialScheduler.STOP if self.decided else TrialScheduler.PAUSE

    def _ended(self, tune_controller, trial: Trial) -> None:
        if trial.trial_id not in self.readings and trial.trial_id not in self.passed:
            self.ended.add(trial.trial_id)
        self._decide(tune_controller)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._ended(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._ended(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._ended(tune_controller, trial)

    # ------------------------------------------------------------------------- the decision

    def _decide(self, tune_controller, current: Trial | None = None) -> None:
        """Once every trial of the plan has its screen reading (or ended without one), choose the ones that go on
        and stop the others that wait (not `current`: its decision is the return value of `on_trial_result`)."""
        if self.decided or len(self.readings.keys() | self.ended) < self.plan.n:
            return
        sign = -1.0 if self._mode == "max" else 1.0
        ranked = sorted(self.readings, key=lambda t: (sign * self.readings[t], t))
        self.passed = set(ranked[: self.plan.k])
        self.decided = True
        self._stop_the_rest(tune_controller, current)

    def _stop_the_rest(self, tune_controller, current: Trial | None = None) -> None:
        """Stop every trial that waits at its screen and does not go on: paused, pending, or still being paused
        (its checkpoint being saved: Tune stops it once the save resolves, as its HyperBandScheduler does)."""
        for trial in list(tune_controller.get_trials()):
            waiting = trial.trial_id in self.readings and trial.trial_id not in self.passed
            if waiting and trial is not current and (trial.status in (Trial.PAUSED, Trial.PENDING) or trial.is_saving):
                tune_controller.stop_trial(trial)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        """A new trial first; a trial waiting at its screen only once it has been chosen to go on. Once the screen is
        decided, a trial whose pause finished after the decision is stopped here."""
        if self.decided:
            self._stop_the_rest(tune_controller)
        trials = tune_controller.get_trials()
        for trial in trials:
            if trial.status == Trial.PENDING and trial.trial_id not in self.readings:
                return trial
        for trial in trials:
            if trial.status in (Trial.PENDING, Trial.PAUSED) and trial.trial_id in self.passed:
                return trial
        return None

    def debug_string(self) -> str:
        p = self.plan
        state = (
            f"{len(self.passed)} going on to epoch {p.max_epochs}"
            if self.decided
            else f"{len(self.readings)} of {p.n} screened"
        )
        return f"Top-{p.k} of {p.n} after {p.screen} epoch(s): {state}"
