"""The report's readers (grutune.report.inputs) on files written in the stages' real formats: what they read, and a
missing or bad input named with its file and the stage that writes it."""

import shutil

import pytest

from grutune.errors import GrutuneError
from grutune.objectives import CLASSIFIER_OBJECTIVE
from grutune.report import load_dataset_results
from report_fixtures import SPACES, dataset_files, load, write_inputs


def test_the_pareto_front_is_read_with_the_picked_model_marked(tmp_path):
    written = write_inputs(tmp_path)
    d, _ = load(tmp_path)
    assert [p["trial_id"] for p in d.pareto] == [t["trial_id"] for t in written["mnist"]["pareto"]]
    assert [p["picked"] for p in d.pareto].count(True) == 1


def test_the_gan_log_is_read_as_its_scored_epochs(tmp_path):
    write_inputs(tmp_path)
    _, gan = load(tmp_path)
    assert gan.val_fid == [(1, 29.0), (2, 28.0), (3, 40.0), (4, 26.0)]


@pytest.mark.parametrize(
    "missing, stage_name",
    [
        ("metrics/mnist/search.json", "search@mnist"),
        ("metrics/mnist/search_details.json", "search@mnist"),
        ("search/mnist/trials.csv", "search@mnist"),
        ("metrics/mnist/search_progress_time.csv", "search@mnist"),
        ("metrics/mnist/classifier.json", "train@mnist"),
        ("metrics/mnist/classifier_details.json", "train@mnist"),
        ("metrics/mnist/confusion.csv", "train@mnist"),
        ("data/prepared/mnist.npz", "prepare@mnist"),
        ("metrics/gan_samples.png", "gan_eval"),
        ("metrics/gan_samples_by_class.png", "gan_eval"),
        ("metrics/gan_log.csv", "gan"),
        ("metrics/gan.json", "gan_eval"),
        ("metrics/gan_details.json", "gan_eval"),
        ("metrics/gan_search.json", "gan_search"),
        ("metrics/gan_search_details.json", "gan_search"),
        ("search/gan/trials.csv", "gan_search"),
        ("metrics/gan_search_progress_time.csv", "gan_search"),
    ],
)
def test_a_missing_input_names_the_file_and_its_stage(tmp_path, missing, stage_name):
    write_inputs(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(GrutuneError) as e:
        load(tmp_path)
    assert str(tmp_path / missing) in str(e.value) and f"stage {stage_name} " in str(e.value)


def test_a_bad_gan_trials_file_names_the_file(tmp_path):
    write_inputs(tmp_path)
    gan_trials = tmp_path / "search/gan/trials.csv"
    shutil.copy(tmp_path / "search/mnist/trials.csv", gan_trials)  # the classifier's table: no best_fid, no lr_g
    with pytest.raises(GrutuneError, match=r"missing column\(s\) \['best_fid'.*rerun stage gan_search") as e:
        load(tmp_path)
    assert str(gan_trials) in str(e.value)
    write_inputs(tmp_path)
    gan_trials.write_text(gan_trials.read_text().replace(",conv,", ",mlp,", 1))  # not a backbone
    with pytest.raises(GrutuneError, match=r"(?s)trial '\d+' is not a valid row.*unknown name 'mlp'") as e:
        load(tmp_path)
    assert str(gan_trials) in str(e.value)


def test_a_trial_outside_the_space_is_named_with_its_sweeps_stage(tmp_path):
    """Trials drawn from another space than the one the report is given (params.yaml changed since the sweep ran):
    their parameter importance would be computed over the wrong distributions, so the report refuses them."""
    write_inputs(tmp_path)
    narrower = {**SPACES[CLASSIFIER_OBJECTIVE], "num_layers": 1}  # fixed where the sweep searched 1 to 3
    with pytest.raises(GrutuneError, match=r"trial \d+: num_layers: the space fixes num_layers at 1, got [23]") as e:
        load_dataset_results("mnist", dataset_files(tmp_path, "mnist"), narrower)
    assert str(tmp_path / "search/mnist/trials.csv") in str(e.value) and "stage search@mnist ran" in str(e.value)
