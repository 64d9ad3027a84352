"""benchmarks/search_confirm.py's arms as the search stage would run them: each arm's params validate, take
conf/config.yaml's search section for what the arm does not name, and keep the sweep in the run's own folder."""

import argparse
import importlib.util
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
