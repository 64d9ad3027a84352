"""Replay benchmark: grutune's real searcher and Ray Tune's real ASHA on a surrogate of the learning-curve table.

    python benchmarks/search_replay.py --workers 1
    # the declared run: fresh seeds 1000-1199, arms random, random_asha, grutune, optuna_hb at 60 and 200
    # trial-epochs, 1, 2 and 32 in flight -> benchmarks/results/search_replay_faithful.json
    python benchmarks/search_replay.py --seeds 1000-1001 --name search_replay_try   # a quick look, a throwaway file
    TMPDIR=/dev/shm python benchmarks/search_replay.py --screen --workers 1
    # the candidates for many trials in flight (below), seeds 3000-3199, 200 trial-epochs, 1, 2 and 32 in flight
    # -> benchmarks/results/search_replay_candidates.json (TMPDIR: the sweeps' journals, fsynced at every write)
    TMPDIR=/dev/shm python benchmarks/search_replay.py --confirm grutune_promote --workers 1
    # a candidate that met the bar, confirmed on seeds 4000-4199 -> search_replay_candidates_confirm.json

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

Many trials in flight (issue 36, item 3). At 32 in flight grutune loses to itself one at a time; the candidates
(`CANDIDATES`), each today's default with one change, and how each maps onto what could ship:
- `grutune_gp`: Optuna's GPSampler in place of TPE, under Ray's ASHA as today (`RungGPSampler`). GPSampler models
  COMPLETE trials only, and ASHA leaves most trials PRUNED, so it is fitted through the rung view of BOHB's rule
  (each trial's reading at the highest rung with d + 3 readings, an in-memory study built with Optuna's public
  create_trial); running trials it imputes itself: from Optuna 4.9 by fantasies in a q-batch log expected
  improvement (4.8: a constant liar at the best value; before: ignored). grutune supports Optuna 4.0 on, so the arm
  refuses an Optuna older than 4.9 (`gp_pending_supported`), and shipping it would raise the pin. Shipping: a
  sampler in `GrutuneSearcher._open`, as `OwnSamplerSearcher` does here.
- `grutune_promote`: ASHA as its paper states it (`PromotionASHA`): a trial pauses at every rung and a free slot
  promotes the best unpromoted trial of the top 1/reduction_factor of the highest rung that has one, else starts a
  new trial. Shipping: a Tune `TrialScheduler` (on the public `FIFOScheduler` base) whose on_trial_result returns
  PAUSE at a rung and whose choose_trial_to_run resumes the trial to promote (Tune restores it from its checkpoint;
  grutune's trials checkpoint every epoch, and a cosine over max_epochs is a function of the epoch, so a resumed
  trial trains as an unpaused one would) before a new one; the searcher counts running, not paused, trials against
  max_concurrent_trials and leaves the budget to the scheduler; TPE sees paused trials through `PausedTPESampler`.
  The replay charges nothing for a pause and a resume (Tune's restore), which favours the paused schedulers.
- `grutune_pasha`: the same with PASHA's progressive top rung (`PromotionASHA(progressive=True)`; Bohdal et al.,
  ICLR 2023, as Syne Tune ships it; Ray Tune has none). With the shipped rungs (2, 6, 9 epochs) it has one decision
  to make: whether trials go past 6 epochs.
- `random_top_k`: one epoch for every config, then the top K to the end (`TopK`, `top_k_split`: at 200
  trial-epochs 104 random configs, the 12 best at epoch 1 to all 9 epochs: exactly 200). It needs no model; its
  configs are random + ASHA's, in the same order. Shipping: two Tune runs, the first of n trials with max_t 1, the
  second resuming the k best from their checkpoints; or a scheduler as above.
Schedulers that pause run in `run_paused_sweep`, the others in `run_sweep`. The declared comparison (`SCREEN`,
`verdict`), fixed before the runs: each candidate minus today's default (`grutune`) and minus random + ASHA at 200
trial-epochs and 1, 2 and 32 in flight, on seeds never used before (`SCREEN_SEEDS`, 3000-3199), Holm-adjusted over
the 4 candidates x 3 levels compared against the same arm; a candidate meets the bar when it beats today's default
with Holm-adjusted p < 0.01 at one level at least and loses to it at none (no negative mean difference with
unadjusted p < 0.05), judged only when every level holds all 200 seeds. A candidate that meets it is run again on
fresh seeds (`CONFIRM_SEEDS`, 4000-4199, `--confirm`) before it may become the default.
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
# Many trials in flight (issue 36, item 3), declared before either run: the candidates, screened on seeds never used
# before against today's default and random + ASHA; a candidate that meets the bar (`verdict`) is confirmed on
# seeds fresh again, with the same arms and settings, and only then may it become the default.
CANDIDATES = ("grutune_gp", "grutune_promote", "grutune_pasha", "random_top_k")
SCREEN_SEEDS = range(3000, 3200)  # the screen; not 0-199, 1000-1199 or 2000-2019 (search_confirm.py)
CONFIRM_SEEDS = range(4000, 4200)  # the confirmation of what wins the screen
SCREEN = {"budget": 200.0, "in_flight": (1, 2, 32), "versus": ("grutune", "random_asha"), "alpha": 0.01, "harm": 0.05}
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
            self.cache[key] = predict(self.models[schedule], [features(c)])[0]
        return self.cache[key]

    def epoch_s(self, c: dict) -> float:
        key = ("time", json.dumps(c, sort_keys=True))
        if key not in self.cache:
            self.cache[key] = float(math.exp(predict(self.time_model, [features(c)])[0]))
        return self.cache[key]


def predict(model, X) -> np.ndarray:
    """`model.predict(X)`, bit for bit, for a fitted scikit-learn forest: its trees' predictions (on float32 input,
    as the forest converts it) summed in their order, then divided by their number, as the forest does, without the
    thread pool it runs even at n_jobs=1, which cost a sweep most of its time at one config a call. Any other model
    (the tests' stand-ins) predicts itself."""
    trees = getattr(model, "estimators_", None)
    if trees is None:
        return model.predict(X)
    X = np.asarray(X, dtype=np.float32)
    out = np.zeros((len(X), model.n_outputs_) if model.n_outputs_ > 1 else len(X))
    for tree in trees:
        out += tree.predict(X, check_input=False)
    return out / len(trees)


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


class ViewSampler(optuna.samplers.BaseSampler):
    """A sampler (`model`) that sees the study through a view: an in-memory Optuna study with the trials `shown`
    makes of the real ones, built once per suggestion, so nothing private of Optuna's is touched and the journal
    holds only what Tune did. Random (seeded as the model) wherever `shown` returns None."""

    def __init__(self, model: optuna.samplers.BaseSampler, seed: int):
        self._model = model
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._view: tuple | None = None

    def shown(self, others: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial] | None:
        raise NotImplementedError

    def reseed_rng(self) -> None:
        self._model.reseed_rng()
        self._random.reseed_rng()

    def _view_of(self, study: optuna.Study, trial: optuna.trial.FrozenTrial):
        if self._view is not None and self._view[0] == trial.number:
            return self._view[1:]
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        others = [t for t in study.get_trials(deepcopy=False, states=states) if t.number != trial.number]
        trials = self.shown(others)
        if trials is None:
            self._view = None
            return None
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" per suggestion
        try:
            view = optuna.create_study(direction=study.direction)
        finally:
            optuna.logging.set_verbosity(verbosity)
        view.add_trials(trials)
        view.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING))  # the one being sampled
        self._view = (trial.number, view, view.get_trials(deepcopy=False)[-1])
        return self._view[1:]

    def infer_relative_search_space(self, study, trial):
        return self._model.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        view = self._view_of(study, trial) if search_space else None
        return self._model.sample_relative(*view, search_space) if view else {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        view = self._view_of(study, trial)
        if view is None:
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        return self._model.sample_independent(*view, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._view = None


class RungTPESampler(ViewSampler):
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
    trials, as TPE. Single-objective studies only. `model` fits another sampler in TPE's place (`RungGPSampler`)."""

    def __init__(
        self,
        *,
        seed: int,
        startup_trials: int,
        rungs: Sequence[int],
        min_points: int | None = None,
        multivariate: bool = False,
        constant_liar: bool = True,
        model: optuna.samplers.BaseSampler | None = None,
    ):
        import warnings

        if model is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                model = optuna.samplers.TPESampler(
                    seed=seed, n_startup_trials=0, constant_liar=constant_liar, multivariate=multivariate
                )
        super().__init__(model, seed)
        self.startup_trials, self.rungs, self.min_points = startup_trials, sorted(set(rungs)), min_points

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

    def shown(self, others):
        if sum(t.state.is_finished() for t in others) < self.startup_trials:
            return None
        dims = len({k for t in others for k in t.distributions})
        b = self.rung([t for t in others if t.state.is_finished() or t.intermediate_values], dims)
        out = []
        for t in others:
            value = self._reading(t, b)
            if value is not None:
                out.append(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=value))
            elif t.state == optuna.trial.TrialState.RUNNING and t.params:
                out.append(
                    optuna.trial.create_trial(
                        state=optuna.trial.TrialState.RUNNING, params=t.params, distributions=t.distributions
                    )
                )
        return out


GP_PENDING_SINCE = (4, 9)  # the first Optuna whose GPSampler imputes running trials by q-batch logEI


def gp_pending_supported(version: str = optuna.__version__) -> bool:
    """Whether this Optuna's GPSampler models running trials as the `grutune_gp` arm measured it (q-batch logEI over
    fantasies of the running trials, from Optuna 4.9; 4.8 imputes them at the best value seen, a constant liar; before
    4.8 it ignores them). grutune's supported range begins at Optuna 4.0, so the arm is declared for 4.9 and later."""
    return tuple(int(x) for x in version.split(".")[:2]) >= GP_PENDING_SINCE


class RungGPSampler(RungTPESampler):
    """Optuna's `GPSampler` (a Gaussian process, Matern 5/2, log expected improvement) fitted through the rung view of
    `RungTPESampler`: GPSampler models COMPLETE trials only, and under ASHA most trials are PRUNED, so it is shown
    each trial's reading at one rung as a finished value. Running trials without a reading there stay RUNNING, and
    GPSampler imputes them itself (from Optuna 4.9 by fantasies in a q-batch logEI, `gp_pending_supported`): the
    pending-trial imputation of parallel Bayesian optimisation, which TPE approximates by its constant liar. Its search
    space is the view's (GPSampler's own reads the study's COMPLETE trials, of which ASHA leaves few)."""

    def __init__(self, *, seed: int, startup_trials: int, rungs: Sequence[int], min_points: int | None = None):
        if not gp_pending_supported():
            raise RuntimeError(
                f"the grutune_gp arm models GPSampler with pending-trial imputation, which needs Optuna >= "
                f"{'.'.join(map(str, GP_PENDING_SINCE))}; this is Optuna {optuna.__version__}"
            )
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            gp = optuna.samplers.GPSampler(seed=seed, n_startup_trials=1, warn_independent_sampling=False)
        super().__init__(seed=seed, startup_trials=startup_trials, rungs=rungs, min_points=min_points, model=gp)

    def infer_relative_search_space(self, study, trial):
        view = self._view_of(study, trial)
        if view is None:
            return {}
        space = optuna.search_space.intersection_search_space(view[0].get_trials(deepcopy=False))
        return {k: d for k, d in space.items() if not d.single()}


class PausedTPESampler(ViewSampler):
    """grutune's TPE for a sweep whose trials pause at ASHA's rungs (promotion-based ASHA, PASHA): a paused trial is
    neither finished nor running, and Optuna has no state for it (a finished trial cannot be resumed; a RUNNING one,
    under the constant liar, counts as a poor result). So TPE is shown every unfinished trial that has reported as
    PRUNED at its readings, as stopping ASHA would have left it (TPE ranks it by the last epoch it reached, then its
    reading there), an unfinished trial with no reading yet as RUNNING (the constant liar), and finished trials as
    they are. Its settings are grutune's (`tpe_sampler`: start-up, multivariate, constant liar)."""

    def __init__(self, *, seed: int, startup_trials: int, multivariate: bool = False, constant_liar: bool = True):
        super().__init__(tpe_sampler(seed, startup_trials, multivariate, constant_liar), seed)

    def shown(self, others):
        out = []
        for t in others:
            if t.state == optuna.trial.TrialState.RUNNING and t.intermediate_values:
                out.append(
                    optuna.trial.create_trial(
                        state=optuna.trial.TrialState.PRUNED,
                        params=t.params,
                        distributions=t.distributions,
                        intermediate_values=t.intermediate_values,
                    )
                )
            elif t.state == optuna.trial.TrialState.RUNNING:
                out.append(
                    optuna.trial.create_trial(
                        state=optuna.trial.TrialState.RUNNING, params=t.params, distributions=t.distributions
                    )
                )
            else:
                out.append(
                    optuna.trial.create_trial(
                        state=t.state,
                        params=t.params,
                        distributions=t.distributions,
                        value=t.value,
                        intermediate_values=t.intermediate_values,
                    )
                )
        return out


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


class RungGPSearcher(RungSearcher):
    """grutune's searcher with `RungGPSampler` (the `grutune_gp` arm)."""

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return RungGPSampler(
            seed=seed, startup_trials=self.startup_trials, rungs=self.rungs, min_points=self.rung_min_points
        )


class PausedSearcher(OwnSamplerSearcher):
    """grutune's searcher with `PausedTPESampler`, for the schedulers that pause trials (`PromotionASHA`)."""

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return PausedTPESampler(
            seed=seed,
            startup_trials=self.startup_trials,
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


# --------------------------------------------------------------------------- schedulers that pause trials


class PromotionASHA:
    """ASHA as its paper states it (Li et al., 2020, "A system for massively parallel hyperparameter tuning",
    Algorithm 2), not as Ray's `ASHAScheduler` runs it: a trial pauses at every rung (its checkpoint kept), and a free
    slot goes to a promotion before a new trial. Looking from the highest rung down, a trial is promotable from rung
    k if it is among the best floor(n_k / rf) of the n_k trials that reached rung k and was not promoted from it
    yet; the best promotable one of the highest such rung resumes and runs to rung k + 1. Only when none is
    promotable does a new trial start, and it runs to the first rung. So no trial is promoted on the readings of the
    few trials that happened to reach a rung first (Ray's ASHA promotes a trial as it reaches a rung, against
    whoever is there), which is what many trials in flight make worse.

    `progressive`: PASHA (Bohdal et al., ICLR 2023): the same scheduler whose top rung (where trials end for now)
    starts at the second rung and rises one rung, up to max_epochs, whenever the trials in the top rung rank
    differently there than in the rung below, beyond the noise: soft ranking, where the trial at each place of the
    top rung's ranking must be within epsilon, in the lower rung's reading, of the trial at that place of the lower
    rung's ranking. Epsilon is re-estimated from the curves at every reading, as the paper does: the 90th percentile
    of the gaps, at an epoch between the two rungs, between pairs of trials whose order there was reversed at an
    earlier epoch and restored before it (0 until such a pair is seen). Trials at the top rung pause there, and are
    promotable when it rises.

    The interface: `jobs()` (what a free slot may run, in order: (trial, rung epoch to run to) promotions, then
    (None, first rung) for a new trial), `add` a new trial, `promote` one, `record` every reading."""

    def __init__(self, rungs: Sequence[int], rf: float, progressive: bool = False):
        self.rungs, self.rf, self.progressive = list(rungs), rf, progressive
        self.top = min(1, len(self.rungs) - 1) if progressive else len(self.rungs) - 1  # the rung trials end at
        self.at: list[dict[str, float]] = [{} for _ in self.rungs]  # per rung: trial -> its reading there
        self.promoted: list[set[str]] = [set() for _ in self.rungs]  # per rung: trials promoted from it
        self.curves: dict[str, dict[int, float]] = {}  # trial -> epoch -> reading (PASHA's epsilon)
        self.epsilon = 0.0
        self.rises: list[int] = []  # PASHA: the readings (counted) at which the top rung rose

    def jobs(self) -> list[tuple[str | None, int]]:
        out: list[tuple[str | None, int]] = []
        for k in range(self.top - 1, -1, -1):
            ranked = sorted(self.at[k], key=lambda t: -self.at[k][t])  # ties: the first to reach the rung first
            best = ranked[: int(len(ranked) / self.rf)]
            out.extend((t, self.rungs[k + 1]) for t in best if t not in self.promoted[k])
        return [*out, (None, self.rungs[0])]

    def add(self, trial: str) -> None:
        self.curves[trial] = {}

    def promote(self, trial: str) -> None:
        k = max(i for i, rung in enumerate(self.at) if trial in rung)
        self.promoted[k].add(trial)

    def record(self, trial: str, epoch: int, value: float) -> None:
        self.curves.setdefault(trial, {})[epoch] = value
        if epoch in self.rungs:
            self.at[self.rungs.index(epoch)][trial] = value
        if self.progressive and self.top < len(self.rungs) - 1:
            self.epsilon = self._epsilon()
            if self._ranks_differ():
                self.top += 1
                self.rises.append(sum(len(c) for c in self.curves.values()))

    def _ranks_differ(self) -> bool:
        """PASHA's soft ranking of the top two rungs (see the class)."""
        top, below = self.at[self.top], self.at[self.top - 1]
        trials = [t for t in top if t in below]
        if len(trials) < 2:
            return False
        by_top = sorted(trials, key=lambda t: -top[t])
        by_below = sorted(trials, key=lambda t: -below[t])
        return any(abs(below[t] - below[by_below[i]]) > self.epsilon for i, t in enumerate(by_top))

    def _epsilon(self) -> float:
        hi, lo = self.rungs[self.top], self.rungs[self.top - 1]
        gaps, seen = [], set()
        for e in range(hi, lo, -1):
            there = sorted(t for t, c in self.curves.items() if e in c)
            for a, b in itertools.combinations(there, 2):
                if (a, b) in seen:
                    continue
                seen.add((a, b))
                ahead = self.curves[a][e] > self.curves[b][e]
                reversed_ = False
                for p in range(e - 1, 0, -1):
                    if p not in self.curves[a] or p not in self.curves[b]:
                        break
                    if (self.curves[a][p] > self.curves[b][p]) != ahead:
                        reversed_ = True
                    elif reversed_:  # reversed at an earlier epoch, and restored before e
                        gaps.append(abs(self.curves[a][e] - self.curves[b][e]))
                        break
        return float(np.percentile(gaps, 90)) if gaps else self.epsilon


class TopK:
    """One epoch for every config, then the top K to the end: `n` new trials run `first` epochs each; when all have
    reported, the `k` with the best reading there resume and run to `last`. A baseline that needs no model: with
    random configs it spends n * first + k * (last - first) trial-epochs, whatever the trials in flight. Same
    interface as `PromotionASHA`."""

    def __init__(self, n: int, k: int, first: int, last: int):
        self.n, self.k, self.first, self.last = n, k, first, last
        self.started: list[str] = []
        self.at: dict[str, float] = {}
        self.promoted: set[str] = set()

    def jobs(self) -> list[tuple[str | None, int]]:
        if len(self.started) < self.n:
            return [(None, self.first)]
        if len(self.at) < self.n:
            return []  # the K are chosen when every first epoch has reported
        ranked = sorted(self.at, key=lambda t: -self.at[t])[: self.k]
        return [(t, self.last) for t in ranked if t not in self.promoted]

    def add(self, trial: str) -> None:
        self.started.append(trial)

    def promote(self, trial: str) -> None:
        self.promoted.add(trial)

    def record(self, trial: str, epoch: int, value: float) -> None:
        if epoch == self.first:
            self.at[trial] = value

    def spend(self) -> int:
        return self.n * self.first + self.k * (self.last - self.first)


def top_k_split(budget: float, rf: float, epochs: int) -> tuple[int, int]:
    """The `random_top_k` arm's n and k for a budget: k trials to the end, one for every rf**2 that ran one epoch (the
    share Ray's ASHA at grace period 1 and this reduction factor sends from epoch 1 to epoch 9), and n what is left of
    the budget at one epoch each: at 200 trial-epochs, reduction factor 3 and 9 epochs, k = 12 and n = 104."""
    k = round(budget / (rf**2 + epochs - 1))
    return int(budget) - k * (epochs - 1), k


# --------------------------------------------------------------------------- the arms


@functools.cache
def shipped() -> dict:
    """conf/config.yaml's search section: the settings every arm takes unless it names its own."""
    return yaml.safe_load(CONFIG.read_text())["search"]


@dataclass(frozen=True)
class Arm:
    """One way to search. A setting left None is the shipped one (`shipped()`, by `settings`)."""

    name: str
    sampler: str = "tpe"  # tpe | random | gp (`RungGPSampler`)
    asha: bool = True
    # stop: Ray's ASHAScheduler stops trials at rungs | promote: `PromotionASHA` pauses them and promotes later |
    # pasha: `PromotionASHA(progressive=True)` | top_k: `TopK`, one epoch for every config, then the top K to the end
    scheduler: str = "stop"
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
    # the candidates for many trials in flight (issue 36, item 3; `CANDIDATES`): the shipped settings, one change each
    "grutune_gp": Arm("grutune_gp", sampler="gp"),
    "grutune_promote": Arm("grutune_promote", scheduler="promote"),
    "grutune_pasha": Arm("grutune_pasha", scheduler="pasha"),
    "random_top_k": Arm("random_top_k", sampler="random", scheduler="top_k"),
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


def readings(arm: Arm, sur: Surrogate, seed: int):
    """A trial's reported accuracy at an epoch: the same config draws the same noise in every arm of a seed
    (paired)."""
    noise: dict[str, np.ndarray] = {}

    def reading(c: dict, epoch: int) -> float:
        key = json.dumps(c, sort_keys=True)
        if key not in noise:
            r = np.random.default_rng([seed, int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)])
            dev, half = sur.noise.draw(truth(sur, c), r)
            noise[key] = dev + half
        mean = sur.curve(arm.schedule, c)[epoch - 1]
        return float(np.clip(mean + noise[key][epoch - 1], 0.0, 1.0))

    return reading


def run_sweep(arm: Arm, sur: Surrogate, seed: int, budget: float, in_flight: int, tmp: Path) -> dict:
    """One simulated sweep; returns the user's accuracy, best-so-far by trial-epochs spent, and the trials in flight
    it reached (the most at once, and the mean over its simulated time)."""
    arm = settings(arm)
    if arm.scheduler != "stop":
        return run_paused_sweep(arm, sur, seed, budget, in_flight, tmp)
    E = sur.epochs
    startup = startup_count(arm, budget, E)
    if arm.startup_floor:  # at least as many start-up trials as can run at once (slots, or what the budget pays for)
        startup = max(startup, min(in_flight, int(budget // E)))
    if arm.sampler == "random":
        startup = 10**9
    cfg_space = space()
    fixed = {k: v for k, v in cfg_space.items() if not isinstance(v, tuple)}
    rung_set = set(asha_rungs(arm.grace, arm.rf, E))
    reading = readings(arm, sur, seed)

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
            {"rungs": asha_rungs(arm.grace, arm.rf, E), "rung_min_points": arm.rung_min_points}
            if arm.rung_tpe or arm.sampler == "gp"
            else {}
        )
        searcher = (
            RungGPSearcher
            if arm.sampler == "gp"
            else RungSearcher
            if arm.rung_tpe
            else StartedSearcher
            if arm.startup_started
            else GrutuneSearcher
        )(
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


def run_paused_sweep(arm: Arm, sur: Surrogate, seed: int, budget: float, in_flight: int, tmp: Path) -> dict:
    """`run_sweep` for the schedulers that pause trials (`PromotionASHA`, `TopK`): a free slot runs what the scheduler
    offers first that fits the budget, a promotion (the trial resumes from its checkpoint at the epoch it paused at)
    or a new trial from the searcher. A job runs to a rung and is known to end there, so the budget rule is the
    search stage's with that knowledge: a job starts only if the epochs spent, the epochs every running job has left
    and its own fit in the budget (paused trials hold no slot and no budget). The searcher is grutune's, on its
    journal, creating trials whenever asked (the scheduler holds the slots and the budget); its TPE sees paused trials
    through `PausedTPESampler`. A trial that reaches max_epochs is told COMPLETE; a paused one stays unfinished."""
    E = sur.epochs
    startup = 10**9 if arm.sampler == "random" else startup_count(arm, budget, E)
    cfg_space = space()
    fixed = {k: v for k, v in cfg_space.items() if not isinstance(v, tuple)}
    reading = readings(arm, sur, seed)
    if arm.scheduler == "top_k":
        sched = TopK(*top_k_split(budget, arm.rf, E), first=1, last=E)
    else:
        sched = PromotionASHA(asha_rungs(arm.grace, arm.rf, E), arm.rf, progressive=arm.scheduler == "pasha")
    journal = tmp / f"{arm.name}-{seed}.journal"
    journal.unlink(missing_ok=True)
    bind(
        f"replay-{arm.name}-{seed}",
        SweepRun(journal=journal, target=10**6, max_concurrent=10**6, segment="tune-1"),
    )
    searcher = (GrutuneSearcher if arm.sampler == "random" else PausedSearcher)(
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
    trials: dict[str, dict] = {}
    events: list = []  # (time, a unique count, trial id)
    order = itertools.count()
    spent, left, now, running = 0, 0, 0.0, 0  # left: the epochs running jobs have still to run
    best_obs, picked, curve = -1.0, None, []

    def fill() -> None:
        nonlocal left, running
        while running < in_flight:
            for tid, target in sched.jobs():
                cost = target - (trials[tid]["epoch"] if tid else 0)
                if spent + left + cost > budget:
                    continue
                if tid is None:
                    tid = f"t{len(trials)}"
                    sug = searcher.suggest(tid)
                    if not isinstance(sug, dict):
                        continue
                    config = {**fixed, **sug}
                    trials[tid] = {"config": config, "epoch": 0, "dt": sur.epoch_s(config)}
                    sched.add(tid)
                else:
                    sched.promote(tid)
                trials[tid]["target"] = target
                left += cost
                running += 1
                heapq.heappush(events, (now + trials[tid]["dt"], next(order), tid))
                break
            else:
                return

    fill()
    peak, area, last = running, 0.0, 0.0
    while events:
        now, _, tid = heapq.heappop(events)
        area, last = area + running * (now - last), now
        t = trials[tid]
        t["epoch"] += 1
        e = t["epoch"]
        spent, left = spent + 1, left - 1
        v = reading(t["config"], e)
        if v > best_obs:
            best_obs, picked = v, t["config"]
        curve.append((float(spent), truth(sur, picked)))
        result = {"epoch": e, "val_accuracy": v}
        searcher.on_trial_result(tid, result)
        sched.record(tid, e, v)
        if e < t["target"]:
            heapq.heappush(events, (now + t["dt"], next(order), tid))
            continue
        running -= 1  # at its rung: paused, or finished at max_epochs
        if e >= E:
            searcher.on_trial_complete(tid, result)
        fill()
        peak = max(peak, running)
    return {
        "user": truth(sur, picked),
        "trials": len(trials),
        "curve": curve,
        "in_flight_max": peak,
        "in_flight_mean": area / now if now > 0 else float(running),
        "spent": spent,
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


def summarise(
    runs: list[dict], arms: list[str], budgets: list[float], flights: list[int], references: Sequence[str] = REFERENCES
) -> dict:
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
                for other in references:
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


def verdict(summary: dict, candidates: Sequence[str], seeds: int) -> dict:
    """The declared comparison of the candidates (`SCREEN`): each candidate against each of `SCREEN["versus"]` at
    SCREEN's budget and every in-flight level, from the summary's paired comparisons, Holm-adjusted over every
    candidate and level compared against the same arm (one family per arm compared against; a comparison not yet
    made counts in the family at p = 1). A candidate meets the bar when it beats today's default (`grutune`: a
    positive mean difference with Holm-adjusted p < alpha) at one level at least and loses to it at none (no negative
    mean difference with unadjusted p < SCREEN["harm"]); it is judged only when every level holds all `seeds` (None
    until then: no verdict is read off a run half done)."""
    out: dict = {"declared": {**SCREEN, "candidates": list(candidates), "seeds": seeds}, "comparisons": {}}
    for versus in SCREEN["versus"]:
        tests = {
            (c, f): summary.get(f"{SCREEN['budget']:g}x{f}", {}).get(c, {}).get(f"vs_{versus}")
            for c in candidates
            for f in SCREEN["in_flight"]
        }
        adjusted = dict(zip(tests, holm([r["wilcoxon_p"] if r else 1.0 for r in tests.values()])))
        for (c, f), row in tests.items():
            if row:
                out["comparisons"].setdefault(c, {}).setdefault(f"vs_{versus}", {})[str(f)] = {
                    **{k: row[k] for k in ("mean_diff", "mean_diff_ci95", "wins", "ties", "losses", "of")},
                    "wilcoxon_p": row["wilcoxon_p"],
                    "wilcoxon_p_holm_screen": adjusted[(c, f)],
                }
    out["meets_bar"] = {}
    for c in candidates:
        vs = out["comparisons"].get(c, {}).get("vs_grutune", {})
        levels = [vs.get(str(f)) for f in SCREEN["in_flight"]]
        if any(r is None or r["of"] < seeds for r in levels):
            out["meets_bar"][c] = None
            continue
        beats = any(r["mean_diff"] > 0 and r["wilcoxon_p_holm_screen"] < SCREEN["alpha"] for r in levels)
        loses = any(r["mean_diff"] < 0 and r["wilcoxon_p"] < SCREEN["harm"] for r in levels)
        out["meets_bar"][c] = beats and not loses
    return out


def parse_seeds(spec: str) -> list[int]:
    """ "1000-1199" (inclusive), "3,5,8", or a mix of both. A ValueError names the spec and what is allowed."""
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or hi and (not hi.isdigit() or int(hi) < int(lo)):
            raise ValueError(
                f"--seeds {spec!r}: {part!r} is not a seed (a whole number >= 0) or a range of them (like 1000-1199)"
            )
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
    comparison = ap.add_mutually_exclusive_group()
    comparison.add_argument(
        "--screen",
        action="store_true",
        help="the declared screen of the candidates for many trials in flight (CANDIDATES, SCREEN_SEEDS, SCREEN)",
    )
    comparison.add_argument(
        "--confirm",
        metavar="ARMS",
        help="the declared confirmation of the candidates that met the bar in the screen (CONFIRM_SEEDS)",
    )
    ap.add_argument(
        "--arms",
        help=f"comma-separated, of {', '.join(ARMS)} (default: random,random_asha,grutune,optuna_hb; with --screen "
        "or --confirm: grutune,random_asha and the candidates)",
    )
    ap.add_argument(
        "--seeds",
        help="e.g. 1000-1199 (the fresh seeds, the default) or 0-99 (the old files' seeds); --screen: "
        f"{SCREEN_SEEDS[0]}-{SCREEN_SEEDS[-1]}, --confirm: {CONFIRM_SEEDS[0]}-{CONFIRM_SEEDS[-1]}",
    )
    ap.add_argument("--budgets", help="trial-epochs per sweep (default 60,200; --screen, --confirm: 200)")
    ap.add_argument("--in-flight", default="1,2,32", help="trials at once, e.g. 1,8,32,52")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes running sweeps")
    ap.add_argument("--summary-every", type=int, default=10, help="seeds between summaries (the runs: every seed)")
    ap.add_argument(
        "--name",
        help="the results file (default search_replay_faithful; --screen: search_replay_candidates, --confirm: "
        "search_replay_candidates_confirm)",
    )
    args = ap.parse_args()
    candidates: tuple[str, ...] = ()
    preset = {"arms": "random,random_asha,grutune,optuna_hb", "seeds": FRESH_SEEDS, "budgets": "60,200"}
    preset["name"] = "search_replay_faithful"
    if args.screen or args.confirm:
        candidates = CANDIDATES if args.screen else tuple(args.confirm.split(","))
        preset = {
            "arms": ",".join(["grutune", "random_asha", *candidates]),
            "seeds": SCREEN_SEEDS if args.screen else CONFIRM_SEEDS,
            "budgets": f"{SCREEN['budget']:g}",
            "name": "search_replay_candidates" if args.screen else "search_replay_candidates_confirm",
        }
    preset["seeds"] = f"{preset['seeds'][0]}-{preset['seeds'][-1]}"
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    references = (*REFERENCES, "grutune") if candidates else REFERENCES
    declared = len(SCREEN_SEEDS if args.screen else CONFIRM_SEEDS)  # the seeds a verdict waits for
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        sys.exit(f"error: unknown arm(s) {', '.join(unknown)}; valid: {', '.join(ARMS)}")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        ap.error(str(e))
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
            state.update(summary=summarise(runs, arms, budgets, flights, references), summary_runs=len(runs))
        save(
            args.name,
            {
                "command": made_by["command"],
                "code": code,
                "seeds": {
                    "fresh": f"{FRESH_SEEDS[0]}-{FRESH_SEEDS[-1]}",
                    "screen": f"{SCREEN_SEEDS[0]}-{SCREEN_SEEDS[-1]}",
                    "confirm": f"{CONFIRM_SEEDS[0]}-{CONFIRM_SEEDS[-1]}",
                    "asked": args.seeds,
                },
                **(
                    {"verdict": verdict(state["summary"], candidates, declared)}
                    if candidates
                    else {"primary": primary(state["summary"])}
                ),
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
    if candidates:
        v = verdict(summary, candidates, declared)
        print(f"\nthe declared comparison ({SCREEN['budget']:g} trial-epochs; Holm over candidates and levels)")
        for c, by in v["comparisons"].items():
            for versus, levels in by.items():
                for f, r in levels.items():
                    print(
                        f"  {c:16s} {versus:15s} {f:>2s} in flight: d={r['mean_diff']:+.4f} {r['mean_diff_ci95']} "
                        f"{r['wins']}-{r['ties']}-{r['losses']} p={r['wilcoxon_p']:.2g} "
                        f"Holm {r['wilcoxon_p_holm_screen']:.2g}"
                    )
        print("meets the bar:", v["meets_bar"])
        return
    p = primary(summary)
    print(
        f"\nprimary: {p['arm']} - {p['versus']}, {p['budget']:g} trial-epochs, {p['in_flight']} in flight:",
        p["result"],
    )


if __name__ == "__main__":
    main()
