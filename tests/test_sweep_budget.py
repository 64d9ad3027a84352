"""What a sweep may spend (grutune.sweep.budget): ASHA's rungs and the epochs a trial runs on average, TPE's start-up
count, and the searcher creating a trial only where a budget of trial-epochs or trial-seconds pays for it."""

import pytest
from ray.tune.search import Searcher

from grutune.config import Budget, Prices, load_params
from grutune.sweep.budget import (
    asha_rungs,
    budget_seconds,
    expected_trial_epochs,
    expected_trials,
    spend_limit,
    spent,
    startup_count,
)
from grutune.sweep.top_k import top_k_plan
from sweeps import finish_all, journal_trials, searcher_at


def search_params(tmp_path, write_params, **search):
    return load_params(write_params(tmp_path / "params.yaml", {"search": search})).search


# --------------------------------------------------------------------------- ASHA's arithmetic, TPE's start-up


@pytest.mark.parametrize("value, count", [(0.3, 15), (0.01, 1), (4, 4), (4.0, 4)])
def test_startup_trials_is_a_count_or_a_share_of_num_samples(tmp_path, write_params, value, count):
    assert startup_count(search_params(tmp_path, write_params, num_samples=48, startup_trials=value)) == count


def test_asha_rungs_are_rays_milestones_rounded_up_to_a_whole_epoch():
    """Ray's ASHA puts its rungs at grace_period * reduction_factor**k (1, 2.5, 6.25 for a factor of 2.5); a trial
    reports whole epochs, so it is decided at 1, 3 and 7, then runs to max_epochs. Rounding each rung up before the
    next (1, 3, 8) would be wrong."""
    assert asha_rungs(1, 2.5, 9) == [1, 3, 7, 9]
    assert asha_rungs(1, 3, 9) == [1, 3, 9] and asha_rungs(2, 3, 12) == [2, 6, 12] and asha_rungs(3, 3, 3) == [3]


def test_a_startup_share_is_of_the_trials_a_budget_of_trial_epochs_pays_for(tmp_path, write_params):
    """With max_trial_epochs, the sweep runs fewer trials than num_samples: ASHA's trials (grace 1, factor 3, 9
    epochs) run 1 + 2/3 + 6/9 epochs on average, so 200 trial-epochs pay for about 86 trials, and 30% of those
    are random start-up: 26, not 30% of num_samples' 1,000."""
    assert expected_trial_epochs(1, 3, 9) == pytest.approx(7 / 3) and expected_trial_epochs(2, 3, 12) == 4
    assert expected_trial_epochs(3, 3, 3) == 3
    s = search_params(
        tmp_path,
        write_params,
        num_samples=1000,
        startup_trials=0.3,
        max_trial_epochs=200,
        max_epochs=9,
        grace_period=1,
        reduction_factor=3,
    )
    assert expected_trials(s) == pytest.approx(200 / (7 / 3)) and startup_count(s) == 26
    s = search_params(tmp_path, write_params, num_samples=10, startup_trials=0.3, max_trial_epochs=200)
    assert startup_count(s) == 3  # num_samples ends it first


# --------------------------------------------------------------------------- a budget in money or hours


def test_a_budget_becomes_seconds_of_one_trial_in_its_tightest_unit():
    """Each unit of `budget` as trial-seconds of a trial holding `resources`: the tightest binds; a unit in a resource
    the trials do not hold (GPU-hours without GPUs, dollars without prices) bounds nothing."""
    one_gpu, cpus = {"cpu": 2, "gpu": 1}, {"cpu": 4, "gpu": 0}
    prices = Prices(cpu=0.0, gpu=3.6)  # a dollar per 1,000 GPU-seconds
    assert budget_seconds(Budget(), one_gpu, prices) is None
    assert budget_seconds(Budget(trial_hours=1), cpus, Prices()) == (3600, "trial_hours")
    assert budget_seconds(Budget(cpu_hours=1), cpus, Prices()) == (900, "cpu_hours")  # 4 CPUs a trial
    assert budget_seconds(Budget(gpu_hours=1), cpus, Prices()) is None
    assert budget_seconds(Budget(dollars=5), cpus, Prices()) is None
    assert budget_seconds(Budget(gpu_hours=2, dollars=5), one_gpu, prices) == pytest.approx((5000, "dollars"))
    assert budget_seconds(Budget(gpu_hours=1, dollars=5), one_gpu, prices) == (3600, "gpu_hours")
    assert spent(7200, one_gpu, prices) == "2 trial-hours, 2 GPU-hours, $7.20"
    assert spent(1800, cpus, Prices()) == "0.5 trial-hours"


def test_a_gpu_budget_for_trials_without_a_gpu_bounds_nothing_and_says_so(tmp_path, write_params, caplog):
    params = search_params(tmp_path, write_params, budget={"gpu_hours": 0.5, "cpu_hours": 2})
    assert spend_limit(params, "search", {"cpu": 2, "gpu": 0}) == (3600, "cpu_hours")
    assert "search.budget.gpu_hours does not bound this sweep: its trials hold no GPU here" in caplog.text
    caplog.clear()
    assert spend_limit(params, "search", {"cpu": 2, "gpu": 1}) == (1800, "gpu_hours")
    assert not caplog.text


# --------------------------------------------------------------------------- the searcher keeps to a budget


def test_a_budget_of_trial_epochs_ends_the_sweep_before_num_samples(tmp_path):
    """max_trial_epochs: the searcher creates a trial only while the epochs run so far and the new trial's first
    (ASHA's grace period) fit in the budget, whatever num_samples says; each trial below runs 2 epochs."""
    assert finish_all(searcher_at(tmp_path, target=100, max_trial_epochs=7)) == 4  # 2+2+2+1 fit; 2+2+2+2+1 do not
    assert len(journal_trials(tmp_path)) == 4
    (tmp_path / "g").mkdir()
    assert finish_all(searcher_at(tmp_path / "g", target=100, max_trial_epochs=7, min_trial_epochs=2)) == 3


def test_a_budget_keeps_room_for_running_trials_to_finish(tmp_path):
    """With trials in flight, a new trial must fit beside every running trial run to the end (ASHA may promote
    them all), so the end of the budget goes to promoted trials, not to new ones cut off at once. While a running
    trial may still free budget, the searcher waits; it says FINISHED only when none can."""
    s = searcher_at(tmp_path, target=100, max_concurrent=10, max_epochs=3, max_trial_epochs=8, min_trial_epochs=1)
    assert all(isinstance(s.suggest(t), dict) for t in "abc")  # 3 + 3, and c's first epoch: 7 <= 8
    assert s.suggest("d") is None  # 3 + 3 + 3 + 1 > 8, though nothing has run yet
    s.on_trial_result("a", {"epoch": 1, "val_accuracy": 0.5})
    s.on_trial_complete("a", {"epoch": 1, "val_accuracy": 0.5})  # ASHA stopped a at its first rung: 1 + 3 + 3 + 1
    assert isinstance(s.suggest("d"), dict)
    assert s.suggest("e") is None
    for t in "bcd":
        s.on_trial_complete(t, {"epoch": 3, "val_accuracy": 0.6})
    assert s.suggest("e") == Searcher.FINISHED  # 1 + 3 + 3 + 3 = 10: nothing running, and no room
    assert len(journal_trials(tmp_path)) == 4


def test_a_budget_of_trial_seconds_charges_each_epoch_at_the_pace_measured(tmp_path):
    """A time budget (search.budget, as trial-seconds): a new trial must fit beside every running trial run to the
    end at its own measured pace, plus the new trial's first epochs at the sweep's pace. Before anything is measured
    nothing can be charged; after that the searcher waits while a running trial may free budget, and says FINISHED
    when none runs."""
    s = searcher_at(tmp_path, target=100, max_concurrent=10, max_epochs=2, max_trial_seconds=25)
    assert isinstance(s.suggest("a"), dict) and isinstance(s.suggest("b"), dict)  # nothing measured yet
    s.on_trial_result("a", {"epoch": 1, "val_accuracy": 0.5, "time_total_s": 5.0})
    assert isinstance(s.suggest("c"), dict)  # a: 5 + 1 more epoch at 5; b: 2 epochs at 5; c's first: 5 -> 25
    assert s.suggest("d") is None  # + c's 2 epochs at 5 = 35 > 25: wait, a running trial may stop early
    s.on_trial_complete("a", {"epoch": 1, "val_accuracy": 0.5, "time_total_s": 5.0})  # ASHA stopped a: 5 + 10 + 10 + 5
    assert s.suggest("d") is None
    for t in "bc":
        s.on_trial_result(t, {"epoch": 1, "val_accuracy": 0.6, "time_total_s": 2.0})
        s.on_trial_complete(t, {"epoch": 2, "val_accuracy": 0.6, "time_total_s": 4.0})
    assert isinstance(s.suggest("d"), dict)  # 5 + 4 + 4 spent, pace 13/5 a epoch: 13 + 2.6 <= 25
    s.on_trial_complete("d", {"epoch": 2, "val_accuracy": 0.7, "time_total_s": 12.0})
    assert s.suggest("e") == Searcher.FINISHED  # 25 spent, nothing running: no room
    assert [t.user_attrs.get("seconds") for t in journal_trials(tmp_path)] == [5.0, 4.0, 4.0, 12.0]


# --------------------------------------------------------------------------- search.scheduler top_k


@pytest.mark.parametrize(
    "trials, budget, screen, epochs, rf, n, k",
    [
        (10**6, 200, 1, 9, 9, 104, 12),  # the replay's random_top_k (benchmarks/search_replay.py, top_k_split)
        (10**6, 10, 1, 3, 3, 6, 2),  # a 7th trial would need a 3rd to go on: 7 + 3 x 2 = 13
        (48, None, 2, 12, 3, 48, 16),  # no budget: num_samples, and a third of them on
        (5, 200, 1, 9, 9, 5, 1),  # num_samples first; at least one goes on
        (10**6, 8, 1, 9, 9, 0, 0),  # not even one trial and its way to the end
    ],
)
def test_a_top_k_screen_is_the_most_trials_whose_screen_and_best_fit_the_budget(
    trials, budget, screen, epochs, rf, n, k
):
    plan = top_k_plan(trials, budget, screen, epochs, rf)
    assert (plan.n, plan.k) == (n, k)
    assert budget is None or plan.trial_epochs <= budget
