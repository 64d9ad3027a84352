"""benchmarks/search_confirm.py's arms as the search stage would run them: each arm's params validate, take
conf/config.yaml's search section for what the arm does not name, and keep the sweep in the run's own folder."""

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from grutune.sweep.top_k import top_k_plan

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location("search_confirm", ROOT / "benchmarks" / "search_confirm.py")
confirm = sys.modules["search_confirm"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(confirm)

ARGS = argparse.Namespace(budget=200, max_epochs=9, subset=2000)
SHIPPED = yaml.safe_load((ROOT / "conf/config.yaml").read_text())["search"]


@pytest.mark.parametrize("arm", [*confirm.ARMS, confirm.TOP_K["arm"]])
def test_every_arm_keeps_its_sweep_in_the_runs_folder_and_the_shipped_settings_it_does_not_name(arm):
    s = confirm.params_for(arm, 2000, ARGS).search
    assert s.storage is None  # not conf/'s ${oc.env:...} taken as a folder name
    assert (s.max_trial_epochs, s.max_epochs, s.train_subset) == (200, 9, 2000)
    assert (s.multivariate, s.constant_liar) == (SHIPPED["multivariate"], SHIPPED["constant_liar"])
    if arm == "grutune":
        assert (s.grace_period, s.reduction_factor, s.startup_trials, s.scheduler) == (
            SHIPPED["grace_period"],
            SHIPPED["reduction_factor"],
            SHIPPED["startup_trials"],
            SHIPPED["scheduler"],
        )


def test_the_top_k_arm_is_the_screen_the_replay_measured():
    s = confirm.params_for(confirm.TOP_K["arm"], 2000, ARGS).search
    plan = top_k_plan(s.num_samples, s.max_trial_epochs, s.grace_period, s.max_epochs, s.reduction_factor)
    assert s.scheduler == "top_k" and (plan.n, plan.k, plan.trial_epochs) == (104, 12, 200)


def test_many_in_flight_give_each_trial_a_share_of_the_cores_and_the_declared_level_its_fresh_seeds():
    args = argparse.Namespace(**vars(ARGS), in_flight=32)
    s = confirm.params_for("grutune", 2100, args).search
    assert s.max_concurrent_trials == 32 and s.resources.cpu == pytest.approx((os.cpu_count() or 1) / 32)
    assert (s.grace_period, s.reduction_factor) == (SHIPPED["grace_period"], SHIPPED["reduction_factor"])
    assert confirm.params_for("grutune", 2000, ARGS).search.resources.cpu == 1  # the two-in-flight runs: one a core
    declared = set(confirm.parse_seeds(confirm.IN_FLIGHT["seeds"]))
    assert len(declared) == 20 and not declared & set(confirm.FRESH_SEEDS)


def test_the_level_reached_is_counted_from_the_trials_result_rows(tmp_path):
    """Three trials whose first epoch took 5 s, reported at whole seconds: a from 105 to 130, b from 115 to 120, c
    from 130 to 160. Each is taken at its shortest (start = first report + 1 - 5 s): a 101-130, b 111-120, c 126-160:
    at most 2 at once (a and c touch at 126-130, not a, b and c); 29 + 9 + 34 = 72 trial-seconds over 59, 1.22 on
    average. A trial of one short epoch is no interval, not a negative one."""
    trials = {"a": (105, 130), "b": (115, 120), "c": (130, 160), "d": (140, 140)}
    for name, (first, last) in trials.items():
        trial = tmp_path / "sweep" / "tune-x" / name
        trial.mkdir(parents=True)
        rows = [{"timestamp": first, "time_this_iter_s": 5.0 if name != "d" else 0.4}, {"timestamp": last}]
        (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert confirm.in_flight_reached(confirm.result_rows(tmp_path)) == {"max": 2, "mean": 1.22}
    assert confirm.in_flight_reached(confirm.result_rows(tmp_path / "empty")) == {"max": 0, "mean": 0.0}
