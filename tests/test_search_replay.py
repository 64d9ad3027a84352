"""The replay benchmark (benchmarks/search_replay.py): its default arm is the shipped search, its noise is the
learning-curve table's, what it reports is counted one way; and its variants of the searcher (TPE fitted on one
ASHA rung at a time, BOHB's rule; the start-up counted in trials started), measured and not adopted, are what they
claim to be."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from grutune.sweep.binding import SweepRun, bind
from grutune.sweep.budget import asha_rungs
from grutune.sweep.journal import DIVERGED
from grutune.sweep.searcher import tpe_sampler

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("search_replay", ROOT / "benchmarks" / "search_replay.py")
replay = sys.modules["search_replay"] = importlib.util.module_from_spec(spec)  # its dataclasses look it up
spec.loader.exec_module(replay)


def _history(study, dist):
    """Three poor trials that ASHA promoted first (Ray's ASHA promotes the first trial to reach an empty rung) and
    twenty stopped at epoch 1, whose readings peak at x = 0.2."""
    for x in (0.85, 0.9, 0.95):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": x}, distributions=dist, value=0.55, intermediate_values={1: 0.40, 3: 0.5, 9: 0.55}
            )
        )
    for i in range(20):
        x = (i + 0.5) / 20
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED,
                params={"x": x},
                distributions=dist,
                intermediate_values={1: 0.8 - abs(x - 0.2)},
            )
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_rung_tpe_compares_trials_on_one_rung_so_early_promotions_do_not_lead_it(seed):
    """Plain TPE ranks every COMPLETE trial above every PRUNED one, so its good set is the three poor trials ASHA
    promoted first and it proposes next to them; fitted on the rung every trial reached, TPE proposes near the best
    readings instead."""
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def proposals(sampler):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        _history(study, dist)
        return [study.ask(dist).params["x"] for _ in range(20)]

    plain = proposals(tpe_sampler(seed, 10, constant_liar=False))
    rung = proposals(replay.RungTPESampler(seed=seed, startup_trials=10, rungs=[1, 3, 9], constant_liar=False))
    assert sum(x > 0.7 for x in plain) >= 15  # the defect it mends, as Optuna's TPE behaves today
    assert all(abs(x - 0.2) < 0.15 for x in rung), rung


def test_rung_tpe_fits_on_the_highest_rung_with_enough_readings_and_counts_diverged_trials_there():
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    sampler = replay.RungTPESampler(seed=0, startup_trials=1, rungs=[1, 3, 9], min_points=4)

    def trial(steps, diverged=False):
        return optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED,
            params={"x": 0.5},
            distributions=dist,
            intermediate_values=steps,
            user_attrs={DIVERGED: True} if diverged else {},
        )

    at_1 = [trial({1: 0.5}) for _ in range(6)]
    at_3 = [trial({1: 0.5, 3: 0.6}) for _ in range(3)]
    assert sampler.rung(at_1 + at_3, dims=1) == 1  # three readings at rung 3: too few
    assert sampler.rung([*at_1, *at_3, trial({1: 0.1}, diverged=True)], dims=1) == 3  # the diverged one counts
    assert sampler.rung([*at_1, *at_3, trial({1: 0.1})], dims=1) == 1  # a stopped one does not
    assert replay.RungTPESampler(seed=0, startup_trials=1, rungs=[1, 3, 9]).rung(at_1 + at_3, dims=0) == 3  # d + 3 = 3


def test_the_replays_rung_searcher_fits_tpe_per_rung_through_the_journal(tmp_path):
    """The first three trials ran all 9 epochs (ASHA promoted them first) to a poor 0.55, the rest were stopped at
    epoch 1 with readings that peak at lr = 10**-3.5: proposals after the start-up gather at that peak, not around
    the three (grutune's plain TPE does the opposite). Its trials go to the journal as the search stage's do."""
    bind("s", SweepRun(journal=tmp_path / "s.journal", target=40, max_concurrent=4, segment="tune-1"))
    s = replay.RungSearcher(
        rungs=(1, 3, 9),
        study_name="s",
        space={"lr": ("loguniform", [1e-4, 1e-2]), "cell": ("choice", ["gru", "rnn"])},
        seed=0,
        metric="val_accuracy",
        mode="max",
        max_epochs=9,
        startup_trials=2,
    )
    for k in range(40):
        config = s.suggest(f"t{k}")
        assert isinstance(config, dict)
        reading = 0.8 - abs(math.log10(config["lr"]) + 3.5) / 5
        s.on_trial_result(f"t{k}", {"epoch": 1, "val_accuracy": 0.4 if k < 3 else reading})
        final = {"epoch": 9, "val_accuracy": 0.55} if k < 3 else {"epoch": 1, "val_accuracy": reading}
        s.on_trial_complete(f"t{k}", final)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "s.journal")))
    trials = optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 + ["PRUNED"] * 37
    late = sorted(abs(math.log10(t.params["lr"]) + 3.5) for t in trials[20:])
    assert late[len(late) // 2] < 0.3, late


def _run(seed: int, user: float, curve: list) -> dict:
    return {"seed": seed, "user": user, "curve": curve}


def test_reach_interval_brackets_the_first_reach_and_keeps_never():
    """The interval of "trial-epochs to random search's final median": with random search ending at 0.80 in every
    seed, an arm that reaches 0.80 at 30 trial-epochs in half its seeds and at 90 in the others has every resample's
    median at 30, 60 or 90; an arm that never reaches it has [inf, inf]; a reading that falls back (a later pick
    with a worse truth) does not undo a reach."""
    random = {s: _run(s, 0.80, [(1.0, 0.7), (200.0, 0.80)]) for s in range(20)}
    arm = {s: _run(s, 0.81, [(1.0, 0.7), (30.0 if s % 2 else 90.0, 0.80), (150.0, 0.79)]) for s in range(20)}
    lo, hi = replay.reach_interval(arm, random)
    assert 30.0 <= lo <= hi <= 90.0 and lo < 60.0 < hi
    never = {s: _run(s, 0.7, [(1.0, 0.7)]) for s in range(20)}
    assert replay.reach_interval(never, random) == [math.inf, math.inf]
    assert replay.reach_interval({s: arm[s] for s in range(3)}, random) is None  # too few seeds to resample


def test_mean_interval_holds_the_mean_and_shrinks_with_the_spread():
    wide = [(-1) ** i * 0.01 + 0.002 for i in range(100)]
    narrow = [(-1) ** i * 0.001 + 0.002 for i in range(100)]
    (lw, hw), (ln, hn) = replay.mean_interval(wide), replay.mean_interval(narrow)
    assert lw < 0.002 < hw and ln <= 0.002 <= hn and (hn - ln) < (hw - lw) / 5
    assert replay.mean_interval([0.003] * 10) == [0.003, 0.003]


def test_started_startup_counts_trials_started_so_trials_in_flight_do_not_stretch_it():
    """Twenty finished trials whose values peak at x = 0.2, ten more still running, a start-up of 25: Optuna's TPE
    counts finished trials (20 < 25) and still draws at random; counted in trials started (30 >= 25), the variant's
    TPE proposes near the peak."""
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def proposals(sampler):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for i in range(20):
            x = (i + 0.5) / 20
            study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions=dist, value=0.8 - abs(x - 0.2)))
        for _ in range(10):
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING))
        out = []
        for _ in range(20):
            t = study.ask({"x": dist["x"]})
            out.append(t.params["x"])
            study.tell(t, state=optuna.trial.TrialState.FAIL)  # no new knowledge: every proposal from the same data
        return out

    plain = proposals(tpe_sampler(0, 25))
    started = proposals(replay.StartedStartupSampler(seed=0, startup_trials=25, min_finished=2))
    assert sum(abs(x - 0.2) < 0.15 for x in started) >= 15
    assert sum(abs(x - 0.2) < 0.15 for x in plain) <= 10


def test_the_default_arm_is_the_shipped_search():
    """A benchmark whose default arm is not the shipped default measures something else: `grutune` names no setting
    of its own and runs conf/config.yaml's, and the peer random + ASHA runs the shipped ASHA. The table's 9 epochs
    stand in for max_epochs, which holds only while ASHA decides at the same epochs at both."""
    cfg = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["search"]
    assert replay.ARMS["grutune"] == replay.Arm("grutune")
    arm = replay.settings(replay.ARMS["grutune"])
    assert (arm.sampler, arm.asha, arm.schedule, arm.optuna_pruner) == ("tpe", True, "cosine", False)
    assert not (arm.rung_tpe or arm.startup_started or arm.startup_floor) and arm.scheduler == "stop"
    assert (arm.grace, arm.rf, arm.startup, arm.multivariate, arm.liar) == (
        cfg["grace_period"],
        cfg["reduction_factor"],
        cfg["startup_trials"],
        cfg["multivariate"],
        cfg["constant_liar"],
    )
    asha = replay.settings(replay.ARMS["random_asha"])
    assert (asha.grace, asha.rf) == (cfg["grace_period"], cfg["reduction_factor"])
    table_epochs = replay.load_table()[0]["epochs"]
    assert (
        asha_rungs(arm.grace, arm.rf, table_epochs)[:-1]
        == asha_rungs(cfg["grace_period"], cfg["reduction_factor"], cfg["max_epochs"])[:-1]
    )
    assert replay.space() == {
        k: (next(iter(v)), next(iter(v.values()))) if isinstance(v, dict) else v for k, v in cfg["space"].items()
    }


def test_the_noise_is_the_tables_whole_curves_near_the_trials_accuracy():
    """A trial's noise is one table run's training-seed deviation curve (spread 0.05 at epoch 1, 0.01 at the last,
    and barely correlated between them) and one run's half difference, from runs of about its final accuracy."""
    noise = replay.noise_of(replay.load_table(), 9)
    sd = np.sqrt((noise.seed_devs**2).mean(axis=0))
    assert sd[0] > 3 * sd[-1]
    assert abs(np.corrcoef(noise.seed_devs[:, 0], noise.seed_devs[:, -1])[0, 1]) < 0.3
    assert np.allclose(noise.half_diffs.mean(axis=0), 0)
    rng = np.random.default_rng(0)
    for level in (0.5, 0.87):
        for _ in range(20):
            dev, half = noise.draw(level, rng)
            i = next(i for i, row in enumerate(noise.seed_devs) if np.array_equal(row, dev))
            nearest = np.sort(np.abs(noise.seed_level - level))[replay.NEAR_DEVS - 1]
            assert abs(noise.seed_level[i] - level) <= nearest
            assert any(np.array_equal(2 * half, row) or np.array_equal(-2 * half, row) for row in noise.half_diffs)


class _Flat:
    """A regressor of the surrogate's shape: every config the same rising curve, and one second an epoch."""

    def __init__(self, curve):
        self.curve = np.asarray(curve)

    def predict(self, X):
        return np.tile(self.curve, (len(X), 1)) if self.curve.ndim else np.full(len(X), float(self.curve))


def test_the_in_flight_level_reached_is_what_the_budget_rule_admits(tmp_path):
    """At 200 trial-epochs of 9-epoch trials the budget rule starts at most 22 trials however many slots there are,
    and the replay reports the 22 it reached, not the 32 asked for."""
    zeros = np.zeros((3, 9))
    sur = replay.Surrogate(
        models={"cosine": _Flat(np.linspace(0.5, 0.8, 9))},
        time_model=_Flat(0.0),
        noise=replay.Noise(zeros, np.full(3, 0.8), zeros, np.full(3, 0.8)),
        epochs=9,
    )
    wide = replay.run_sweep(replay.ARMS["random"], sur, 0, 200, 32, tmp_path)
    assert wide["trials"] == wide["in_flight_max"] == 22 and wide["in_flight_mean"] <= 22
    narrow = replay.run_sweep(replay.ARMS["random"], sur, 1, 200, 2, tmp_path)
    assert narrow["in_flight_max"] == 2 and 1 < narrow["in_flight_mean"] <= 2


def test_holm_adjusts_step_down_and_stays_monotone():
    assert replay.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert replay.holm([0.3, 0.4]) == pytest.approx([0.6, 0.6])
    assert replay.holm([]) == []


def test_holm_counts_a_pair_of_arms_once_and_leaves_out_what_tests_nothing():
    """Both arms' rows report a pair's comparison: one test, adjusted once. A comparison with every difference zero
    (random search one at a time and at 32: the same sweeps) tests nothing and does not enlarge the family."""
    a_vs_b = replay.paired([0.01, 0.02, 0.015, 0.03, 0.01, 0.02])
    b_vs_a = replay.paired([-0.01, -0.02, -0.015, -0.03, -0.01, -0.02])
    c_vs_a = replay.paired([0.01, -0.02, 0.015, -0.03, 0.01, 0.02])
    same = replay.paired([0.0] * 6)
    replay.adjust({("a", "b"): [a_vs_b, b_vs_a], ("a", "c"): [c_vs_a], ("a", "a1"): [same]}, "holm")
    assert a_vs_b["holm"] == b_vs_a["holm"] == pytest.approx(min(1, 2 * a_vs_b["wilcoxon_p"]))
    assert same["holm"] == 1.0


def test_wins_ties_and_losses_are_counted_one_way():
    """A tie is a difference of exactly zero in the stored accuracies (both picks score the same); the three counts
    add up to the seeds compared."""
    d = [0.01, 0.0, -0.02, 0.03, 0.0, 0.01, 0.002]
    out = replay.paired(d)
    assert (out["wins"], out["ties"], out["losses"], out["of"]) == (4, 2, 1, 7)
    assert replay.paired([0.0] * 6)["wilcoxon_p"] == 1.0


def test_seeds_are_given_as_ranges_or_lists():
    assert replay.parse_seeds("1000-1002,5") == [1000, 1001, 1002, 5]
    assert list(replay.FRESH_SEEDS) == list(range(1000, 1200))


@pytest.mark.parametrize("spec", ["x", "2019-2000", "5-x", "1,,2", "-3"])
def test_a_bad_seed_spec_is_named_not_a_traceback(spec):
    with pytest.raises(ValueError, match=r"--seeds .*is not a seed .*like 1000-1199"):
        replay.parse_seeds(spec)


# --------------------------------------------------------------------------- the candidates for many trials in flight


def test_the_candidates_change_one_thing_each_and_take_the_rest_from_the_config():
    """Each candidate is today's default with one change it names (its sampler or its scheduler); every setting it
    leaves unnamed (ASHA's grace period and reduction factor, TPE's start-up, multivariate, constant liar) is
    conf/config.yaml's, and the declared comparison is against today's default and random + ASHA."""
    cfg = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["search"]
    shipped = (cfg["grace_period"], cfg["reduction_factor"], cfg["startup_trials"], cfg["multivariate"])
    changed = {"grutune_gp": {"sampler"}, "grutune_promote": {"scheduler"}, "grutune_pasha": {"scheduler"}}
    changed["random_top_k"] = {"sampler", "scheduler"}
    assert set(replay.CANDIDATES) == set(changed)
    default = replay.ARMS["grutune"]
    for name in replay.CANDIDATES:
        arm = replay.ARMS[name]
        named = {k for k, v in vars(arm).items() if k != "name" and v != getattr(default, k)}
        assert named == changed[name], name
        arm = replay.settings(arm)
        assert (arm.grace, arm.rf, arm.startup, arm.multivariate) == shipped, name
        assert arm.liar == cfg["constant_liar"], name
    assert replay.SCREEN["versus"] == ("grutune", "random_asha") and replay.SCREEN["in_flight"] == (1, 2, 32)
    seen = [*range(0, 200), *replay.FRESH_SEEDS, *range(2000, 2020)]
    assert not set(replay.SCREEN_SEEDS) & set(seen) and not set(replay.CONFIRM_SEEDS) & {*seen, *replay.SCREEN_SEEDS}


def test_promotion_asha_promotes_the_best_of_the_top_fraction_of_the_highest_rung_first():
    """Rungs at 2, 6 and 9 epochs, reduction factor 3: with five trials at rung 2 only the best (floor(5/3) = 1) is
    promotable; once promoted, a new trial starts; a promotable trial at rung 6 goes before one at rung 2."""
    s = replay.PromotionASHA([2, 6, 9], 3)
    assert s.jobs() == [(None, 2)]
    for i, v in enumerate([0.5, 0.7, 0.6, 0.4, 0.65]):
        s.add(f"t{i}")
        s.record(f"t{i}", 1, v - 0.1)
        s.record(f"t{i}", 2, v)
    assert s.jobs() == [("t1", 6), (None, 2)]
    s.promote("t1")
    assert s.jobs() == [(None, 2)]
    s.add("t5")
    s.record("t5", 2, 0.8)  # six at rung 2: the best two, t5 and t1; t1 was promoted
    assert s.jobs() == [("t5", 6), (None, 2)]
    for e in range(3, 7):
        s.record("t1", e, 0.75)
    for name, v in [("t6", 0.9), ("t7", 0.85)]:  # two more at rung 6: floor(3/3) = 1 promotable there, the best
        s.add(name)
        s.record(name, 6, v)
    assert s.jobs() == [("t6", 9), ("t5", 6), (None, 2)]
    s.promote("t6")
    assert s.promoted[1] == {"t6"} and s.jobs() == [("t5", 6), (None, 2)]


def test_pasha_raises_its_top_rung_only_when_the_top_two_rungs_rank_trials_differently():
    """PASHA's trials end at the second rung (6 epochs) for now; two trials that rank the same at rungs 2 and 6 keep
    it there, a third that overtakes beyond epsilon raises it to 9, and the top of rung 6 becomes promotable."""
    s = replay.PromotionASHA([2, 6, 9], 3, progressive=True)
    assert s.top == 1
    for name, (at2, at6) in {"a": (0.60, 0.70), "b": (0.50, 0.65)}.items():
        s.add(name)
        for e in range(1, 7):
            s.record(name, e, at2 + (at6 - at2) * max(0, e - 2) / 4 if e >= 2 else at2 - 0.05)
    assert s.top == 1 and not s.rises
    assert all(target <= 6 for _, target in s.jobs())
    s.add("c")
    for e in range(1, 7):
        s.record("c", e, 0.40 if e <= 2 else 0.80)  # last at rung 2, first at rung 6
    assert s.top == 2 and len(s.rises) == 1
    assert s.jobs()[0] == ("c", 9)


def test_pasha_takes_epsilon_from_pairs_whose_order_flipped_and_flipped_back():
    """Epsilon is the 90th percentile of the gaps, at an epoch between the two top rungs, of pairs whose order was
    reversed at an earlier epoch and restored before it; a pair that never flipped back counts nothing."""
    s = replay.PromotionASHA([2, 6, 9], 3, progressive=True)
    s.curves = {
        "a": {1: 0.5, 2: 0.4, 3: 0.6, 4: 0.6, 5: 0.6, 6: 0.6},
        "b": {1: 0.4, 2: 0.5, 3: 0.5, 4: 0.5, 5: 0.5, 6: 0.58},  # a ahead, behind at 2, ahead again at 1
        "c": {1: 0.1, 2: 0.1, 3: 0.1, 4: 0.1, 5: 0.1, 6: 0.1},  # always last
    }
    assert s._epsilon() == pytest.approx(0.02)
    s.curves["b"][1] = 0.55  # behind at 2 and at 1: never restored
    s.epsilon = 0.0
    assert s._epsilon() == 0.0


def _flat_surrogate():
    zeros = np.zeros((3, 9))
    return replay.Surrogate(
        models={"cosine": _Flat(np.linspace(0.5, 0.8, 9))},
        time_model=_Flat(0.0),
        noise=replay.Noise(zeros, np.full(3, 0.8), zeros, np.full(3, 0.8)),
        epochs=9,
    )


class _ByLearningRate:
    """A surrogate model whose every epoch reads higher the nearer lr is to 10**-3 (features()[9] = log10 lr)."""

    def predict(self, X):
        return np.array([np.linspace(0.5, 0.8, 9) - abs(x[9] + 3) / 10 for x in np.asarray(X)])


@pytest.mark.parametrize("in_flight", [1, 2, 32])
def test_one_epoch_then_top_k_spends_exactly_what_it_says_and_keeps_the_best_of_epoch_one(tmp_path, in_flight):
    """At 200 trial-epochs: 104 random configs one epoch each, then the 12 best at epoch one to all 9 epochs, 200
    trial-epochs whatever the trials in flight; the 12 that go on are the 12 best readings at epoch one."""
    assert replay.top_k_split(200, 3, 9) == (104, 12)
    n, k = replay.top_k_split(200, 3, 9)
    assert n + k * 8 == 200
    sur = _flat_surrogate()
    sur.models["cosine"] = _ByLearningRate()
    out = replay.run_sweep(replay.ARMS["random_top_k"], sur, 0, 200, in_flight, tmp_path)
    assert out["spent"] == 200 and out["trials"] == 104
    assert out["in_flight_max"] == min(in_flight, 104)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "random_top_k-0.journal")))
    trials = optuna.load_study(study_name="replay-random_top_k-0", storage=storage).get_trials(deepcopy=False)
    full = {t.number for t in trials if len(t.intermediate_values) == 9}
    by_epoch_one = sorted(trials, key=lambda t: -t.intermediate_values[1])
    assert full == {t.number for t in by_epoch_one[:12]}
    assert all(len(t.intermediate_values) == 1 for t in by_epoch_one[12:])


@pytest.mark.parametrize("arm", ["grutune_promote", "grutune_pasha"])
def test_paused_trials_hold_no_slot_and_the_sweep_stays_in_its_budget(tmp_path, arm):
    """Under promotion-based ASHA a trial paused at a rung frees its slot: at 32 in flight the first 32 trials all
    run at once (stopping ASHA's budget rule admits 23), and the sweep spends no more than its 200 trial-epochs."""
    sur = _flat_surrogate()
    sur.models["cosine"] = _ByLearningRate()
    wide = replay.run_sweep(replay.ARMS[arm], sur, 0, 200, 32, tmp_path)
    assert wide["in_flight_max"] == 32 and 190 <= wide["spent"] <= 200
    narrow = replay.run_sweep(replay.ARMS[arm], sur, 1, 200, 2, tmp_path)
    assert narrow["in_flight_max"] == 2 and 190 <= narrow["spent"] <= 200


def test_paused_tpe_sees_a_paused_trial_as_stopping_asha_would_have_left_it():
    """Twenty trials paused at a rung (unfinished, with readings peaking at x = 0.2): TPE through the view ranks them
    as PRUNED trials and proposes near the peak; grutune's TPE on the study as it stands counts them as running,
    poor under its constant liar, and draws at random (no trial finished)."""
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def proposals(sampler):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for i in range(20):
            x = (i + 0.5) / 20
            study.add_trial(
                optuna.trial.create_trial(
                    state=optuna.trial.TrialState.RUNNING,
                    params={"x": x},
                    distributions=dist,
                    intermediate_values={1: 0.8 - abs(x - 0.2), 2: 0.85 - abs(x - 0.2)},
                )
            )
        out = []
        for _ in range(20):
            t = study.ask(dist)
            out.append(t.params["x"])
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        return out

    paused = proposals(replay.PausedTPESampler(seed=0, startup_trials=10))
    plain = proposals(tpe_sampler(0, 10))
    assert sum(abs(x - 0.2) < 0.15 for x in paused) >= 15, paused
    assert sum(abs(x - 0.2) < 0.15 for x in plain) <= 10, plain


def test_the_gp_arm_is_declared_for_the_optuna_whose_gpsampler_imputes_running_trials():
    assert not replay.gp_pending_supported("4.0.0") and not replay.gp_pending_supported("4.8.1")
    assert replay.gp_pending_supported("4.9.0") and replay.gp_pending_supported("5.1.0")


@pytest.mark.skipif(not replay.gp_pending_supported(), reason="GPSampler imputes running trials from Optuna 4.9")
def test_rung_gp_fits_the_readings_at_a_rung_where_plain_gpsampler_sees_no_trial():
    """Twenty trials stopped by ASHA at epoch 1 (PRUNED), readings peaking at x = 0.2: GPSampler models COMPLETE
    trials only, so on the study itself it has nothing to fit; through the rung view it proposes near the peak."""
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study = optuna.create_study(direction="maximize", sampler=replay.RungGPSampler(seed=0, startup_trials=5, rungs=[1]))
    for i in range(20):
        x = (i + 0.5) / 20
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED,
                params={"x": x},
                distributions=dist,
                intermediate_values={1: 0.8 - abs(x - 0.2)},
            )
        )
    out = []
    for _ in range(5):
        t = study.ask(dist)
        out.append(t.params["x"])
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert all(abs(x - 0.2) < 0.1 for x in out), out


def _comparison(d: float, p: float, of: int = 200) -> dict:
    return {"mean_diff": d, "mean_diff_ci95": [d, d], "wins": 1, "ties": 0, "losses": 0, "of": of, "wilcoxon_p": p}


def test_the_verdict_needs_a_holm_win_over_the_default_and_no_loss_at_any_level():
    """A candidate that beats today's default at one level (p = 1e-5, Holm over 4 candidates x 3 levels: 1.2e-4) and
    loses at none meets the bar; one that also loses at another level (p = 0.03) does not; one with a level not yet
    measured, or not on every seed, is not judged; a comparison not made counts in the Holm family at p = 1."""
    summary = {}
    for f in (1, 2, 32):
        block = summary.setdefault(f"200x{f}", {})
        block["grutune_promote"] = {"vs_grutune": _comparison(0.003 if f == 32 else 0.0005, 1e-5 if f == 32 else 0.4)}
        block["grutune_pasha"] = {"vs_grutune": _comparison(0.003 if f == 32 else -0.001, 1e-5 if f == 32 else 0.03)}
        block["random_top_k"] = {"vs_grutune": _comparison(0.001, 0.2, of=150)}
    v = replay.verdict(summary, replay.CANDIDATES, 200)
    assert v["meets_bar"] == {"grutune_gp": None, "grutune_promote": True, "grutune_pasha": False, "random_top_k": None}
    win = v["comparisons"]["grutune_promote"]["vs_grutune"]["32"]
    assert win["wilcoxon_p_holm_screen"] == pytest.approx(12 * 1e-5)
    del summary["200x1"]["grutune_promote"]
    assert replay.verdict(summary, replay.CANDIDATES, 200)["meets_bar"]["grutune_promote"] is None
