"""Replay benchmark: grutune's real searcher and Ray Tune's real ASHA on a surrogate of the learning-curve table.

    python benchmarks/search_replay.py     # 100 seeds of the main arms at 60 and 200 trial-epochs, ~15 min on 2 cores
    python benchmarks/search_replay.py --arms grutune --budgets 200 --in-flight 1,8,32,52 --name search_replay_in_flight
    python benchmarks/search_replay.py --seeds 20 --budgets 60 --arms random,grutune   # a quick look

The surrogate: extremely randomised trees (scikit-learn) fitted on benchmarks/results/learning_curves.jsonl.gz
(400 configs of the default space, real Fashion-MNIST, 9 epochs of 2,000 images) predict a config's validation
accuracy at every epoch, under today's cosine schedule and under warmup-stable-decay (WSD: a constant rate, and a
cooled-down copy scored at each rung), and its time per epoch. Each trial draws the noise the table measured: a
training-seed offset and the noise of a 3,000-image validation score at every reading. Its cross-validated rank
correlation with held-out configs is reported.

A sweep is an event loop over simulated time with N trials in flight: the searcher under test proposes (grutune's
`GrutuneSearcher`, the very class the search stage runs, on an Optuna journal), Tune's `ASHAScheduler` decides at
every reported epoch (through its public scheduler interface), and the sweep stops when it has spent its budget of
trial-epochs (WSD's cool-down copies are charged too). Every arm creates trials under the search stage's budget rule
(`sweep.budget.budget_allows_trial`: a new trial only if the budget also pays for every running trial to the end), as
Tune would: every free slot is offered a trial. What a user gets is scored, not the noisy maximum: each arm
picks the trial with the best reported accuracy, as the search stage does, and is credited with that config's
noise-free final accuracy under the cosine schedule the final training uses.

Arms: `random` (random search, every trial to the end), `random_asha`, `tpe` (TPE, no early stopping),
`grutune_v0` (the searcher and ASHA as they were: 8 random start-up trials), `optuna_hb` (Optuna's TPE with its
Hyperband pruner, driven by Optuna's own ask/report/should_prune), `grutune` (today's defaults: 30% of the trials
random start-up), and the variants tried on the way (`--arms` lists them all): WSD readings, multivariate TPE,
other start-up shares, ASHA's reduction factor 2 or 4 or grace period 2 or 3, and BOHB's rule (`grutune_rung*`: TPE
fitted on the readings at one rung, `RungTPESampler` below, which the search stage does not use: it did not win).
Writes benchmarks/results/search_replay.json: per arm and budget the median and interquartile range of the user's
accuracy, paired wins and a Wilcoxon signed-rank p-value against random search, random + ASHA and Optuna's TPE +
Hyperband, best-so-far at 25/50/100% of the budget, and the trial-epochs each arm needs to reach random search's
final median, with 95% bootstrap intervals (over seeds) of that figure and of every mean paired difference. It
appends as it goes and skips the sweeps the file holds; with none left to run it only computes the summary anew,
keeping the command and machine that made the runs.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gzip
import heapq
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, save  # noqa: E402
from grutune.space import optuna_distributions  # noqa: E402
from grutune.sweep.binding import SweepRun, bind  # noqa: E402
from grutune.sweep.budget import asha_rungs, budget_allows_trial, expected_trial_epochs  # noqa: E402
from grutune.sweep.journal import DIVERGED  # noqa: E402
from grutune.sweep.searcher import GrutuneSearcher, tpe_sampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLE = RESULTS / "learning_curves.jsonl.gz"
CELLS, BACKBONES = ("gru", "lstm", "rnn"), ("none", "conv", "resnet")


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
class Surrogate:
    models: dict  # schedule -> fitted regressor of the 9 epochs' accuracy
    time_model: object  # log seconds per epoch
    seed_sd: float  # training-seed noise of a final accuracy
    eval_sd: float  # noise of one validation score (3,000 images)
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
        models[schedule] = model.fit(X, Y)
    T = np.array([math.log(max(1e-3, r["runs"]["cosine"][-1]["wall_s"] / len(r["runs"]["cosine"]))) for r in base])
    time_model = ExtraTreesRegressor(n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1).fit(X, T)
    finals: dict[int, list] = {}
    for r in rows:
        finals.setdefault(r["index"], []).append(curve_of(r["runs"]["cosine"], E)[-1])
    seed_sd = float(np.mean([np.std(v, ddof=1) for v in finals.values() if len(v) > 1]))
    half = [r["runs"]["cosine"][-1]["acc_a"] - r["runs"]["cosine"][-1]["acc_b"] for r in base]
    eval_sd = float(np.std(half, ddof=1) / math.sqrt(2))
    return Surrogate(models, time_model, seed_sd, eval_sd, E, quality)


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


@dataclass(frozen=True)
class Arm:
    name: str
    sampler: str = "tpe"  # tpe | random
    asha: bool = True
    schedule: str = "cosine"  # what a trial's readings are: cosine over max_epochs, or WSD cool-downs at rungs
    grace: int = 1
    rf: float = 3
    startup: int | float = 8  # TPE's random start-up trials; a float is a share of the expected trials
    optuna_pruner: bool = False  # Optuna's own TPE + Hyperband, not the Tune searcher + ASHA
    multivariate: bool = False  # Optuna's multivariate TPE
    liar: bool = True  # Optuna's constant liar (running trials count as poor results)
    rung_tpe: bool = False  # TPE fitted on one rung at a time (BOHB's rule, `RungTPESampler`)
    rung_min_points: int | None = None  # readings a rung needs before TPE is fitted on it (None: BOHB's d + 3)
    startup_started: bool = False  # the start-up counted in trials started, not finished (`StartedStartupSampler`)
    startup_floor: bool = False  # start-up at least the trials that can run at once


ARMS = {
    "random": Arm("random", sampler="random", asha=False),
    "random_asha": Arm("random_asha", sampler="random"),
    "tpe": Arm("tpe", asha=False),
    "grutune_v0": Arm("grutune_v0"),
    "optuna_hb": Arm("optuna_hb", optuna_pruner=True),
    "grutune": Arm("grutune", startup=0.3),  # today's defaults (conf/config.yaml): 30% random start-up
    "grutune_wsd": Arm("grutune_wsd", schedule="wsd"),
    "grutune_mv": Arm("grutune_mv", multivariate=True),
    "grutune_s30": Arm("grutune_s30", startup=0.3),
    "grutune_mv_s30": Arm("grutune_mv_s30", multivariate=True, startup=0.3),
    "grutune_rf2": Arm("grutune_rf2", rf=2),
    "grutune_g3": Arm("grutune_g3", grace=3),
    "tpe_mv": Arm("tpe_mv", asha=False, multivariate=True),
    "grutune_s20": Arm("grutune_s20", startup=0.2),
    "grutune_s45": Arm("grutune_s45", startup=0.45),
    "grutune_s30_rf2": Arm("grutune_s30_rf2", startup=0.3, rf=2),
    "grutune_s30_g2": Arm("grutune_s30_g2", startup=0.3, grace=2),
    "grutune_no_liar": Arm("grutune_no_liar", startup=0.3, liar=False),
    "grutune_s15": Arm("grutune_s15", startup=0.15),
    "grutune_s10": Arm("grutune_s10", startup=0.1),
    "grutune_s30_rf4": Arm("grutune_s30_rf4", startup=0.3, rf=4),
    "grutune_rung": Arm("grutune_rung", startup=0.3, rung_tpe=True),
    "grutune_rung_s15": Arm("grutune_rung_s15", startup=0.15, rung_tpe=True),
    "grutune_rung1": Arm("grutune_rung1", startup=0.3, rung_tpe=True, rung_min_points=10**9),  # the first rung only
    "grutune_rung_m24": Arm("grutune_rung_m24", startup=0.3, rung_tpe=True, rung_min_points=24),
    "grutune_started": Arm("grutune_started", startup=0.3, startup_started=True),
    "grutune_started_s20": Arm("grutune_started_s20", startup=0.2, startup_started=True),
    "grutune_s15_floor": Arm("grutune_s15_floor", startup=0.15, startup_floor=True),
}
SPACE = None


def space() -> dict:
    """The default search space as the searcher takes it (params.yaml's validated form)."""
    global SPACE
    if SPACE is None:
        raw = yaml.safe_load((ROOT / "conf/config.yaml").read_text())["search"]["space"]
        SPACE = {k: ((next(iter(v)), next(iter(v.values()))) if isinstance(v, dict) else v) for k, v in raw.items()}
    return SPACE


def run_sweep(arm: Arm, sur: Surrogate, seed: int, budget: float, in_flight: int, tmp: Path) -> dict:
    """One simulated sweep; returns the user's accuracy and best-so-far by trial-epochs spent."""
    E = sur.epochs
    n_expected = budget / (expected_trial_epochs(arm.grace, arm.rf, E) if arm.asha else E)
    startup = arm.startup if isinstance(arm.startup, int) else max(1, math.ceil(arm.startup * n_expected))  # as config
    if arm.startup_floor:  # at least as many start-up trials as can run at once (slots, or what the budget pays for)
        startup = max(startup, min(in_flight, int(budget // E)))
    if arm.sampler == "random":
        startup = 10**9
    cfg_space = space()
    fixed = {k: v for k, v in cfg_space.items() if not isinstance(v, tuple)}
    rung_set = set(asha_rungs(arm.grace, arm.rf, E))
    noise: dict[str, tuple] = {}

    def reading(c: dict, epoch: int) -> float:
        """A trial's reported accuracy: the same config draws the same noise in every arm of a seed (paired)."""
        key = json.dumps(c, sort_keys=True)
        if key not in noise:
            import hashlib

            r = np.random.default_rng([seed, int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)])
            noise[key] = (r.normal(0, sur.seed_sd), r.normal(0, sur.eval_sd, size=E))
        offset, evals = noise[key]
        mean = sur.curve(arm.schedule, c)[epoch - 1]
        return float(np.clip(mean + offset + evals[epoch - 1], 0.0, 1.0))

    def cost(epoch: int) -> float:  # trial-epochs an epoch costs, with WSD's cool-down copy at a rung
        return 1.0 + (0.2 * epoch if arm.schedule == "wsd" and epoch in rung_set else 0.0)

    if arm.optuna_pruner:
        study = optuna.create_study(
            study_name=f"replay-{seed}",
            direction="maximize",
            sampler=optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=startup, constant_liar=False, multivariate=arm.multivariate
            ),  # Optuna's default
            pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=E, reduction_factor=3),
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
    while events and spent < budget:
        now, _, _, t = heapq.heappop(events)
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
        else:
            heapq.heappush(events, (now + t["dt"] * cost(e + 1), n, next(order), t))
    return {"user": truth(sur, picked), "trials": n, "curve": curve}


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


def summarise(runs: list[dict], arms: list[str], budgets: list[float], flights: list[int]) -> dict:
    from scipy.stats import wilcoxon

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
                if ref_med is not None:  # trial-epochs to reach random search's final median (median over seeds)
                    reach = [next((s for s, v in r["curve"] if v >= ref_med), math.inf) for r in by[a].values()]
                    row["epochs_to_random_median"] = statistics.median(reach)
                    row["epochs_to_random_median_ci95"] = reach_interval(by[a], by["random"])
                for other in ("random", "random_asha", "optuna_hb"):
                    if other == a or not by.get(other):
                        continue
                    seeds = sorted(set(by[a]) & set(by[other]))
                    d = [by[a][s]["user"] - by[other][s]["user"] for s in seeds]
                    if len(seeds) < 5 or not any(d):
                        continue
                    row[f"vs_{other}"] = {
                        "mean_diff": round(float(np.mean(d)), 4),
                        "mean_diff_ci95": mean_interval(d),
                        "wins": sum(x > 0 for x in d),
                        "ties": sum(x == 0 for x in d),
                        "of": len(d),
                        "wilcoxon_p": float(wilcoxon(d).pvalue),
                    }
                if f != 1:  # the price of trials in flight: the same arm and seeds, one trial at a time
                    ones = {r["seed"]: r for r in runs if r["arm"] == a and r["budget"] == b and r["in_flight"] == 1}
                    seeds = sorted(set(by[a]) & set(ones))
                    d = [by[a][s]["user"] - ones[s]["user"] for s in seeds]
                    if len(seeds) >= 5 and any(d):
                        row["vs_one_at_a_time"] = {
                            "mean_diff": round(float(np.mean(d)), 4),
                            "mean_diff_ci95": mean_interval(d),
                            "median_diff": round(float(np.median(d)), 4),
                            "wins": sum(x > 0 for x in d),
                            "ties": sum(x == 0 for x in d),
                            "of": len(d),
                            "wilcoxon_p": float(wilcoxon(d).pvalue),
                        }
                block[a] = row
            if block:  # a budget and number in flight the file holds no run of are left out
                out[key] = block
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--arms",
        default="random,random_asha,tpe,grutune_v0,optuna_hb,grutune",
        help=f"comma-separated, of {', '.join(ARMS)} (default: %(default)s)",
    )
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--budgets", default="60,200", help="trial-epochs per sweep")
    ap.add_argument("--in-flight", default="2", help="trials at once, e.g. 1,8,32,52")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--name", default="search_replay")
    args = ap.parse_args()
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        sys.exit(f"error: unknown arm(s) {', '.join(unknown)}; valid: {', '.join(ARMS)}")
    budgets = [float(b) for b in args.budgets.split(",")]
    flights = [int(f) for f in args.in_flight.split(",")]
    path = RESULTS / f"{args.name}.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    runs = stored.get("runs", [])
    done = {(r["arm"], r["seed"], r["budget"], r["in_flight"]) for r in runs}
    todo = [
        (a, s, b, f)
        for b in budgets
        for f in flights
        for s in range(args.seeds)
        for a in arms
        if (a, s, b, f) not in done
    ]
    _init()
    print(
        f"surrogate: {_SUR.quality}, seed sd {_SUR.seed_sd:.4f}, eval sd {_SUR.eval_sd:.4f}; {len(todo)} sweeps to run",
        flush=True,
    )
    t0 = time.time()
    # The summary covers every run the file holds, not only those asked for now; with nothing left to run, the file
    # keeps the command, machine and commit that made its runs, and only its summary is computed anew.
    arms = list(dict.fromkeys([*stored.get("arms", {}), *arms]))
    budgets = sorted({*budgets, *(r["budget"] for r in runs)})
    flights = sorted({*flights, *(r["in_flight"] for r in runs)})
    made_by = stored if stored and not todo else {"command": " ".join(sys.argv), "machine": None}

    def write() -> dict:
        summary = summarise(runs, arms, budgets, flights)  # bootstraps: computed once per write
        save(
            args.name,
            {
                "command": made_by["command"],
                "surrogate": {**_SUR.quality, "seed_sd": _SUR.seed_sd, "eval_sd": _SUR.eval_sd},
                "arms": {a: stored.get("arms", {}).get(a) or vars(ARMS[a]) for a in arms},  # as they ran
                "summary": summary,
                "runs": runs,
            },
            made_by["machine"],
        )
        return summary

    with cf.ProcessPoolExecutor(args.workers, initializer=_init) as pool:
        futures = [pool.submit(_one, *u) for u in todo]
        for k, fut in enumerate(cf.as_completed(futures), 1):
            runs.append(fut.result())
            if k % 50 == 0 or k == len(todo):
                write()
                print(f"[{k}/{len(todo)}] {time.time() - t0:.0f} s", flush=True)
    summary = write()  # also when every run was done already: the summary as this code computes it
    for key, block in summary.items():
        print(f"\n{key} (budget x in flight)")
        for a, row in block.items():
            print(
                f"  {a:12s} median {row['median']:.4f} iqr {row['iqr']} "
                + " ".join(
                    f"{k}: {v['wins']}/{v['of']} p={v['wilcoxon_p']:.2g} d={v['mean_diff']:+.4f}"
                    for k, v in row.items()
                    if k.startswith("vs_")
                )
            )


if __name__ == "__main__":
    main()
