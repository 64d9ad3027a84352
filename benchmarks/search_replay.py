"""Replay benchmark: grutune's real searcher and Ray Tune's real ASHA on a surrogate of the learning-curve table.

    python benchmarks/search_replay.py --workers 1
    # the declared run: fresh seeds 1000-1199, arms random, random_asha, grutune, optuna_hb at 60 and 200
    # trial-epochs, 1, 2 and 32 in flight -> benchmarks/results/search_replay_faithful.json
    python benchmarks/search_replay.py --seeds 1000-1001 --name search_replay_try   # a quick look, a throwaway file

What ships is what is measured. Every arm takes its settings from conf/config.yaml's `search` section (ASHA's
grace_period and reduction_factor, TPE's startup_trials, multivariate and constant_liar) unless the arm names a
variant (`Arm`, `shipped()`); the default arm `grutune` names none, and tests/test_search_replay.py fails if it ever
differs from the config. Two things are the experiment's own, not the config's: the budget (trial-epochs, in place of
num_samples; a share of start-up trials is taken of what that budget pays for, by the config's own rule,
`grutune.sweep.budget.startup_count`) and the trials in flight (in place of filling a cluster). One thing the table
fixes: a trial's epochs are the table's 9, not the config's max_epochs (12); at the shipped grace period 2 and reduction
factor 3, ASHA decides at epochs 2 and 6 either way (the test checks that too). The peers name their own settings:
`random_asha` is random search under the shipped ASHA (what TPE adds, and nothing else), `optuna_hb` is what an
Optuna user gets out of the box (Optuna's TPESampler and HyperbandPruner at their defaults: 10 start-up trials, no
constant liar, min_resource 1, reduction factor 3).

The surrogate: extremely randomised trees (scikit-learn) fitted on benchmarks/results/learning_curves.jsonl.gz
(400 configs of the default space, real Fashion-MNIST, 9 epochs of 2,000 images) predict a config's mean validation
accuracy at every epoch, under today's cosine schedule (and under warmup-stable-decay, for the `grutune_wsd`
variant, whose readings take the cosine runs' noise), and its time per epoch. The noise is the table's own, drawn
as whole curves, never one offset:
- training seeds: 50 of the table's configs were trained at 3 seeds; a trial draws one of those 150 runs' deviation
  curves (the run's accuracy at every epoch minus its config's mean over the seeds, times sqrt(3/2) so the spread is
  that of one run about the mean, not about a mean of three), from the 30 runs (10 configs) nearest the trial's
  config in mean final accuracy (at the last epoch the spread is 0.017 among the worst fifth of those configs and
  0.003 among the best; at epoch 1 about 0.05, and barely correlated with the last: r = 0.07);
- the validation score: every table run was scored on two disjoint 3,000-image halves of the validation split; a
  trial draws one run's half difference (acc_a - acc_b, centred per epoch so a half that is harder for every model
  is no noise), again from the 50 runs nearest in final accuracy, with a random sign, and a reading is the score on
  one half: mean + seed deviation + half difference / 2 (a = (a + b)/2 + (a - b)/2). Its correlation across epochs
  is the table's (a model that is lucky on these images stays lucky).
So a reading is a 3,000-image score, as the table's halves and the real-data benchmark's selection images are (the
shipped validation split on Fashion-MNIST is 6,000). The same config draws the same noise in every arm of a seed
(paired). The script prints, per epoch, the rank correlation (Spearman) of a reading on one half with the run's own
final reading on the other half, in the table and in the surrogate (on 2,000 fresh configs of the space, and on the
table's configs with out-of-fold means), and stores them in the JSON.

A sweep is an event loop over simulated time with N trials in flight: the searcher under test proposes (grutune's
`GrutuneSearcher`, the very class the search stage runs, on an Optuna journal), Tune's `ASHAScheduler` decides at
every reported epoch (through its public scheduler interface), and the sweep stops when it has spent its budget of
trial-epochs. Every arm creates trials under the search stage's budget rule (`sweep.budget.budget_allows_trial`: a new
trial only if the budget also pays for every running trial to the end), as Tune would: every free slot is offered a
trial. That rule caps what is in flight (at 200 trial-epochs, 22 trials of 9 epochs; 23 under ASHA, where a new
trial needs only its grace period), so each run records the most trials it had running at once and the mean over
the sweep's simulated time. What a user gets is scored, not the noisy maximum: each arm picks the trial with the
best reported accuracy, as the search stage does, and is credited with that config's noise-free final accuracy under
the cosine schedule the final training uses.

Seeds and the claim, fixed before the run: the seeds are 1000-1199 (`FRESH_SEEDS`), used to choose nothing. The
primary endpoint (`PRIMARY`) is grutune minus random + ASHA in what the user gets, at 200 trial-epochs and 2 in
flight. Every paired comparison reports the mean difference with a 95% bootstrap interval, wins-ties-losses (on the
stored accuracies: win > 0, tie == 0, i.e. both picks score the same, loss < 0) and the Wilcoxon signed-rank p-value
(zero differences dropped), raw and Holm-adjusted (`adjust`) over the pairs of arms compared at the same budget and
in-flight level (each pair once), and over every such pair in the file; the price of trials in flight (an arm
against itself one at a time) is adjusted as a family of its own, likewise. The old files (search_replay*.json,
seeds 0-99, a fixed offset per config as noise, grace period 1 in the `grutune` arm) were made at commit f3883dd and
are reproduced there.

Arms: `random` (random search, every trial to the end), `random_asha`, `tpe` (TPE, no early stopping),
`optuna_hb`, `grutune` (the shipped search), and the variants measured before (`--arms` lists them all), kept with
the settings they ran at then (grace period 1, 8 start-up trials unless named: `legacy`). Writes
benchmarks/results/<name>.json: per arm, budget and in-flight level the median and interquartile range of the
user's accuracy, the paired comparisons above against random search, random + ASHA and Optuna's TPE + Hyperband,
best-so-far at 25/50/100% of the budget, the trial-epochs each arm needs to reach random search's final median (95%
bootstrap interval over seeds), and the in-flight levels reached. Runs are written seed by seed as each seed's
sweeps finish, and a rerun skips the sweeps the file holds; with none left to run it only computes the summary
anew, keeping the command and machine that made the runs. The file names the machine and the git commit.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import gzip
import hashlib
import heapq
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, save  # noqa: E402
from grutune.config import SearchParams  # noqa: E402
from grutune.space import optuna_distributions  # noqa: E402
from grutune.sweep import budget as sweep_budget  # noqa: E402
from grutune.sweep.binding import SweepRun, bind  # noqa: E402
from grutune.sweep.budget import asha_rungs, budget_allows_trial  # noqa: E402
from grutune.sweep.journal import DIVERGED  # noqa: E402
from grutune.sweep.searcher import GrutuneSearcher, tpe_sampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "conf/config.yaml"
TABLE = RESULTS / "learning_curves.jsonl.gz"
CELLS, BACKBONES = ("gru", "lstm", "rnn"), ("none", "conv", "resnet")

FRESH_SEEDS = range(1000, 1200)  # fixed before the faithful run; nothing was chosen on them
PRIMARY = {"arm": "grutune", "versus": "random_asha", "budget": 200.0, "in_flight": 2}  # what the user gets
REFERENCES = ("random", "random_asha", "optuna_hb")  # every arm is paired against each of these
NEAR_DEVS = 30  # a trial's seed deviation: one of the 30 curves (10 configs at 3 seeds) nearest it in final accuracy
NEAR_RUNS = 50  # its validation noise from one of the table runs nearest it


# --------------------------------------------------------------------------- the surrogate


def features(c: dict) -> list[float]:
    return [
        *(float(c["cell"] == k) for k in CELLS),
        math.log2(c["hidden_size"]),
        c["num_layers"],
        float(c["bidirectional"]),
        c["dropout"],
        *(float(c["backbone"] == k) for k in BACKBONES),
        math.log10(c["lr"]),
        math.log10(c["weight_decay"]),
        math.log2(c["batch_size"]),
    ]


@dataclass
class Noise:
    """The table's noise as whole curves (rows: runs, columns: epochs), each row with the final accuracy it was
    measured at, so a trial draws the noise of runs like it."""

    seed_devs: np.ndarray  # a repeated config's run minus the config's mean over seeds, times sqrt(n / (n - 1))
    seed_level: np.ndarray  # that config's mean final accuracy
    half_diffs: np.ndarray  # acc_a - acc_b of every run, centred per epoch
    half_level: np.ndarray  # that run's final accuracy (the mean of its halves)

    def draw(self, level: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A trial's noise at every epoch: a seed deviation curve, and half a half-difference curve with a random
        sign, each from the table runs nearest `level` in final accuracy. A reading on one validation half is
        mean + deviation + half; the same run read on the other half is mean + deviation - half."""
        near_seed = np.argsort(np.abs(self.seed_level - level), kind="stable")[:NEAR_DEVS]
        near_half = np.argsort(np.abs(self.half_level - level), kind="stable")[:NEAR_RUNS]
        dev = self.seed_devs[rng.choice(near_seed)]
        half = self.half_diffs[rng.choice(near_half)] * rng.choice((-0.5, 0.5))
        return dev, half

    def sd_per_epoch(self) -> dict:
        return {
            "seed_deviation": [round(float(x), 4) for x in np.sqrt((self.seed_devs**2).mean(axis=0))],
            "half_reading": [round(float(x), 4) for x in (self.half_diffs / 2).std(axis=0)],
            "seed_deviation_curves": len(self.seed_devs),
            "half_difference_curves": len(self.half_diffs),
        }


def noise_of(rows: list[dict], epochs: int) -> Noise:
    """The table's noise curves under the cosine schedule (`Noise`)."""
    by_config: dict[int, list] = {}
    for r in rows:
        by_config.setdefault(r["index"], []).append(r)
    devs, seed_level = [], []
    for runs in by_config.values():
        if len(runs) < 2:
            continue
        Y = np.array([curve_of(r["runs"]["cosine"], epochs) for r in runs])  # (seeds, epochs)
        mean = Y.mean(axis=0)
        devs.extend((Y - mean) * math.sqrt(len(runs) / (len(runs) - 1)))
        seed_level.extend([mean[-1]] * len(runs))
    halves = np.array([half_diff(r["runs"]["cosine"], epochs) for r in rows])  # (runs, epochs)
    return Noise(
        seed_devs=np.array(devs),
        seed_level=np.array(seed_level),
        half_diffs=halves - halves.mean(axis=0),
        half_level=np.array([curve_of(r["runs"]["cosine"], epochs)[-1] for r in rows]),
    )


@dataclass
class Surrogate:
    models: dict  # schedule -> fitted regressor of the 9 epochs' mean accuracy
    time_model: object  # log seconds per epoch
    noise: Noise
    epochs: int
    quality: dict = field(default_factory=dict)

    cache: dict = field(default_factory=dict)

    def curve(self, schedule: str, c: dict) -> np.ndarray:
        key = (schedule, json.dumps(c, sort_keys=True))
        if key not in self.cache:
            self.cache[key] = self.models[schedule].predict([features(c)])[0]
        return self.cache[key]

    def epoch_s(self, c: dict) -> float:
        key = ("time", json.dumps(c, sort_keys=True))
        if key not in self.cache:
            self.cache[key] = float(math.exp(self.time_model.predict([features(c)])[0]))
        return self.cache[key]


def load_table() -> list[dict]:
    with gzip.open(TABLE, "rt") as f:
        return [json.loads(line) for line in f]


def curve_of(run: list[dict], epochs: int) -> list[float]:
    vals = [(e["acc_a"] + e["acc_b"]) / 2 for e in run]
    return vals + [vals[-1] if vals else 0.1] * (epochs - len(vals))


def half_diff(run: list[dict], epochs: int) -> list[float]:
    vals = [e["acc_a"] - e["acc_b"] for e in run]
    return vals + [vals[-1] if vals else 0.0] * (epochs - len(vals))


def fit_surrogate(seed: int = 0) -> Surrogate:
    from scipy.stats import spearmanr
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.model_selection import KFold, cross_val_predict

    rows = load_table()
    base = [r for r in rows if r["seed"] == 0]
    E = base[0]["epochs"]
    X = np.array([features(r["config"]) for r in base])
    models, quality = {}, {}
    for schedule in ("cosine", "wsd"):
        Y = np.array([curve_of(r["runs"][schedule], E) for r in base])
        model = ExtraTreesRegressor(n_estimators=300, min_samples_leaf=2, random_state=seed, n_jobs=1)
        pred = cross_val_predict(model, X, Y, cv=KFold(5, shuffle=True, random_state=seed))
        quality[schedule] = {
            "cv_spearman_final": round(float(spearmanr(pred[:, -1], Y[:, -1]).statistic), 3),
            "cv_mae_final": round(float(np.mean(np.abs(pred[:, -1] - Y[:, -1]))), 4),
        }
        if schedule == "cosine":
            quality["cv_predictions"] = pred  # for the rank correlations; not saved
        models[schedule] = model.fit(X, Y)
    T = np.array([math.log(max(1e-3, r["runs"]["cosine"][-1]["wall_s"] / len(r["runs"]["cosine"]))) for r in base])
    time_model = ExtraTreesRegressor(n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1).fit(X, T)
    return Surrogate(models, time_model, noise_of(rows, E), E, quality)


def draw_configs(n: int, seed: int) -> list[dict]:
    """`n` configs of the shipped space, drawn at random as random search draws them."""
    cfg_space = space()
    fixed = {k: v for k, v in cfg_space.items() if not isinstance(v, tuple)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    dists = optuna_distributions(cfg_space)
    return [{**fixed, **study.ask(dists).params} for _ in range(n)]


def rank_correlations(sur: Surrogate, rows: list[dict], n: int = 2000) -> dict:
    """Per epoch e: Spearman of a run's reading at e on one validation half with its own final reading on the other
    half (so shared evaluation noise does not inflate it), in the table (its 400 seed-0 runs, half a against half b,
    as benchmarks/learning_curves.py --report computes it) and in the surrogate with its noise: on `n` fresh configs
    of the space (what the replay draws), and on the table's configs with out-of-fold means (no config scored by a
    model that saw it). Also the surrogate's reading against the noise-free final, what the user gets."""
    from scipy.stats import spearmanr

    E = sur.epochs
    base = [r for r in rows if r["seed"] == 0]

    def rho(x, y) -> float:
        return round(float(spearmanr(x, y).statistic), 3)

    def at(run, e, half):
        return run[e - 1][f"acc_{half}"] if len(run) >= e else 0.0

    table = [
        rho([at(r["runs"]["cosine"], e, "a") for r in base], [at(r["runs"]["cosine"], E, "b") for r in base])
        for e in range(1, E + 1)
    ]

    def simulated(means: np.ndarray, seed: int) -> tuple[list, list]:
        rng = np.random.default_rng(seed)
        a, b = [], []
        for m in means:
            dev, half = sur.noise.draw(m[-1], rng)
            a.append(np.clip(m + dev + half, 0, 1))  # the reading on one half
            b.append(np.clip(m + dev - half, 0, 1))  # the same run on the other half
        a, b = np.array(a), np.array(b)
        return (
            [rho(a[:, e], b[:, -1]) for e in range(E)],
            [rho(a[:, e], means[:, -1]) for e in range(E)],
        )

    fresh = sur.models["cosine"].predict(np.array([features(c) for c in draw_configs(n, seed=0)]))
    surrogate, vs_truth = simulated(fresh, seed=1)
    surrogate_cv, _ = simulated(sur.quality["cv_predictions"], seed=2)
    return {
        "epochs": list(range(1, E + 1)),
        "table": table,
        "surrogate": surrogate,
        "surrogate_cv": surrogate_cv,
        "surrogate_vs_true_final": vs_truth,
    }


# --------------------------------------------------------------------------- a variant of the searcher


class RungTPESampler(optuna.samplers.BaseSampler):
    """Optuna's TPE fitted on one ASHA rung at a time: BOHB's rule (Falkner et al., 2018) on Optuna's public sampler
    interface. A variant the replay measured (`grutune_rung*` arms): it did not beat grutune's plain TPE, so it lives
    here, not in the search stage.

    Plain TPE on a pruned study ranks every COMPLETE trial above every PRUNED one, and PRUNED ones by the last epoch
    they reached: early in a sweep its "good" set is whichever trials ASHA happened to promote first (Ray's ASHA
    promotes the first trial to reach an empty rung, whatever its score). This sampler instead compares like with
    like: it fits TPE on the readings at the highest rung that holds at least `min_points` of them (BOHB's
    d + 3 by default, d the searched hyperparameters; the lowest rung until then), each trial's value being its
    reading at that rung. A diverged trial counts at its worst value at every rung past its divergence; running
    trials without a reading there are left to TPE's constant liar. Random for the first `startup_trials` finished
    trials, as TPE. Single-objective studies only.

    It hands TPE a view of the study: an in-memory Optuna study with one trial per reading, built once per
    suggestion, so nothing private of Optuna's is touched and the journal holds only what Tune did."""

    def __init__(
        self,
        *,
        seed: int,
        startup_trials: int,
        rungs: Sequence[int],
        min_points: int | None = None,
        multivariate: bool = False,
        constant_liar: bool = True,
    ):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._tpe = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=0, constant_liar=constant_liar, multivariate=multivariate
            )
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self.startup_trials, self.rungs, self.min_points = startup_trials, sorted(set(rungs)), min_points
        self._view: tuple | None = None

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()
        self._random.reseed_rng()

    def rung(self, trials: Sequence[optuna.trial.FrozenTrial], dims: int) -> int:
        """The rung TPE is fitted on: the highest with `min_points` readings (the lowest until one has)."""
        need = self.min_points or dims + 3
        for b in reversed(self.rungs):
            if sum(1 for t in trials if self._reading(t, b) is not None) >= need:
                return b
        return self.rungs[0]

    @staticmethod
    def _reading(t: optuna.trial.FrozenTrial, b: int) -> float | None:
        steps = t.intermediate_values
        if b in steps:
            return float(steps[b])
        if steps and t.user_attrs.get(DIVERGED) and max(steps) < b:
            return float(steps[max(steps)])  # the worst value it reported, at every rung it never reached
        return None

    def _view_of(self, study: optuna.Study, trial: optuna.trial.FrozenTrial):
        if self._view is not None and self._view[0] == trial.number:
            return self._view[1:]
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        others = [t for t in study.get_trials(deepcopy=False, states=states) if t.number != trial.number]
        if sum(t.state.is_finished() for t in others) < self.startup_trials:
            self._view = None
            return None
        dims = len({k for t in others for k in t.distributions})
        b = self.rung([t for t in others if t.state.is_finished() or t.intermediate_values], dims)
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" per suggestion
        try:
            view = optuna.create_study(direction=study.direction)
        finally:
            optuna.logging.set_verbosity(verbosity)
        for t in others:
            value = self._reading(t, b)
            if value is not None:
                view.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=value))
            elif t.state == optuna.trial.TrialState.RUNNING and t.params:
                view.add_trial(
                    optuna.trial.create_trial(
                        state=optuna.trial.TrialState.RUNNING, params=t.params, distributions=t.distributions
                    )
                )
        view.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING))  # the one being sampled
        self._view = (trial.number, view, view.get_trials(deepcopy=False)[-1])
        return self._view[1:]

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        view = self._view_of(study, trial) if search_space else None
        return self._tpe.sample_relative(*view, search_space) if view else {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        view = self._view_of(study, trial)
        if view is None:
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        return self._tpe.sample_independent(*view, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._view = None


class OwnSamplerSearcher(GrutuneSearcher):
    """grutune's searcher with another sampler in place of its TPE (the study, journal and protocol unchanged):
    `sampler` makes it, seeded as grutune seeds its TPE (past the trials the journal holds)."""

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def _open(self) -> optuna.Study:
        fresh = self._study is None
        study = super()._open()
        if fresh:
            study.sampler = self.sampler(self.seed + len(study.get_trials(deepcopy=False)))
        return study


class RungSearcher(OwnSamplerSearcher):
    """grutune's searcher with `RungTPESampler`."""

    def __init__(self, *, rungs: Sequence[int], rung_min_points: int | None = None, **kw):
        super().__init__(**kw)
        self.rungs, self.rung_min_points = tuple(rungs), rung_min_points

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return RungTPESampler(
            seed=seed,
            startup_trials=self.startup_trials,
            rungs=self.rungs,
            min_points=self.rung_min_points,
            multivariate=self.multivariate,
            constant_liar=self.constant_liar,
        )


class StartedStartupSampler(optuna.samplers.BaseSampler):
    """Random for the first `startup_trials` trials *started*, then Optuna's TPE (itself random until `min_finished`
    trials have finished). A variant the replay measures (`grutune_started*` arms) against Optuna's own rule, which
    counts finished trials: with N trials in flight, TPE's first suggestion waits for `startup_trials` to finish,
    by when up to N - 1 more random trials have started, so the random share of a sweep grows with N. Counted in
    started trials, the share stays what `startup_trials` says at any N."""

    def __init__(
        self,
        *,
        seed: int,
        startup_trials: int,
        min_finished: int,
        multivariate: bool = False,
        constant_liar: bool = True,
    ):
        self._tpe = tpe_sampler(seed, min_finished, multivariate, constant_liar)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self.startup_trials = startup_trials

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()
        self._random.reseed_rng()

    def _modelled(self, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number >= self.startup_trials  # a trial's number: how many were created before it

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space) if self._modelled(trial) else {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        sampler = self._tpe if self._modelled(trial) else self._random
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._tpe.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._tpe.after_trial(study, trial, state, values)


class StartedSearcher(OwnSamplerSearcher):
    """grutune's searcher with `StartedStartupSampler`; TPE waits for d + 1 finished trials, d the searched
    hyperparameters (BOHB's least for a model)."""

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return StartedStartupSampler(
            seed=seed,
            startup_trials=self.startup_trials,
            min_finished=len(optuna_distributions(self.space)) + 1,
            multivariate=self.multivariate,
            constant_liar=self.constant_liar,
        )


# --------------------------------------------------------------------------- the arms


@functools.cache
def shipped() -> dict:
    """conf/config.yaml's search section: the settings every arm takes unless it names its own."""
    return yaml.safe_load(CONFIG.read_text())["search"]


@dataclass(frozen=True)
class Arm:
    """One way to search. A setting left None is the shipped one (`shipped()`, by `settings`)."""

    name: str
    sampler: str = "tpe"  # tpe | random
    asha: bool = True
    schedule: str = "cosine"  # what a trial's readings are: cosine over max_epochs, or WSD cool-downs at rungs
    grace: int | None = None  # ASHA's grace_period
    rf: float | None = None  # ASHA's reduction_factor
    startup: int | float | None = None  # TPE's random start-up trials; a float is a share of the expected trials
    optuna_pruner: bool = False  # Optuna's own TPE + Hyperband, not the Tune searcher + ASHA
    multivariate: bool | None = None  # Optuna's multivariate TPE
    liar: bool | None = None  # Optuna's constant liar (running trials count as poor results)
    rung_tpe: bool = False  # TPE fitted on one rung at a time (BOHB's rule, `RungTPESampler`)
    rung_min_points: int | None = None  # readings a rung needs before TPE is fitted on it (None: BOHB's d + 3)
    startup_started: bool = False  # the start-up counted in trials started, not finished (`StartedStartupSampler`)
    startup_floor: bool = False  # start-up at least the trials that can run at once


def settings(arm: Arm) -> Arm:
    """The arm with every setting it leaves None taken from conf/config.yaml."""
    s = shipped()
    own = {
        "grace": s["grace_period"],
        "rf": s["reduction_factor"],
        "startup": s["startup_trials"],
        "multivariate": s["multivariate"],
        "liar": s["constant_liar"],
    }
    return replace(arm, **{k: v for k, v in own.items() if getattr(arm, k) is None})


def legacy(name: str, **kw) -> Arm:
    """A variant as the replay measured it before the shipped settings were its base: grace period 1, reduction
    factor 3, 8 start-up trials, univariate TPE with the constant liar, unless named."""
    return Arm(name, **{"grace": 1, "rf": 3, "startup": 8, "multivariate": False, "liar": True, **kw})


ARMS = {
    "random": Arm("random", sampler="random", asha=False),
    "random_asha": Arm("random_asha", sampler="random"),  # random search under the shipped ASHA
    "tpe": Arm("tpe", asha=False),
    "grutune": Arm("grutune"),  # what ships: conf/config.yaml's search section, nothing named
    # Optuna out of the box: TPESampler() and HyperbandPruner() at their defaults
    "optuna_hb": Arm("optuna_hb", optuna_pruner=True, grace=1, rf=3, startup=10, multivariate=False, liar=False),
    # measured before (seeds 0-99, the old noise), kept with the settings they ran at
    "grutune_v0": legacy("grutune_v0"),
    "grutune_wsd": legacy("grutune_wsd", schedule="wsd"),
    "grutune_mv": legacy("grutune_mv", multivariate=True),
    "grutune_s30": legacy("grutune_s30", startup=0.3),  # the old files' `grutune`
    "grutune_mv_s30": legacy("grutune_mv_s30", multivariate=True, startup=0.3),
    "grutune_rf2": legacy("grutune_rf2", rf=2),
    "grutune_g3": legacy("grutune_g3", grace=3),
    "tpe_mv": legacy("tpe_mv", asha=False, multivariate=True),
    "grutune_s20": legacy("grutune_s20", startup=0.2),
    "grutune_s45": legacy("grutune_s45", startup=0.45),
    "grutune_s30_rf2": legacy("grutune_s30_rf2", startup=0.3, rf=2),
    "grutune_s30_g2": legacy("grutune_s30_g2", startup=0.3, grace=2),
    "grutune_no_liar": legacy("grutune_no_liar", startup=0.3, liar=False),
    "grutune_s15": legacy("grutune_s15", startup=0.15),
    "grutune_s10": legacy("grutune_s10", startup=0.1),
    "grutune_s30_rf4": legacy("grutune_s30_rf4", startup=0.3, rf=4),
    "grutune_rung": legacy("grutune_rung", startup=0.3, rung_tpe=True),
    "grutune_rung_s15": legacy("grutune_rung_s15", startup=0.15, rung_tpe=True),
    "grutune_rung1": legacy("grutune_rung1", startup=0.3, rung_tpe=True, rung_min_points=10**9),  # first rung only
    "grutune_rung_m24": legacy("grutune_rung_m24", startup=0.3, rung_tpe=True, rung_min_points=24),
    "grutune_started": legacy("grutune_started", startup=0.3, startup_started=True),
    "grutune_started_s20": legacy("grutune_started_s20", startup=0.2, startup_started=True),
    "grutune_s15_floor": legacy("grutune_s15_floor", startup=0.15, startup_floor=True),
}
SPACE = None


def space() -> dict:
    """The default search space as the searcher takes it (params.yaml's validated form)."""
    global SPACE
    if SPACE is None:
        raw = shipped()["space"]
        SPACE = {k: ((next(iter(v)), next(iter(v.values()))) if isinstance(v, dict) else v) for k, v in raw.items()}
    return SPACE


def startup_count(arm: Arm, budget: float, epochs: int) -> int:
    """TPE's start-up trials for a sweep of `budget` trial-epochs, by the search stage's own rule
    (`grutune.sweep.budget.startup_count`: a share is taken of the trials the budget pays for)."""
    s = shipped()
    sweep = SearchParams.model_validate(
        {
            **s,
            "num_samples": 10**6,  # the budget ends the sweep, not a number of trials
            "max_trial_epochs": int(budget),
            "max_epochs": epochs,
            "grace_period": arm.grace if arm.asha else epochs,
            "reduction_factor": arm.rf,
            "startup_trials": arm.startup,
        }
    )
    return sweep_budget.startup_count(sweep)


def run_sweep(arm: Arm, sur: Surrogate, seed: int, budget: float, in_flight: int, tmp: Path) -> dict:
    """One simulated sweep; returns the user's accuracy, best-so-far by trial-epochs spent, and the trials in flight
    it reached (the most at once, and the mean over its simulated time)."""
    arm = settings(arm)
    E = sur.epochs
    startup = startup_count(arm, budget, E)
    if arm.startup_floor:  # at least as many start-up trials as can run at once (slots, or what the budget pays for)
        startup = max(startup, min(in_flight, int(budget // E)))
    if arm.sampler == "random":
        startup = 10**9
    cfg_space = space()
    fixed = {k: v for k, v in cfg_space.items() if not isinstance(v, tuple)}
    rung_set = set(asha_rungs(arm.grace, arm.rf, E))
    noise: dict[str, np.ndarray] = {}

    def reading(c: dict, epoch: int) -> float:
        """A trial's reported accuracy: the same config draws the same noise in every arm of a seed (paired)."""
        key = json.dumps(c, sort_keys=True)
        if key not in noise:
            r = np.random.default_rng([seed, int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)])
            dev, half = sur.noise.draw(truth(sur, c), r)
            noise[key] = dev + half
        mean = sur.curve(arm.schedule, c)[epoch - 1]
        return float(np.clip(mean + noise[key][epoch - 1], 0.0, 1.0))

    def cost(epoch: int) -> float:  # trial-epochs an epoch costs, with WSD's cool-down copy at a rung
        return 1.0 + (0.2 * epoch if arm.schedule == "wsd" and epoch in rung_set else 0.0)

    if arm.optuna_pruner:
        study = optuna.create_study(
            study_name=f"replay-{seed}",
            direction="maximize",
            sampler=optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=startup, constant_liar=arm.liar, multivariate=arm.multivariate
            ),
            pruner=optuna.pruners.HyperbandPruner(min_resource=arm.grace, max_resource=E, reduction_factor=arm.rf),
        )
        searcher = asha = None
    else:
        journal = tmp / f"{arm.name}-{seed}.journal"
        journal.unlink(missing_ok=True)
        bind(
            f"replay-{arm.name}-{seed}",
            SweepRun(
                journal=journal,
                target=10**6,
                max_concurrent=in_flight,
                segment="tune-1",
                max_trial_epochs=int(budget),
                min_trial_epochs=arm.grace if arm.asha else E,
            ),
        )
        rung_args = (
            {"rungs": asha_rungs(arm.grace, arm.rf, E), "rung_min_points": arm.rung_min_points} if arm.rung_tpe else {}
        )
        searcher = (RungSearcher if arm.rung_tpe else StartedSearcher if arm.startup_started else GrutuneSearcher)(
            **rung_args,
            study_name=f"replay-{arm.name}-{seed}",
            space=cfg_space,
            seed=seed,
            metric="val_accuracy",
            mode="max",
            max_epochs=E,
            startup_trials=startup,
            multivariate=arm.multivariate,
            constant_liar=arm.liar,
        )
        from ray.tune.schedulers import ASHAScheduler

        np.random.seed(seed)  # ASHA draws its bracket from numpy's global generator
        asha = (
            ASHAScheduler(
                time_attr="epoch",
                metric="val_accuracy",
                mode="max",
                max_t=E,
                grace_period=arm.grace,
                reduction_factor=arm.rf,
            )
            if arm.asha
            else None
        )

    spent, now, n = 0.0, 0.0, 0
    events: list = []  # (time, trials started by then, a unique count: ties never reach the trial dicts, trial)
    order = itertools.count()
    best_obs, picked, curve = -1.0, None, []

    def start() -> bool:
        nonlocal n
        tid = f"t{n}"
        if arm.optuna_pruner:  # the searcher's budget rule, for Optuna's own loop too
            if not budget_allows_trial(study.get_trials(deepcopy=False), int(budget), E, arm.grace):
                return False
            ot = study.ask(optuna_distributions(cfg_space))
            config = {**fixed, **ot.params}
            handle = ot
        else:
            sug = searcher.suggest(tid)
            if not isinstance(sug, dict):
                return False
            config, handle = {**fixed, **sug}, None
            if asha:
                asha.on_trial_add(None, SimpleNamespace(trial_id=tid))
        trial = {"id": tid, "config": config, "epoch": 0, "handle": handle, "dt": sur.epoch_s(config)}
        heapq.heappush(events, (now + trial["dt"] * cost(1), n, next(order), trial))
        n += 1
        return True

    running = 0
    while running < in_flight and start():
        running += 1
    peak, area, last = running, 0.0, 0.0  # in flight: the most at once, and its integral over simulated time
    while events and spent < budget:
        now, _, _, t = heapq.heappop(events)
        area, last = area + running * (now - last), now
        t["epoch"] += 1
        e = t["epoch"]
        spent += cost(e)
        v = reading(t["config"], e)
        if v > best_obs:
            best_obs, picked = v, t["config"]
        curve.append((spent, truth(sur, picked)))
        result = {"epoch": e, "val_accuracy": v}
        stop = e >= E
        if arm.optuna_pruner:
            t["handle"].report(v, e)
            if not stop and t["handle"].should_prune():
                study.tell(t["handle"], state=optuna.trial.TrialState.PRUNED)
                stop = "told"
            elif stop:
                study.tell(t["handle"], v)
        else:
            searcher.on_trial_result(t["id"], result)
            if asha and not stop:
                stop = asha.on_trial_result(None, SimpleNamespace(trial_id=t["id"]), result) == "STOP"
            if stop:
                if asha:
                    asha.on_trial_complete(None, SimpleNamespace(trial_id=t["id"]), result)
                searcher.on_trial_complete(t["id"], result)
        if stop:
            running -= 1
            while running < in_flight and spent < budget and start():  # Tune fills every free slot it can
                running += 1
            peak = max(peak, running)
        else:
            heapq.heappush(events, (now + t["dt"] * cost(e + 1), n, next(order), t))
    return {
        "user": truth(sur, picked),
        "trials": n,
        "curve": curve,
        "in_flight_max": peak,
        "in_flight_mean": area / now if now > 0 else float(running),
    }


def truth(sur: Surrogate, c: dict | None) -> float:
    """What the user gets from a picked config: its noise-free final accuracy under the final training's cosine."""
    return float(sur.curve("cosine", c)[-1]) if c else 0.0


# --------------------------------------------------------------------------- many seeds

_SUR: Surrogate | None = None


def _init():
    global _SUR
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    _SUR = fit_surrogate()


def _one(arm_name: str, seed: int, budget: float, in_flight: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = run_sweep(ARMS[arm_name], _SUR, seed, budget, in_flight, Path(tmp))
    at = {}
    for frac in (0.25, 0.5, 1.0):
        vals = [v for s, v in out["curve"] if s <= frac * budget]
        at[str(frac)] = vals[-1] if vals else 0.0
    return {
        "arm": arm_name,
        "seed": seed,
        "budget": budget,
        "in_flight": in_flight,
        "user": out["user"],
        "trials": out["trials"],
        "in_flight_max": out["in_flight_max"],
        "in_flight_mean": round(out["in_flight_mean"], 3),
        "at": at,
        "curve": changes(out["curve"]),
    }


def changes(curve: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Best-so-far (trial-epochs spent, user's accuracy) where it changes: what the summary reads, kept small."""
    out = []
    for s, v in curve:
        if not out or round(v, 4) != out[-1][1]:
            out.append((round(s, 2), round(v, 4)))
    return out


BOOTSTRAP = 2000  # resamples of the seeds behind every interval


def mean_interval(d: Sequence[float]) -> list[float]:
    """95% percentile-bootstrap interval of the mean of paired differences, resampling seeds."""
    d = np.asarray(d, dtype=float)
    idx = np.random.default_rng(0).integers(0, len(d), size=(BOOTSTRAP, len(d)))
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def reach_interval(arm: dict[int, dict], random: dict[int, dict]) -> list[float] | None:
    """95% bootstrap interval of "trial-epochs to random search's final median": resample the seeds both arms ran,
    and take random's final median and the arm's median first-reach time from the same resample; inf = never."""
    seeds = sorted(set(arm) & set(random))
    if len(seeds) < 5:
        return None
    best = []  # per seed: trial-epochs spent, and the best-so-far reached by then (so a first reach is a search)
    for s in seeds:
        t, v = zip(*arm[s]["curve"]) if arm[s]["curve"] else ((math.inf,), (-math.inf,))
        best.append((np.asarray(t, dtype=float), np.maximum.accumulate(np.asarray(v, dtype=float))))
    finals = np.array([random[s]["user"] for s in seeds])
    rng = np.random.default_rng(0)
    out = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(seeds), len(seeds))
        ref = np.median(finals[idx])
        reach = []
        for i in idx:
            t, v = best[i]
            k = int(np.searchsorted(v, ref))  # the first reading at or above ref
            reach.append(t[k] if k < len(t) else math.inf)
        out.append(np.median(reach))
    lo, hi = np.percentile(out, 2.5, method="lower"), np.percentile(out, 97.5, method="higher")  # inf stays inf
    return [float(lo), float(hi)]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the k-th smallest of m p-values times (m - k + 1), kept monotone, at most 1."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    out, running = [0.0] * len(pvalues), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - k) * pvalues[i]))
        out[i] = running
    return out


def paired(d: Sequence[float]) -> dict:
    """One paired comparison on the stored accuracies: mean difference with its bootstrap interval, wins (d > 0),
    ties (d == 0: both picks score the same) and losses (d < 0), and the Wilcoxon signed-rank p-value (zero
    differences dropped; 1.0 when every difference is zero)."""
    from scipy.stats import wilcoxon

    return {
        "mean_diff": round(float(np.mean(d)), 4),
        "mean_diff_ci95": mean_interval(d),
        "median_diff": round(float(np.median(d)), 4),
        "wins": sum(x > 0 for x in d),
        "ties": sum(x == 0 for x in d),
        "losses": sum(x < 0 for x in d),
        "of": len(d),
        "wilcoxon_p": float(wilcoxon(d).pvalue) if any(d) else 1.0,
    }


def adjust(tests: dict[tuple, list[dict]], name: str) -> None:
    """Holm over one family of tests, written into each comparison as `name`: `tests` maps a test to the comparisons
    that report it (a pair of arms is reported from both sides, with one p-value). A test whose every difference is
    zero tests nothing: it is left out of the family, and its adjusted p-value is 1."""
    family = [t for t, reports in tests.items() if reports[0]["ties"] < reports[0]["of"]]
    adjusted = dict(zip(family, holm([tests[t][0]["wilcoxon_p"] for t in family])))
    for t, reports in tests.items():
        for v in reports:
            v[name] = adjusted.get(t, 1.0)


def summarise(runs: list[dict], arms: list[str], budgets: list[float], flights: list[int]) -> dict:
    out = {}
    for b in budgets:
        for f in flights:
            key = f"{b:g}x{f}"
            by = {
                a: {r["seed"]: r for r in runs if r["arm"] == a and r["budget"] == b and r["in_flight"] == f}
                for a in arms
            }
            ref_med = statistics.median(r["user"] for r in by["random"].values()) if by.get("random") else None
            block = {}
            for a in arms:
                if not by[a]:
                    continue
                vals = [r["user"] for r in by[a].values()]
                q = np.percentile(vals, [25, 50, 75])
                row = {
                    "seeds": len(vals),
                    "median": round(float(q[1]), 4),
                    "iqr": [round(float(q[0]), 4), round(float(q[2]), 4)],
                    "mean": round(float(np.mean(vals)), 4),
                    "trials_median": statistics.median(r["trials"] for r in by[a].values()),
                    "at_25_50_100": [
                        round(statistics.median(r["at"][k] for r in by[a].values()), 4) for k in ("0.25", "0.5", "1.0")
                    ],
                }
                reached = [r for r in by[a].values() if "in_flight_max" in r]
                if reached:  # what the budget rule let run at once, against the nominal level f
                    peaks = [r["in_flight_max"] for r in reached]
                    row["in_flight_reached"] = {
                        "max_median": statistics.median(peaks),
                        "max_range": [min(peaks), max(peaks)],
                        "mean_median": round(statistics.median(r["in_flight_mean"] for r in reached), 2),
                    }
                if ref_med is not None:  # trial-epochs to reach random search's final median (median over seeds)
                    reach = [next((s for s, v in r["curve"] if v >= ref_med), math.inf) for r in by[a].values()]
                    row["epochs_to_random_median"] = statistics.median(reach)
                    row["epochs_to_random_median_ci95"] = reach_interval(by[a], by["random"])
                for other in REFERENCES:
                    if other == a or not by.get(other):
                        continue
                    seeds = sorted(set(by[a]) & set(by[other]))
                    if len(seeds) >= 5:
                        row[f"vs_{other}"] = paired([by[a][s]["user"] - by[other][s]["user"] for s in seeds])
                if f != 1:  # the price of trials in flight: the same arm and seeds, one trial at a time
                    ones = {r["seed"]: r for r in runs if r["arm"] == a and r["budget"] == b and r["in_flight"] == 1}
                    seeds = sorted(set(by[a]) & set(ones))
                    if len(seeds) >= 5:
                        row["vs_one_at_a_time"] = paired([by[a][s]["user"] - ones[s]["user"] for s in seeds])
                block[a] = row
            if block:  # a budget and number in flight the file holds no run of are left out
                out[key] = block
    # Holm's families: the pairs of arms (each pair once, though both arms' rows report it), and the price of trials
    # in flight (each arm against itself one at a time); each adjusted per budget and in-flight level, and over the
    # file
    families: dict[tuple, dict] = {}
    for key, block in out.items():
        for a, row in block.items():
            for k, v in row.items():
                if k.startswith("vs_"):
                    test = ("in_flight", a) if k == "vs_one_at_a_time" else ("arms", *sorted((a, k[3:])))
                    families.setdefault((key, test[0]), {}).setdefault(test, []).append(v)
                    families.setdefault(("file", test[0]), {}).setdefault((key, *test), []).append(v)
    for (scope, _), tests in families.items():
        adjust(tests, "wilcoxon_p_holm_file" if scope == "file" else "wilcoxon_p_holm")
    return out


def primary(summary: dict) -> dict:
    """The declared primary endpoint (`PRIMARY`), read from the summary."""
    key = f"{PRIMARY['budget']:g}x{PRIMARY['in_flight']}"
    found = summary.get(key, {}).get(PRIMARY["arm"], {}).get(f"vs_{PRIMARY['versus']}")
    return {**PRIMARY, "measure": "noise-free final accuracy of the picked config", "result": found}


def parse_seeds(spec: str) -> list[int]:
    """ "1000-1199" (inclusive), "3,5,8", or a mix of both."""
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    return out


def code_state() -> dict:
    """The commit the runs are made at, and whether the replay's code differs from it (uncommitted changes)."""
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "benchmarks/search_replay.py", "src", "conf"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    return {"git_commit": machine()["git_commit"], "uncommitted_changes": bool(dirty)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--arms",
        default="random,random_asha,grutune,optuna_hb",
        help=f"comma-separated, of {', '.join(ARMS)} (default: %(default)s)",
    )
    ap.add_argument(
        "--seeds",
        default=f"{FRESH_SEEDS[0]}-{FRESH_SEEDS[-1]}",
        help="e.g. 1000-1199 (the fresh seeds, the default) or 0-99 (the old files' seeds)",
    )
    ap.add_argument("--budgets", default="60,200", help="trial-epochs per sweep")
    ap.add_argument("--in-flight", default="1,2,32", help="trials at once, e.g. 1,8,32,52")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes running sweeps")
    ap.add_argument("--summary-every", type=int, default=10, help="seeds between summaries (the runs: every seed)")
    ap.add_argument("--name", default="search_replay_faithful")
    args = ap.parse_args()
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        sys.exit(f"error: unknown arm(s) {', '.join(unknown)}; valid: {', '.join(ARMS)}")
    seeds = parse_seeds(args.seeds)
    budgets = [float(b) for b in args.budgets.split(",")]
    flights = [int(f) for f in args.in_flight.split(",")]
    path = RESULTS / f"{args.name}.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    runs = stored.get("runs", [])
    done = {(r["arm"], r["seed"], r["budget"], r["in_flight"]) for r in runs}
    todo = [  # seed by seed: every seed written holds all its arms and settings, so partial files are paired
        (a, s, b, f) for s in seeds for b in budgets for f in flights for a in arms if (a, s, b, f) not in done
    ]
    _init()
    rows = load_table()
    correlations = stored.get("surrogate", {}).get("rank_correlations") or rank_correlations(_SUR, rows)
    quality = {k: v for k, v in _SUR.quality.items() if k != "cv_predictions"}
    print(f"surrogate: {quality}; noise sd per epoch {_SUR.noise.sd_per_epoch()}", flush=True)
    print("rank correlation of the reading at epoch e with the run's own final reading (Spearman)")
    print("  epoch  table  surrogate  surrogate(cv)  surrogate vs true final")
    for k, e in enumerate(correlations["epochs"]):
        print(
            f"  {e:5d}  {correlations['table'][k]:5.3f}  {correlations['surrogate'][k]:9.3f}  "
            f"{correlations['surrogate_cv'][k]:13.3f}  {correlations['surrogate_vs_true_final'][k]:23.3f}"
        )
    print(f"{len(todo)} sweeps to run", flush=True)
    t0 = time.time()
    # The summary covers every run the file holds, not only those asked for now; with nothing left to run, the file
    # keeps the command, machine and commit that made its runs, and only its summary is computed anew.
    arms = list(dict.fromkeys([*stored.get("arms", {}), *arms]))
    budgets = sorted({*budgets, *(r["budget"] for r in runs)})
    flights = sorted({*flights, *(r["in_flight"] for r in runs)})
    made_by = stored if stored and not todo else {"command": " ".join(sys.argv), "machine": None}
    code = stored.get("code") if stored and not todo else code_state()
    state = {"summary": stored.get("summary", {}), "summary_runs": stored.get("summary_runs")}

    def write(summarise_now: bool) -> dict:
        if summarise_now:  # bootstraps: computed once per write, and only every few seeds
            state.update(summary=summarise(runs, arms, budgets, flights), summary_runs=len(runs))
        save(
            args.name,
            {
                "command": made_by["command"],
                "code": code,
                "seeds": {"fresh": f"{FRESH_SEEDS[0]}-{FRESH_SEEDS[-1]}", "asked": args.seeds},
                "primary": primary(state["summary"]),
                "surrogate": {
                    **quality,
                    "noise_sd_per_epoch": _SUR.noise.sd_per_epoch(),
                    "rank_correlations": correlations,
                },
                "arms": {a: stored.get("arms", {}).get(a) or asdict(settings(ARMS[a])) for a in arms},  # as they ran
                "summary_runs": state["summary_runs"],  # the runs the summary covers (it lags the runs between)
                "summary": state["summary"],
                "runs": runs,
            },
            made_by["machine"],
        )
        return state["summary"]

    pending = {s: sum(1 for u in todo if u[1] == s) for s in seeds}
    finished = 0
    with cf.ProcessPoolExecutor(args.workers, initializer=_init) as pool:
        futures = [pool.submit(_one, *u) for u in todo]
        for k, fut in enumerate(cf.as_completed(futures), 1):
            run = fut.result()
            runs.append({**run, "commit": code["git_commit"]})
            pending[run["seed"]] -= 1
            if pending[run["seed"]] == 0:  # a seed is whole: write it
                finished += 1
                write(summarise_now=finished % args.summary_every == 0 and k < len(todo))
                print(f"[{k}/{len(todo)}] seed {run['seed']} done, {time.time() - t0:.0f} s", flush=True)
    summary = write(summarise_now=True)  # also when every run was done already: the summary as this code computes it
    for key, block in summary.items():
        print(f"\n{key} (budget x in flight)")
        for a, row in block.items():
            reached = row.get("in_flight_reached", {})
            print(
                f"  {a:12s} median {row['median']:.4f} iqr {row['iqr']} in flight max {reached.get('max_median')} "
                f"mean {reached.get('mean_median')} "
                + " ".join(
                    f"{k}: {v['wins']}-{v['ties']}-{v['losses']} p={v['wilcoxon_p']:.2g} "
                    f"(Holm {v['wilcoxon_p_holm']:.2g}) d={v['mean_diff']:+.4f}"
                    for k, v in row.items()
                    if k.startswith("vs_")
                )
            )
    p = primary(summary)
    print(
        f"\nprimary: {p['arm']} - {p['versus']}, {p['budget']:g} trial-epochs, {p['in_flight']} in flight:",
        p["result"],
    )


if __name__ == "__main__":
    main()
