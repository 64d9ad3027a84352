"""The search space's conversions (grutune.space): a space validated from params.yaml, turned into Ray Tune's
distributions."""

import pytest
from ray import tune

from grutune.config import load_params
from grutune.space import tune_param_space
from sweeps import tiny_writer


@pytest.fixture(scope="session")
def tiny(write_params):
    return tiny_writer(write_params)


def test_tune_param_space_converts_every_kind(tmp_path, tiny):
    p = load_params(
        tiny(
            tmp_path / "params.yaml",
            space={
                "hidden_size": {"int": [16, 32]},
                "lr": {"loguniform": [1e-4, 1e-2]},
                "dropout": {"uniform": [0.0, 0.5]},
                "cell": {"choice": ["gru", "lstm"]},
                "backbone": "conv",
            },
        )
    )
    space = tune_param_space(p.search.space)
    assert isinstance(space["hidden_size"], tune.search.sample.Integer)
    assert (space["hidden_size"].lower, space["hidden_size"].upper) == (16, 33)  # randint's high is exclusive
    assert isinstance(space["lr"].get_sampler(), tune.search.sample.LogUniform)
    assert (space["dropout"].lower, space["dropout"].upper) == (0.0, 0.5)
    assert space["cell"].categories == ["gru", "lstm"]
    assert space["backbone"] == "conv"


def test_optuna_distributions_convert_every_kind_and_leave_out_fixed_values(tmp_path, tiny):
    """The same space as Optuna's distributions (what the searcher asks with): Optuna's int range includes its
    high, unlike Tune's randint."""
    import optuna

    from grutune.space import optuna_distributions

    p = load_params(
        tiny(
            tmp_path / "params.yaml",
            space={
                "hidden_size": {"int": [16, 32]},
                "lr": {"loguniform": [1e-4, 1e-2]},
                "dropout": {"uniform": [0.0, 0.5]},
                "cell": {"choice": ["gru", "lstm"]},
                "backbone": "conv",
            },
        )
    )
    d = optuna_distributions(p.search.space)
    assert d["hidden_size"] == optuna.distributions.IntDistribution(16, 32)
    assert d["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert d["dropout"] == optuna.distributions.FloatDistribution(0.0, 0.5)
    assert d["cell"] == optuna.distributions.CategoricalDistribution(["gru", "lstm"])
    assert "backbone" not in d and set(d) == {k for k, v in p.search.space.items() if isinstance(v, tuple)}
