"""The report's inputs written in the stages' real formats, shared by tests/test_report_*.py: sweeps drawn from the
spaces in params.yaml, each dataset's metrics and the GAN's (each split into its DVC metrics and details files as the
stages split them), and the report stage run as DVC runs it."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import yaml

from grutune.images import image_grid
from grutune.io import METRICS, write_metrics
from grutune.metrics import pareto_front
from grutune.objectives import CLASSIFIER_OBJECTIVE, GAN_OBJECTIVE, Objective
from grutune.report import load_dataset_results, load_gan_results
from grutune.report.inputs import SweepResults
from grutune.space import parse_space

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
# Each sweep's search space as the report stage gets it from params.yaml.
SPACES = {
    CLASSIFIER_OBJECTIVE: parse_space(PARAMS["search"]["space"], CLASSIFIER_OBJECTIVE.hp_model),
    GAN_OBJECTIVE: parse_space(PARAMS["gan_search"]["space"], GAN_OBJECTIVE.hp_model),
}
HPARAMS = tuple(CLASSIFIER_OBJECTIVE.hp_model.model_fields)
GAN_HPARAMS = tuple(GAN_OBJECTIVE.hp_model.model_fields)
DATASETS = {
    "mnist": ((28, 28, 1), [str(d) for d in range(10)]),
    "cifar10": (
        (32, 32, 3),
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    ),
}
GAN_DATASET = "mnist"
CHROMIUM = shutil.which("chromium")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


# --------------------------------------------------------------------------- sweeps


def sample(space: dict, rng: np.random.Generator) -> dict:
    """One point of a parsed search space ({key: value or (kind, args)}), as plain Python values."""
    out = {}
    for k, dim in space.items():
        kind, args = dim if isinstance(dim, tuple) else ("fixed", dim)
        out[k] = (
            args
            if kind == "fixed"
            else args[rng.integers(len(args))]
            if kind == "choice"
            else int(rng.integers(args[0], args[1] + 1))
            if kind == "int"
            else float(rng.uniform(*args))
            if kind == "uniform"
            else float(10 ** rng.uniform(*np.log10(args)))
        )
    return out


def column(objective: Objective) -> str:
    return f"best_{objective.metric}"


def trial_columns(objective: Objective) -> list[str]:
    """trials.csv's header, as grutune.sweep.results.trial_rows makes it."""
    return [
        "trial",
        "trial_id",
        "status",
        *objective.hp_model.model_fields,
        column(objective),
        *objective.columns,  # the classifier's trials measure their costs; the GAN's nothing more
        "train_s",
        "cpu_s",
        "gpu_s",
        "cost_usd",
        "epochs",
        "resumed_from_epoch",
        "error",
    ]


def random_trials(n: int, seed: int, score=None, objective: Objective = CLASSIFIER_OBJECTIVE) -> list[dict]:
    """n completed trials over the sweep's space in params.yaml; its metric = score(trial) (default: random)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t = {
            "trial": i,
            "trial_id": f"{i:05d}_{i:05d}",
            "status": "completed",
            **sample(SPACES[objective], rng),
            "epochs": 4,
            "resumed_from_epoch": 0,
            "error": "",
        }
        t[column(objective)] = score(t) if score else float(rng.uniform(0.5, 0.99))
        # What it spent: a quarter of a GPU; priced for the classifier's sweeps, not for the GAN's (no prices set).
        t["train_s"] = t["cpu_s"] = round(float(rng.uniform(10, 100)), 1)
        t["gpu_s"] = round(t["train_s"] / 4, 1)
        t["cost_usd"] = round(t["gpu_s"] / 3600 * 2.0, 4) if objective is CLASSIFIER_OBJECTIVE else math.nan
        if objective is CLASSIFIER_OBJECTIVE:
            t.update(
                params=int(rng.integers(10_000, 2_000_000)),
                latency_ms=float(rng.uniform(0.1, 5)),
                latency_batch_ms=float(rng.uniform(0.01, 0.5)),
            )
        rows.append(t)
    return rows


def better(objective: Objective, a: float, b: float | None) -> bool:
    return b is None or (a > b if objective.mode == "max" else a < b)


def progress_by_time(trials: list[dict], seed: int, objective: Objective = CLASSIFIER_OBJECTIVE) -> list[dict]:
    """A sweep's progress-time CSV as its stage writes it: best so far as trials end ("" = none yet)."""
    rng = np.random.default_rng(seed)
    m, rows, best = objective.metric, [], None
    for end, i in zip(np.sort(rng.uniform(5, 300, len(trials))), rng.permutation(len(trials))):  # ends out of order
        t = trials[i]
        v = t[f"best_{m}"] if t["status"] in ("completed", "pruned") else None
        best = v if v is not None and better(objective, v, best) else best
        rows.append(
            {
                "wall_time_s": round(float(end), 1),
                f"trial_{m}": "" if v is None else v,
                f"best_{m}": "" if best is None else best,
            }
        )
    return rows


def expected_new_bests(trials: list[dict], objective: Objective) -> list[tuple[int, float]]:
    """(trial, value) of each trial that beat every earlier one, in trial order."""
    out, best = [], None
    for t in sorted(trials, key=lambda t: t["trial"]):
        v = t[column(objective)]
        if t["status"] in ("completed", "pruned") and math.isfinite(v) and better(objective, v, best):
            best = v
            out.append((t["trial"], v))
    return out


def log_unit(key: str, v: float) -> float:
    """A loguniform GAN hyperparameter mapped to [0, 1] across its range in the space."""
    lo, hi = SPACES[GAN_OBJECTIVE][key][1]
    return math.log(v / lo) / math.log(hi / lo)


def lr_fid(t: dict) -> float:
    """A GAN's FID that is low only where lr_d is low (set by lr_d alone there) and otherwise rises with lr_g: the
    best (lowest) trials are told apart by lr_d, the worst (highest) by lr_g."""
    d, g = log_unit("lr_d", t["lr_d"]), log_unit("lr_g", t["lr_g"])
    return 10 + 20 * d if d < 0.3 else 100 + 200 * g


def sweep(trials: list[dict], objective: Objective = CLASSIFIER_OBJECTIVE, mode: str | None = None) -> SweepResults:
    """The trials as the report holds a sweep (with its space from params.yaml), optionally in the other `mode`."""
    return SweepResults(dataclasses.replace(objective, mode=mode or objective.mode), trials, [], SPACES[objective])


# --------------------------------------------------------------------------- the stages' files


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def write_inputs(root: Path) -> dict:
    """What fetch..gan would leave in metrics/, search/ and data/prepared/; returns the values written."""
    rng = np.random.default_rng(0)
    written = {}
    for k, (name, (shape, classes)) in enumerate(DATASETS.items()):
        x = (rng.random((80, *shape)) * np.linspace(0.3, 1, shape[1])[None, None, :, None] * 255).astype(np.uint8)
        digest = f"sha256:{k}{'c0ffee' * 10}"
        (root / "data/prepared").mkdir(parents=True, exist_ok=True)
        np.savez(
            root / f"data/prepared/{name}.npz",
            dataset=np.array(name),
            x_test=x,
            y_test=rng.integers(0, 10, len(x)),
            classes=np.array(classes, dtype=str),
            content_hash=np.array(digest),
        )
        trials = random_trials(12, seed=k)
        trials[3].update(status="pruned", epochs=1)
        trials[5].update(status="failed", best_val_accuracy=float("nan"), epochs=1)
        trials[8].update(status="errored", best_val_accuracy=float("nan"), epochs=2, error="/tmp/t/error.txt")
        write_csv(root / f"search/{name}/trials.csv", trials, trial_columns(CLASSIFIER_OBJECTIVE))
        done = [t for t in trials if t["status"] == "completed"]
        front = [done[i] for i in pareto_front([(t["best_val_accuracy"], t["params"]) for t in done], (1, -1))]
        picked = max(front, key=lambda t: t["best_val_accuracy"])
        pareto = [{**t, "picked": t is picked} for t in front]
        write_csv(root / f"search/{name}/pareto.csv", pareto, [*trial_columns(CLASSIFIER_OBJECTIVE), "picked"])
        write_csv(
            root / f"metrics/{name}/search_progress_time.csv",
            progress_by_time(trials, seed=k),
            ["wall_time_s", "trial_val_accuracy", "best_val_accuracy"],
        )
        search = {
            "best_val_accuracy": 0.987654321 - k / 10,
            "trials": 12,
            "completed": 9,
            "pruned": 1,
            "failed": 1,
            "errored": 1,
            "epochs_run": 42 + k,
            "wall_time_s": 123.4 + k,
        }
        classifier = {
            "test_accuracy": 0.9712345678 - k / 10,
            "test_loss": 0.0912345678 + k,
            "per_class_accuracy": {c: 0.9 + i / 1000 + 1e-7 for i, c in enumerate(classes)},
            "params": picked["params"],
            "latency_ms": 0.4321987 + k,
            "latency_batch_ms": 0.0123456 + k,
            "latency_hardware": "Some CPU, 2 torch thread(s)",
            "picked": {
                "trial_id": picked["trial_id"],
                "rule": "most_accurate",
                "reason": "most_accurate: the highest val_accuracy on the front",
            },
        }
        write_metrics(
            search,
            METRICS["search"],
            metrics=root / f"metrics/{name}/search.json",
            details=root / f"metrics/{name}/search_details.json",
        )
        write_metrics(
            classifier,
            METRICS["classifier"],
            metrics=root / f"metrics/{name}/classifier.json",
            details=root / f"metrics/{name}/classifier_details.json",
        )
        actual = rng.integers(0, 10, 200)
        pred = np.where(rng.random(200) < 0.8, actual, rng.integers(0, 10, 200))
        write_csv(
            root / f"metrics/{name}/confusion.csv",
            [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(actual, pred)],
            ["actual", "predicted"],
        )
        written[name] = {
            "search": search,
            "classifier": classifier,
            "content_hash": digest,
            "trials": trials,
            "pareto": pareto,
        }
    gan_trials = random_trials(30, seed=1, score=lr_fid, objective=GAN_OBJECTIVE)
    gan_trials[4].update(status="pruned", epochs=2)
    gan_trials[6].update(status="failed", best_fid=float("nan"), epochs=1)  # collapsed
    gan_trials[9].update(status="errored", best_fid=float("nan"), epochs=1, error="/tmp/t/error.txt")
    write_csv(root / "search/gan/trials.csv", gan_trials, trial_columns(GAN_OBJECTIVE))
    write_csv(
        root / "metrics/gan_search_progress_time.csv",
        progress_by_time(gan_trials, 1, GAN_OBJECTIVE),
        ["wall_time_s", "trial_fid", "best_fid"],
    )
    written["gan_trials"] = gan_trials
    gan = {
        "fid": 12.3456789,
        "inception_score": 7.654321987,
        "inception_score_std": 0.0123456789,
        "reference_fid_train_vs_test": 0.54321098,
        "reference_inception_score_test": 9.87654321,
        "precision": 0.7123,
        "recall": 0.4567,
        "reference_precision_train_vs_test": 0.8123,
        "reference_recall_train_vs_test": 0.8234,
        "eval_samples": 2000,
        "best_epoch": 3,
    }
    gan["inception_score_ratio"] = gan["inception_score"] / gan["reference_inception_score_test"]
    write_metrics(gan, METRICS["gan"], metrics=root / "metrics/gan.json", details=root / "metrics/gan_details.json")
    gan_search = {
        "best_fid": 23.456789012,
        "trials": 4,
        "completed": 2,
        "pruned": 1,
        "failed": 1,
        "errored": 0,
        "epochs_run": 9,
        "wall_time_s": 61.2,
    }
    write_metrics(
        gan_search,
        METRICS["gan_search"],
        metrics=root / "metrics/gan_search.json",
        details=root / "metrics/gan_search_details.json",
    )
    samples = image_grid(rng.random((64, 28, 28, 1)) ** 3, 8)  # (242, 242, 1)
    matplotlib.image.imsave(root / "metrics/gan_samples.png", samples.squeeze(-1), cmap="gray", vmin=0, vmax=1)
    by_class = image_grid(rng.random((130, 28, 28, 1)), 13)
    matplotlib.image.imsave(root / "metrics/gan_samples_by_class.png", by_class.squeeze(-1), cmap="gray")
    log = [
        {"epoch": e, "d_loss": 1.0, "g_loss": 0.5, "val_fid": 30 - e if e != 3 else 40, "diversity": 0.4}
        for e in (1, 2, 3, 4)
    ]
    write_csv(root / "metrics/gan_log.csv", log, ["epoch", "d_loss", "g_loss", "val_fid", "diversity"])
    written["gan"] = gan
    return written


# --------------------------------------------------------------------------- the stage's paths and run


def report_stage_args() -> list[str]:
    """The report stage's arguments exactly as dvc.yaml's cmd gives them (with gan.dataset = GAN_DATASET)."""
    cmd = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["cmd"]
    return cmd.replace("${gan.dataset}", GAN_DATASET).split()[3:]


REPORT_ARGS = report_stage_args()
_ROLES = dict(zip(REPORT_ARGS[::2], REPORT_ARGS[1::2]))


def dataset_files(root: Path, name: str) -> dict[str, Path]:
    return {
        k.removeprefix("--").replace("-", "_"): root / v.format(dataset=name)
        for k, v in _ROLES.items()
        if not k.startswith("--gan-")
    }


def gan_files(root: Path, name: str) -> dict[str, Path]:
    return {
        k.removeprefix("--gan-").replace("-", "_"): root / v.replace(GAN_DATASET, name)
        for k, v in _ROLES.items()
        if k.startswith("--gan-")
    }


def load(root: Path) -> tuple:
    """The mnist and GAN inputs under root, read as the stage reads them."""
    return (
        load_dataset_results("mnist", dataset_files(root, "mnist"), SPACES[CLASSIFIER_OBJECTIVE]),
        load_gan_results("mnist", gan_files(root, "mnist"), SPACES[GAN_OBJECTIVE]),
    )


def run_stage(root: Path, write_params) -> tuple:
    """The stage's script run as DVC runs it, in a fresh git + DVC repo at `root` holding the inputs: (root, the
    page, the values written, the commit, the environment)."""
    written = write_inputs(root)
    write_params(root / "params.yaml", datasets=[GAN_DATASET, *(d for d in DATASETS if d != GAN_DATASET)])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_"))},
        **GIT_ENV,
        "DVC_EXP_NAME": "sunny-crab",
    }
    for cmd in (
        ["git", "init", "-q"],
        ["git", "commit", "-q", "--allow-empty", "-m", "init"],
        [sys.executable, "-m", "dvc", "init", "-q"],
    ):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    proc = subprocess.run(
        [sys.executable, ROOT / "pipeline/report.py", "report/index.html", *REPORT_ARGS],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, (root / "report/index.html").read_text(), written, commit, env
