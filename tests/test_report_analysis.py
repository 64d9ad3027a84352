"""A sweep's numbers as the report draws them (grutune.report.analysis): Optuna's parameter importance over the
sweep's own distributions, in the sweep's direction (the classifier's accuracy up, the GAN's FID down)."""

import math

import optuna
import pytest

from grutune.objectives import CLASSIFIER_OBJECTIVE, GAN_OBJECTIVE
from grutune.report.analysis import param_distributions, param_importances
from grutune.report.figures import parallel_coordinates_figure
from grutune.report.inputs import load_sweep
from report_fixtures import (
    GAN_HPARAMS,
    HPARAMS,
    SPACES,
    column,
    lr_fid,
    progress_by_time,
    random_trials,
    sweep,
    trial_columns,
    write_csv,
)


def test_importance_follows_the_sweeps_direction():
    trials = random_trials(80, seed=3, score=lr_fid, objective=GAN_OBJECTIVE)  # 80: PED-ANOVA is steady on these
    low = param_importances(sweep(trials, GAN_OBJECTIVE))
    high = param_importances(sweep(trials, GAN_OBJECTIVE, "max"))
    # every hyperparameter the default space varies: all but `conditional` (fixed false)
    assert set(low) == set(GAN_HPARAMS) - {"conditional"} and sum(low.values()) == pytest.approx(1)
    assert max(low, key=low.get) == "lr_d" and max(high, key=high.get) == "lr_g", (low, high)


@pytest.mark.parametrize(
    "key",
    [
        k
        for k, d in SPACES[GAN_OBJECTIVE].items()
        if isinstance(d, tuple) and d[0] == "choice" and isinstance(d[1][0], str)
    ],
)
def test_a_categorical_gan_hyperparameter_is_read_and_ranked_as_a_category(tmp_path, key):
    """Each string-valued choice of the GAN space (a backbone, a generator's kind): read from trials.csv as names,
    the space's Optuna categorical (over the names the trials took), an importance and a parallel-coordinates axis;
    the FID here depends on it alone."""
    choices = SPACES[GAN_OBJECTIVE][key][1]
    trials = random_trials(24, seed=5, score=lambda t: 50.0 + 100 * choices.index(t[key]), objective=GAN_OBJECTIVE)
    others = {k: trials[0][k] for k in GAN_HPARAMS if k != key}
    trials = [{**t, **others} for t in trials]  # nothing else varies
    write_csv(tmp_path / "trials.csv", trials, trial_columns(GAN_OBJECTIVE))
    write_csv(
        tmp_path / "progress.csv", progress_by_time(trials, 5, GAN_OBJECTIVE), ["wall_time_s", "trial_fid", "best_fid"]
    )
    s = load_sweep(
        {"trials": tmp_path / "trials.csv", "progress_time": tmp_path / "progress.csv"},
        "gan_search",
        GAN_OBJECTIVE,
        SPACES[GAN_OBJECTIVE],
    )
    assert [t[key] for t in s.trials] == [t[key] for t in trials]
    dist = param_distributions(s)[key]
    assert isinstance(dist, optuna.distributions.CategoricalDistribution)
    assert set(dist.choices) == {t[key] for t in trials}
    assert dist.choices == tuple(choices)  # the space's own, in its order
    assert param_importances(s) == {key: pytest.approx(1.0)}
    assert parallel_coordinates_figure(s) is not None


@pytest.mark.parametrize("key", ["lr", "hidden_size"])
def test_importance_ranks_the_one_parameter_accuracy_depends_on_first(key):
    def score(t):  # a function of `key` alone
        return {"lr": lambda v: 0.9 + 0.05 * math.log10(v), "hidden_size": lambda v: v / 1000}[key](t[key])

    imp = param_importances(sweep(random_trials(40, seed=1, score=score)))
    assert set(imp) == set(HPARAMS) and sum(imp.values()) == pytest.approx(1)
    assert max(imp, key=imp.get) == key, imp
    assert imp == param_importances(sweep(random_trials(40, seed=1, score=score)))  # deterministic


@pytest.mark.parametrize("objective", [CLASSIFIER_OBJECTIVE, GAN_OBJECTIVE])
def test_importance_is_empty_when_there_is_nothing_to_rank(objective):
    trials, col = random_trials(5, seed=0, objective=objective), column(objective)
    assert param_importances(sweep(trials[:1], objective)) == {}
    same = [{**t, **{k: trials[0][k] for k in objective.hp_model.model_fields}} for t in trials]  # nothing varies
    assert param_importances(sweep(same, objective)) == {}
    tied = [{**t, col: 0.5} for t in trials]
    assert param_importances(sweep(tied, objective)) == {}
    broken = [{**t, "status": "failed", col: float("nan")} for t in trials]
    assert param_importances(sweep(broken, objective)) == {}
