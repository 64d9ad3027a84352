"""End to end: `dvc repro` of the whole pipeline on tiny generated datasets served over loopback HTTP.

Real DVC, Ray, Optuna and W&B (offline); only the budget is shrunk to a few CPU seconds per stage.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from fakedata import checksums_yaml, make_cifar10_binary, make_mnist_like, serve_directory

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["mnist", "cifar10"]
TINY = {  # params.yaml overrides: the full pipeline in a few minutes on 2 CPU cores
    "search": {
        "num_samples": 3,
        "max_epochs": 2,
        "grace_period": 1,
        "train_subset": 1024,
        "resources": {"cpu": 1, "gpu": 0},
        "objectives": ["val_accuracy", "params"],
        "pick": "smallest",
        "pick_within": 0.2,
        "space": {
            "hidden_size": {"choice": [32, 48]},
            "num_layers": 1,
            "batch_size": 64,
            "lr": {"loguniform": [2e-3, 5e-3]},
        },
    },
    "train": {"epochs": 2},
    "gan": {
        "dataset": "mnist",
        "epochs": 1,
        "batch_size": 64,
        "noise_dim": 16,
        "train_subset": 512,
        "eval_samples": 200,
    },
    "gan_search": {
        "num_samples": 2,
        "max_epochs": 2,
        "grace_period": 1,
        "train_subset": 512,
        "eval_samples": 200,
        "min_diversity": 0.0,
        "resources": {"cpu": 1, "gpu": 0},
        "space": {"hidden_size": {"choice": [16, 32]}, "num_layers": 1, "backbone": "none"},
    },
}


def run(cmd, cwd, env, timeout=1200):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory, write_params):
    """A fresh git+DVC project holding this repo's pipeline, with a tiny budget and generated data on a mirror."""
    tmp = tmp_path_factory.mktemp("e2e")
    proj, mirror = tmp / "project", tmp / "mirror"
    proj.mkdir()
    for name in ["dvc.yaml", "pipeline", "src", ".dvcignore"]:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, proj / name)
    params = yaml.safe_load(write_params(proj / "params.yaml", TINY, datasets=DATASETS, wandb=True).read_text())
    # Hydra composition on, as in this repo: `dvc exp run` composes conf/ (here: the tiny params as the base config,
    # with the repo's preset groups) into params.yaml.
    shutil.copytree(ROOT / "conf", proj / "conf")
    defaults = yaml.safe_load((ROOT / "conf/config.yaml").read_text())["defaults"]
    (proj / "conf/config.yaml").write_text(yaml.safe_dump({"defaults": defaults, **params}, sort_keys=False))
    make_mnist_like(mirror, n_train=1500, n_test=300, seed=0)
    make_cifar10_binary(mirror, n_train_per_batch=200, n_test=300, seed=0)
    (tmp / "checksums.yaml").write_text(checksums_yaml("mnist", mirror) + checksums_yaml("cifar10", mirror))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RAY_", "DVC_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        GRUTUNE_CHECKSUMS=str(tmp / "checksums.yaml"),
        WANDB_MODE="offline",
        RAY_ADDRESS="local",  # the stages' own Ray (the sweeps) or none (the final stages), whatever else runs here
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )
    run(["git", "init", "-q"], proj, env)
    run([sys.executable, "-m", "dvc", "init", "-q"], proj, env)
    shutil.copytree(ROOT / ".dvc/plots", proj / ".dvc/plots")  # the repo's plot templates (the Pareto front's)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], proj, env)
    run([sys.executable, "-m", "dvc", "config", "hydra.enabled", "true"], proj, env)
    run(["git", "add", "-A"], proj, env)
    run(["git", "commit", "-qm", "init"], proj, env)
    with serve_directory(mirror) as url:
        env["GRUTUNE_DATA_MIRROR"] = url
        repro = run([sys.executable, "-m", "dvc", "repro"], proj, env)
    return proj, params, env, repro


@pytest.fixture
def own_project(project, tmp_path):
    """A copy of `project` for a test that changes it (params, experiments, commits, the queue): no test sees what
    another changed, whatever order they run in. A copied DVC project is a project of its own (and a sweep copied
    with it extends in the copy: see tests/test_search_stage.py)."""
    proj, params, env, repro = project
    copy = tmp_path / "project"
    shutil.copytree(proj, copy, symlinks=True)
    return copy, params, env, repro


@pytest.mark.slow
def test_every_declared_output_exists(project):
    proj, params, env, _ = project
    expected = [
        "models/gan.pt",
        "metrics/gan.json",
        "metrics/gan_details.json",
        "metrics/gan_log.csv",
        "metrics/gan_samples.png",
        "metrics/gan_samples_by_class.png",
        "report/index.html",
        "search/gan/best.yaml",
        "search/gan/trials.csv",
        "metrics/gan_search.json",
        "metrics/gan_search_details.json",
        "metrics/gan_search_progress.csv",
        "metrics/gan_search_progress_time.csv",
    ]
    for d in DATASETS:
        expected += [
            f"data/raw/{d}",
            f"data/prepared/{d}.npz",
            f"search/{d}/best.yaml",
            f"search/{d}/trials.csv",
            f"metrics/{d}/search.json",
            f"metrics/{d}/search_details.json",
            f"models/{d}/classifier.pt",
            f"metrics/{d}/classifier.json",
            f"metrics/{d}/classifier_details.json",
            f"metrics/{d}/confusion.csv",
            f"metrics/train_log/{d}.csv",
        ]
    missing = [p for p in expected if not (proj / p).exists()]
    assert not missing
    status = run([sys.executable, "-m", "dvc", "status", "--json"], proj, env)
    assert json.loads(status.stdout) == {}, status.stdout


@pytest.mark.slow
def test_metrics_show_reports_classifier_and_gan(project):
    """DVC's metrics are the few figures compared across experiments (grutune.io.METRICS); the rest of what each
    stage measured is in the details file beside them, which DVC does not read as metrics."""
    from grutune.io import METRICS

    proj, params, env, _ = project
    out = json.loads(run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], proj, env).stdout)
    metrics = {path: v["data"] for path, v in out[""]["data"].items()}
    assert not [p for p in metrics if "details" in p]
    details = lambda path: json.loads((proj / path).read_text())  # noqa: E731
    for d in DATASETS:
        clf = metrics[f"metrics/{d}/classifier.json"]
        assert set(clf) == set(METRICS["classifier"])
        assert 0.0 <= clf["test_accuracy"] <= 1.0 and clf["params"] > 0
        clf_details = details(f"metrics/{d}/classifier_details.json")
        assert clf_details["test_loss"] >= 0 and len(clf_details["per_class_accuracy"]) == 10
        search = metrics[f"metrics/{d}/search.json"]
        # TINY has two objectives and no prices: the picked point's value, and no cost
        assert set(search) == {"best_val_accuracy", "picked_val_accuracy", "trials"}
        assert search["trials"] == params["search"]["num_samples"]
        assert 0.0 <= search["picked_val_accuracy"] <= search["best_val_accuracy"] <= 1.0
        counts = details(f"metrics/{d}/search_details.json")
        assert counts["completed"] + counts["pruned"] + counts["errored"] == search["trials"]
        assert counts["wall_time_s"] > 0 and counts["pareto_points"] >= 1
    # The generated classes are learnable: a working pipeline beats chance (0.1) clearly on MNIST-like data.
    assert metrics["metrics/mnist/classifier.json"]["test_accuracy"] > 0.5
    gan, gan_details = metrics["metrics/gan.json"], details("metrics/gan_details.json")
    assert set(gan) == set(METRICS["gan"])
    assert gan["fid"] >= 0 and 1.0 <= gan_details["inception_score"] <= 10.0
    real = gan_details["reference_inception_score_test"]
    assert gan["inception_score_ratio"] == pytest.approx(gan_details["inception_score"] / real)
    for key in (
        "precision",
        "recall",
        "reference_precision_train_vs_test",
        "reference_recall_train_vs_test",
        "class_share_distance",
    ):
        assert 0.0 <= gan_details[key] <= 1.0, key
    assert len(gan_details["class_share"]) == 10  # keyed by class name
    assert sum(gan_details["reference_class_share_test"].values()) == pytest.approx(1, abs=1e-3)
    gs = metrics["metrics/gan_search.json"]
    assert set(gs) == set(METRICS["gan_search"]) and gs["best_fid"] >= 0
    assert details("metrics/gan_search_details.json")["trials"] == params["gan_search"]["num_samples"]
    best = yaml.safe_load((proj / "search/gan/best.yaml").read_text())
    assert best["config"]["hidden_size"] in (16, 32) and best["fid"] == gs["best_fid"]


@pytest.mark.slow
def test_best_config_and_trials_table(project):
    proj, params, env, _ = project
    for d in DATASETS:
        best = yaml.safe_load((proj / f"search/{d}/best.yaml").read_text())
        assert best["config"]["hidden_size"] in (32, 48) and best["config"]["num_layers"] == 1
        assert 2e-3 <= best["config"]["lr"] <= 5e-3
        rows = (proj / f"search/{d}/trials.csv").read_text().splitlines()
        assert len(rows) == 1 + params["search"]["num_samples"]
        assert rows[0].startswith("trial,trial_id,status,cell,")
        assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(params["search"]["num_samples"]))


@pytest.mark.slow
def test_train_retrains_the_point_the_pick_rule_takes_from_the_pareto_front(project):
    """TINY searches val_accuracy and params, and picks the smallest model within 0.2 of the most accurate."""
    from grutune.metrics import dominates

    proj, params, env, _ = project
    for d in DATASETS:
        best = yaml.safe_load((proj / f"search/{d}/best.yaml").read_text())
        with open(proj / f"search/{d}/pareto.csv") as f:
            front = list(csv.DictReader(f))
        with open(proj / f"search/{d}/trials.csv") as f:
            done = [r for r in csv.DictReader(f) if r["status"] == "completed"]
        point = lambda r: (float(r["best_val_accuracy"]), float(r["params"]))  # noqa: E731
        on_front = {r["trial_id"] for r in front}
        for r in done:  # the front is exactly the completed trials that no completed trial dominates
            assert (r["trial_id"] in on_front) == (not any(dominates(point(q), point(r), (1, -1)) for q in done))
        (picked,) = [r for r in front if r["picked"] == "True"]
        top = max(point(r)[0] for r in front)
        assert point(picked)[1] == min(point(r)[1] for r in front if point(r)[0] >= top - 0.2)
        assert picked["trial_id"] == best["trial_id"] and best["pick"] == "smallest"
        clf = json.loads((proj / f"metrics/{d}/classifier.json").read_text())
        clf_details = json.loads((proj / f"metrics/{d}/classifier_details.json").read_text())
        assert clf_details["picked"]["trial_id"] == best["trial_id"] and clf_details["picked"]["rule"] == "smallest"
        assert clf["params"] == int(point(picked)[1])  # the picked architecture, retrained
        assert clf_details["latency_ms"] > 0 and clf_details["latency_batch_ms"] > 0
        assert clf_details["latency_hardware"]
        ckpt = torch.load(proj / f"models/{d}/classifier.pt", weights_only=True)
        assert ckpt["config"] == best["config"]


@pytest.mark.slow
def test_checkpoints_load_weights_only_and_rebuild(project):
    from grutune.models import build_classifier

    proj, *_ = project
    ckpt = torch.load(proj / "models/mnist/classifier.pt", weights_only=True)
    assert set(ckpt) >= {"model", "model_kwargs", "config", "epoch", "data_hash"}
    model = build_classifier(ckpt["model_kwargs"])
    model.load_state_dict(ckpt["model"])
    gan = torch.load(proj / "models/gan.pt", weights_only=True)
    assert {"model", "model_kwargs", "discriminator"} <= set(gan)


@pytest.mark.slow
def test_wandb_runs_carry_lineage_and_metrics_and_close_cleanly(project):
    from wandb_records import read_run

    proj, params, env, _ = project
    runs = [read_run(f) for f in (proj / "wandb").glob("offline-run-*/run-*.wandb")]
    by_type = {}
    for r in runs:
        by_type.setdefault(r["job_type"], []).append(r)
    n = params["search"]["num_samples"]
    n_gan = params["gan_search"]["num_samples"]
    assert {k: len(v) for k, v in by_type.items()} == {
        "trial": n * len(DATASETS) + n_gan,
        "sweep": len(DATASETS) + 1,
        "train": len(DATASETS),
        "gan": 1,
        "gan_eval": 1,
    }
    assert all(r["exit_code"] == 0 for r in runs), "a run was left unfinished (shown as crashed)"
    commit = run(["git", "rev-parse", "HEAD"], proj, env).stdout.strip()
    for d in DATASETS:
        best = yaml.safe_load((proj / f"search/{d}/best.yaml").read_text())
        trials = [r for r in by_type["trial"] if r["group"] == best["sweep_id"]]
        assert len(trials) == n
        epochs = {
            row["trial_id"]: int(row["epochs"]) for row in csv.DictReader((proj / f"search/{d}/trials.csv").open())
        }
        for t in trials:
            assert t["config"]["data_hash"] == best["data_hash"] and t["config"]["git_commit"] == commit
            assert {"cell", "hidden_size", "lr", "batch_size"} <= set(t["config"])
            steps = [h for h in t["history"] if "val_accuracy" in h]
            assert len(steps) == epochs[t["name"]] and {"train_loss", "val_loss", "lr"} <= set(steps[-1])
        (sweep,) = [r for r in by_type["sweep"] if r["group"] == best["sweep_id"]]
        assert any(h.get("trials_table", {}).get("_type") == "table-file" for h in sweep["history"])
        assert sweep["summary"]["trials"] == n and sweep["summary"]["best_trial"] == best["trial_id"]
    for r in by_type["train"]:
        assert any("confusion_matrix" in h for h in r["history"]) and 0 <= r["summary"]["test_accuracy"] <= 1
    (gan,), (gan_eval,) = by_type["gan"], by_type["gan_eval"]
    assert any(h.get("samples", {}).get("_type") == "image-file" for h in gan_eval["history"])
    assert gan_eval["summary"]["fid"] >= 0 and gan["summary"]["best_epoch"] >= 1
    # The final GAN's runs sit in its sweep's group, with the sweep's trials.
    gan_sweep = yaml.safe_load((proj / "search/gan/best.yaml").read_text())["sweep_id"]
    assert gan["group"] == gan_eval["group"] == gan_sweep
    assert len([r for r in by_type["trial"] if r["group"] == gan_sweep]) == n_gan


@pytest.mark.slow
def test_operational_settings_rerun_nothing_and_eval_settings_only_rescore(own_project):
    """Tracking, resources, storage, concurrency and retries change how a stage runs, not what it writes: after
    changing them every stage is up to date. gan.eval_samples only changes the GAN's scoring: gan_eval alone."""
    proj, params, env, _ = own_project
    path = proj / "params.yaml"
    original = path.read_text()
    changed = yaml.safe_load(original)
    changed["tracking"].update(wandb=not changed["tracking"]["wandb"], project="elsewhere", log_models=True)
    for sweep in ("search", "gan_search"):
        changed[sweep].update(
            resources={"cpu": 2, "gpu": 1}, storage="s3://bucket/sweeps", max_concurrent_trials=7, max_failures=9
        )
    try:
        path.write_text(yaml.safe_dump(changed, sort_keys=False))
        assert json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], proj, env).stdout) == {}
        changed["gan"]["eval_samples"] += 1
        path.write_text(yaml.safe_dump(changed, sort_keys=False))
        status = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], proj, env).stdout)
        assert set(status) == {"gan_eval"}, status
    finally:
        path.write_text(original)


@pytest.mark.slow
def test_exp_run_links_runs_to_the_experiment_and_exp_show_lists_metrics(own_project):
    from wandb_records import read_run

    proj, params, env, _ = own_project
    before = set((proj / "wandb").glob("offline-run-*"))
    run([sys.executable, "-m", "dvc", "exp", "run", "-n", "smaller-eval", "-S", "gan.eval_samples=100"], proj, env)
    (new,) = set((proj / "wandb").glob("offline-run-*")) - before  # only gan_eval ran again: no GAN training
    gan = read_run(next(new.glob("run-*.wandb")))
    assert gan["job_type"] == "gan_eval" and gan["config"]["dvc_experiment"] == "smaller-eval"
    composed = yaml.safe_load((proj / "params.yaml").read_text())  # DVC composed conf/ with the override
    assert composed["gan"]["eval_samples"] == 100 and composed["search"] == params["search"]
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], proj, env).stdout)
    text = json.dumps(shown)
    assert "smaller-eval" in text and "test_accuracy" in text and "inception_score_ratio" in text


# The columns `dvc exp show` adds for data dependencies (a hash each), as docs/reviewing.md drops them. It drops no
# metric: with one dataset their names hold no "/", and a name DVC gives with its file starts "metrics/...".
DEPENDENCY_COLUMNS = "(data|models|pipeline|search|src)/|metrics$|search$"


@pytest.mark.slow
def test_exp_show_of_two_one_dataset_experiments_fits_160_columns(own_project):
    """`dvc exp show --only-changed` of two experiments on one dataset, as the laptop command runs (`-S dataset=mnist`),
    that differ in their seed, against a committed baseline of the same settings: its metrics and params fit a
    160-column terminal, no column cut to "…", and each metric is named by its key alone (no two metrics files share
    one). The dependency columns are dropped: their hashes never fit (docs/reviewing.md)."""
    proj, _, env, _ = own_project
    dvc = [sys.executable, "-m", "dvc"]
    one = ["-S", "dataset=mnist"]
    (proj / ".gitignore").write_text("/wandb/\n/.grutune/\n")
    run([*dvc, "exp", "run", *one], proj, env)  # the same results on one dataset: only the report runs again
    run(["git", "add", "-A"], proj, env)
    run(["git", "commit", "-qm", "mnist alone"], proj, env)
    for seed in (1, 2):
        run([*dvc, "exp", "run", *one, "-S", f"seed={seed}"], proj, env)
    show = [*dvc, "exp", "show", "--only-changed", "--no-pager"]
    changed = run([*show, "--csv"], proj, env).stdout.splitlines()[0].split(",")  # every changed column, in full
    assert not [c for c in changed if ".json:" in c], changed  # no metric named by its file
    shown = {c for c in changed if not re.match(DEPENDENCY_COLUMNS, c)} - {"rev", "typ"}  # the CSV's own columns
    table = run([*show, "--drop", DEPENDENCY_COLUMNS], proj, {**env, "COLUMNS": "160"}).stdout
    lines = table.rstrip("\n").splitlines()
    assert "…" not in table and max(len(line.rstrip()) for line in lines) <= 160, table
    header = lines[1].split()  # below the top rule; a header cut or wrapped would not match the names
    assert {"fid", "inception_score_ratio", "seed"} <= set(header) and set(header) == shown, (table, changed)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its content."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.mark.slow
def test_a_change_to_the_trial_code_starts_a_new_sweep_and_leaves_the_old_one(own_project):
    """As a user would: a comment in models.py reruns the stage (a dep changed) but re-reads the finished sweep; a
    real change starts a new sweep, says so in one line naming the module, and leaves the old sweep's folder as it
    was. The stage runs the project's own copy of the code (PYTHONPATH), which is what the user edits."""
    proj, _, env, _ = own_project
    env = {**env, "PYTHONPATH": str(proj / "src")}
    sweeps = proj / ".grutune" / "sweeps"
    old = [d for d in sweeps.iterdir() if d.name.startswith("mnist-")]
    assert len(old) == 1, sorted(sweeps.iterdir())
    models = proj / "src" / "grutune" / "models.py"
    models.write_text("# a comment changes nothing a trial computes\n" + models.read_text())
    again = run([sys.executable, "-m", "dvc", "repro", "search@mnist"], proj, env)
    assert "trial code changed" not in again.stderr and "resuming sweep" in again.stderr, again.stderr[-3000:]
    assert [d for d in sweeps.iterdir() if d.name.startswith("mnist-")] == old
    before = snapshot(old[0])
    models.write_text(models.read_text() + "\nA_REAL_CHANGE = 1\n")
    changed = run([sys.executable, "-m", "dvc", "repro", "search@mnist"], proj, env)
    new = [d for d in sweeps.iterdir() if d.name.startswith("mnist-") and d != old[0]]
    assert len(new) == 1, sorted(sweeps.iterdir())
    lines = [line for line in changed.stderr.splitlines() if "trial code changed" in line]
    assert lines == [
        f"the trial code changed since sweep {old[0].name} (grutune.models): starting sweep {new[0].name}; "
        f"{old[0].name} is kept as it was"
    ], changed.stderr[-3000:]
    assert snapshot(old[0]) == before
    trials = list(csv.DictReader((proj / "search/mnist/trials.csv").open()))
    assert trials and all(float(r["epochs"]) >= 1 for r in trials)  # trained anew, by the new code


def y_fields(spec) -> set[str]:
    """The columns a DVC vega plot draws: its y encoding's field, or (several y) each row's `field`."""
    found = set()
    if isinstance(spec, dict):
        if isinstance(spec.get("y"), dict) and "field" in spec["y"]:
            found.add(spec["y"]["field"])
        for k, v in spec.items():
            found |= {r["field"] for r in v if "field" in r} if k == "values" else y_fields(v)
    elif isinstance(spec, list):
        for v in spec:
            found |= y_fields(v)
    return found - {"dvc_inferred_y_value"}


@pytest.mark.slow
def test_dvc_plots_render_from_the_plot_files(project):
    proj, params, env, _ = project
    progress = (proj / "metrics/mnist/search_progress.csv").read_text().splitlines()
    assert progress[0] == "trial,trial_val_accuracy,best_val_accuracy"
    best = [float(r.split(",")[2]) for r in progress[1:]]
    assert best == sorted(best) and len(best) == params["search"]["num_samples"]  # best-so-far never drops
    timed = (proj / "metrics/mnist/search_progress_time.csv").read_text().splitlines()
    times = [float(r.split(",")[0]) for r in timed[1:]]
    assert times == sorted(times) and times[0] > 0
    out = run([sys.executable, "-m", "dvc", "plots", "show", "--json"], proj, env).stdout
    for path in (
        "search_progress.csv",
        "search_progress_time.csv",
        "confusion.csv",
        "train_log/mnist.csv",
        "gan_samples.png",
        "gan_samples_by_class.png",
    ):
        assert path in out
    # What each line plot draws: the y columns DVC resolved, per plot.
    drawn = {
        plot_id: set().union(*(y_fields(p["content"]) for p in plots if p["type"] == "vega"))
        for plot_id, plots in json.loads(out)["data"].items()
    }
    assert drawn["GAN training losses"] == {"d_loss", "g_loss"}
    assert drawn["GAN validation FID"] == {"val_fid"}
    for d in DATASETS:
        assert drawn[f"metrics/train_log/{d}.csv"] == {"train_loss", "train_accuracy"}
        assert drawn[f"search/{d}/pareto.csv"] == {"best_val_accuracy"}  # against params, by the repo's template
    assert not [k for k, fields in drawn.items() if "images_per_s" in fields]


@pytest.mark.slow
def test_a_normal_run_prints_no_tracebacks(project):
    *_, repro = project
    assert "Traceback" not in repro.stdout + repro.stderr


def find(tree, key, value=None):
    """The first value under `key` (with `value`: the first dict whose `key` is `value`) in nested JSON."""
    if isinstance(tree, dict):
        if key in tree and (value is None or tree[key] == value):
            return tree if value is not None else tree[key]
        tree = list(tree.values())
    if isinstance(tree, list):
        for v in tree:
            if (hit := find(v, key, value)) is not None:
                return hit
    return None


def study_of(journal: Path) -> optuna.Study:
    return optuna.load_study(study_name=None, storage=JournalStorage(JournalFileBackend(str(journal))))


def finished(journal: Path) -> int:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in done for t in study_of(journal).trials)


def start_queue(proj, env) -> None:
    """`dvc queue start`. Its worker process inherits the command's stdout and stderr: with them piped, waiting for
    the command's output would wait for the worker, which exits only once the queue is empty."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "start"],
        cwd=proj,
        env=env,
        timeout=300,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert proc.returncode == 0


def queue_until_done(proj, env, name: str, timeout: float = 900) -> str:
    """Start the queue's worker, wait until experiment `name` has ended, and return its status (Success, Failed)."""
    start_queue(proj, env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [r.split() for r in run([sys.executable, "-m", "dvc", "queue", "status"], proj, env).stdout.splitlines()]
        status = next((r[-1] for r in rows if name in r), None)
        if status in ("Success", "Failed"):
            return status
        time.sleep(2)
    raise AssertionError(f"queued experiment {name} did not end in {timeout} s")


@pytest.mark.slow
def test_a_queued_sweep_keeps_its_state_and_wandb_runs_in_the_workspace_and_resumes_after_a_kill(own_project):
    """dvc exp run --queue runs stages in a temporary copy that DVC deletes. The sweep's state and offline W&B runs
    go to the workspace: a queued sweep extends the workspace's sweep, and a killed one resumes when queued again,
    with no trial run twice and one W&B run per trial."""
    from wandb_records import read_run

    proj, params, env, _ = own_project
    (proj / ".gitignore").write_text("/wandb/\n/.grutune/\n")
    run(["git", "add", "-A"], proj, env)
    run(["git", "commit", "-qm", "pipeline run"], proj, env)  # queued experiments start from a commit
    (journal,) = (proj / ".grutune/sweeps").glob("mnist-*/optuna.journal")  # the workspace's sweep, from `project`
    sweep_id = journal.parent.name
    n0, total = finished(journal), params["search"]["num_samples"] + 12
    assert n0 == params["search"]["num_samples"]
    queue = [sys.executable, "-m", "dvc", "exp", "run", "--queue", "search@mnist", "-S", f"search.num_samples={total}"]
    run([*queue, "-n", "queued-sweep"], proj, env)
    start_queue(proj, env)
    deadline = time.monotonic() + 600
    while finished(journal) < n0 + 1:  # the queued sweep writes into the workspace's journal
        assert time.monotonic() < deadline, "the queued sweep never reached the workspace's journal"
        time.sleep(0.2)
    run([sys.executable, "-m", "dvc", "queue", "kill", "queued-sweep"], proj, env)  # SIGINT, as Ctrl-C would
    assert queue_until_done(proj, env, "queued-sweep") == "Failed"
    at_kill = finished(journal)
    assert n0 + 1 <= at_kill < total, "the kill did not land mid-sweep"

    run([*queue, "-n", "queued-resume"], proj, env)
    assert queue_until_done(proj, env, "queued-resume") == "Success"
    trials = study_of(journal).trials
    assert len(trials) == total and finished(journal) == total  # resumed: none lost, none run twice
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], proj, env).stdout)
    assert find(find(shown, "name", "queued-resume"), "metrics/mnist/search.json")["data"]["trials"] == total
    runs = [read_run(f) for f in (proj / "wandb").glob("offline-run-*/run-*.wandb")]
    trial_ids = {r["id"] for r in runs if r["job_type"] == "trial" and r["group"] == sweep_id}
    assert len(trial_ids) == total  # one W&B run per trial, in the workspace's wandb/, kept after the temp copy
    assert not list((proj / ".dvc/tmp/exps").glob("*/.grutune")) and not list((proj / ".dvc/tmp/exps").glob("*/wandb"))
