"""The report's inputs: the files the stages wrote, read into typed results (a sweep, a dataset, the GAN).

A missing or malformed file is named with the stage that writes it. Each sweep is read by its `Objective`, declared
once in config.py for the sweep that runs it and for this report.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from grutune.errors import GrutuneError
from grutune.objectives import CLASSIFIER_OBJECTIVE, COST_COLUMNS, GAN_OBJECTIVE, Objective
from grutune.space import point_problem

__all__ = [
    "DATASET_FILES",
    "GAN_FILES",
    "REAL_IMAGES",
    "SPEND",
    "DatasetResults",
    "GanResults",
    "SweepResults",
    "load_dataset_results",
    "load_gan_results",
    "load_sweep",
    "read_json",
    "read_pareto",
    "read_prepared_meta",
    "read_progress_time",
    "read_trials",
    "read_val_fid",
]

# What each trial spent (trials.csv of grutune 0.x after sweep budgets; older files lack them): training seconds,
# GPU-seconds, dollars at the sweep's price_per_hour (nan without prices). Most telling first, with its unit.
SPEND = (("cost_usd", "dollars", 1.0), ("gpu_s", "GPU-hours", 1 / 3600), ("train_s", "trial-hours", 1 / 3600))
REAL_IMAGES = 64  # real test images shown beside the GAN's 8x8 samples
# Each stage's figures come in two JSON files: its DVC metrics (a few, compared across experiments) and the details
# beside them; the page shows both.
DATASET_FILES = (
    "search",
    "search_details",
    "trials",
    "progress_time",
    "pareto",
    "classifier",
    "classifier_details",
    "confusion",
    "prepared",
)
GAN_FILES = (
    "metrics",
    "details",
    "samples",
    "search",
    "search_details",
    "trials",
    "progress_time",
    "prepared",
    "class_samples",
    "log",
)


@dataclass(frozen=True)
class SweepResults:
    """One sweep's trials and best so far, as its stage wrote them, what it optimised and the space it searched."""

    objective: Objective
    trials: list[dict[str, Any]]  # trials.csv, typed, in the order Optuna proposed them
    progress_time: list[dict[str, float]]  # search_progress_time.csv: best so far by wall time
    space: dict[str, Any]  # the validated search space ({key: value or (kind, args)}) the trials were drawn from

    @property
    def hparams(self) -> tuple[str, ...]:
        return tuple(self.objective.hp_model.model_fields)

    @property
    def column(self) -> str:
        """The trials' metric column, e.g. best_val_accuracy or best_fid."""
        return f"best_{self.objective.metric}"

    @property
    def goal(self) -> str:
        return "higher is better" if self.objective.mode == "max" else "lower is better"

    @property
    def log_scale(self) -> frozenset[str]:
        """Hyperparameters the space searches on a log scale (`loguniform`)."""
        return frozenset(k for k, dim in self.space.items() if isinstance(dim, tuple) and dim[0] == "loguniform")


@dataclass(frozen=True)
class DatasetResults:
    """What the search and train stages wrote for one dataset, and its data version."""

    name: str
    search: dict[str, Any]  # metrics/<ds>/search.json: the sweep's best, trials (and pick, cost)
    search_details: dict[str, Any]  # metrics/<ds>/search_details.json: the rest of its summary
    classifier: dict[str, Any]  # metrics/<ds>/classifier.json: test accuracy and params
    classifier_details: dict[str, Any]  # metrics/<ds>/classifier_details.json: per-class accuracy, latency, pick...
    sweep: SweepResults  # search/<ds>/trials.csv and metrics/<ds>/search_progress_time.csv
    confusion: list[tuple[str, str]]  # metrics/<ds>/confusion.csv: (actual, predicted) per test image
    classes: tuple[str, ...]  # from the prepared data, in label order
    content_hash: str
    files: dict[str, str]  # role -> path, shown next to the numbers they hold
    pareto: list[dict[str, Any]] = ()  # search/<ds>/pareto.csv: the front of search.objectives, the pick marked
    objectives: tuple[str, ...] = (CLASSIFIER_OBJECTIVE.metric,)


@dataclass(frozen=True)
class GanResults:
    dataset: str
    metrics: dict[str, Any]  # metrics/gan.json: FID and Inception Score over the real images'
    details: dict[str, Any]  # metrics/gan_details.json: the rest of the scores, their references, the kept epoch
    search: dict[str, Any]  # metrics/gan_search.json: the GAN sweep's best FID
    search_details: dict[str, Any]  # metrics/gan_search_details.json: its counts, time and spend
    sweep: SweepResults  # search/gan/trials.csv and metrics/gan_search_progress_time.csv
    samples_png: bytes  # metrics/gan_samples.png, embedded as it is
    class_png: bytes  # metrics/gan_samples_by_class.png: real and generated, a row per class
    val_fid: list[tuple[int, float]]  # metrics/gan_log.csv: (epoch, validation FID) of the scored epochs
    real: np.ndarray  # (N, H, W, C) uint8 test images of gan.dataset
    content_hash: str
    files: dict[str, str]


def _need(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise GrutuneError(f"{path} not found: stage {stage} writes it (run `dvc repro {stage}`)")
    return path


def read_json(path: Path, stage: str) -> dict[str, Any]:
    try:
        obj = json.loads(_need(path, stage).read_text())
    except json.JSONDecodeError as e:
        raise GrutuneError(f"{path} is not valid JSON ({e}): rerun stage {stage}") from None
    if not isinstance(obj, dict):
        raise GrutuneError(f"{path}: expected a JSON object of metrics, got {type(obj).__name__}")
    return obj


def _read_csv(path: Path, stage: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with open(_need(path, stage), newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise GrutuneError(f"{path}: missing column(s) {missing}; rerun stage {stage}")
        return list(reader)


def read_trials(path: Path, stage: str, objective: Objective) -> list[dict[str, Any]]:
    """trials.csv with typed values: the config columns validated by the sweep's trial model (so a categorical one
    stays a string), the metric, the objective's other columns and the spend floats (nan if none)."""
    hparams, column = tuple(objective.hp_model.model_fields), f"best_{objective.metric}"
    rows = []
    for row in _read_csv(path, stage, ("trial", "status", column, *hparams)):
        try:
            hp = objective.hp_model(**{k: row[k] for k in hparams}).model_dump()
            value = float(row[column] or "nan")
            measured = {k: float(row[k] or "nan") for k in objective.columns if k in row}
            spent = {k: float(row[k] or "nan") for k, _, _ in SPEND if k in row}
            rows.append({"trial": int(row["trial"]), "status": row["status"], **hp, column: value, **measured, **spent})
        except (ValidationError, ValueError) as e:
            raise GrutuneError(f"{path}: trial {row['trial']!r} is not a valid row: {e}") from None
    return sorted(rows, key=lambda r: r["trial"])  # Optuna's order, as the stage writes it


def read_val_fid(path: Path, stage: str) -> list[tuple[int, float]]:
    """The gan stage's per-epoch log: (epoch, validation FID) where the epoch was scored."""
    try:
        rows = _read_csv(path, stage, ("epoch", "val_fid"))
        return [(int(r["epoch"]), float(r["val_fid"])) for r in rows if r["val_fid"]]
    except ValueError as e:
        raise GrutuneError(f"{path}: not a number ({e}); rerun stage {stage}") from None


def read_progress_time(path: Path, stage: str, metric: str) -> list[dict[str, float]]:
    """A sweep stage's best-so-far table by wall time, as floats (nan where a trial had no value)."""
    columns = ("wall_time_s", f"trial_{metric}", f"best_{metric}")
    try:
        return [{k: float(r[k] or "nan") for k in columns} for r in _read_csv(path, stage, columns)]
    except ValueError as e:
        raise GrutuneError(f"{path}: not a number ({e}); rerun stage {stage}") from None


def read_prepared_meta(path: Path, stage: str, with_test_images: int = 0) -> tuple[tuple[str, ...], str, np.ndarray]:
    """Class names, content hash and the first `with_test_images` test images of a prepared .npz (nothing else)."""
    try:
        with np.load(_need(path, stage), allow_pickle=False) as npz:  # lazy: only the keys read here are loaded
            classes = tuple(str(c) for c in npz["classes"])
            digest = str(npz["content_hash"])
            x = npz["x_test"][:with_test_images] if with_test_images else np.zeros((0, 1, 1, 1), np.uint8)
    except (KeyError, ValueError, OSError) as e:
        raise GrutuneError(f"{path} is not a prepared data file ({e}): rerun stage {stage}") from None
    return classes, digest, x


def load_sweep(files: dict[str, Path], stage: str, objective: Objective, space: dict[str, Any]) -> SweepResults:
    """A sweep's `trials` and `progress_time` files; `space` is its search space as params.yaml's config parses it
    ({key: value or (kind, args)}). Every trial must lie in it: one that does not was drawn from another space."""
    trials = read_trials(files["trials"], stage, objective)
    for t in trials:
        for k in objective.hp_model.model_fields:
            if (problem := point_problem(space, k, t[k])) is not None:
                raise GrutuneError(
                    f"{files['trials']}: trial {t['trial']}: {k}: {problem}; the search space has changed since "
                    f"stage {stage} ran: rerun it"
                )
    return SweepResults(
        objective=objective,
        trials=trials,
        progress_time=read_progress_time(files["progress_time"], stage, objective.metric),
        space=space,
    )


def read_pareto(path: Path, stage: str) -> list[dict[str, Any]]:
    """A classifier sweep's pareto.csv: each front point's metric and costs as floats, and whether it was picked."""
    column = f"best_{CLASSIFIER_OBJECTIVE.metric}"
    rows = []
    for r in _read_csv(path, stage, ("trial", "trial_id", column, "picked")):
        try:
            rows.append(
                {
                    "trial": int(r["trial"]),
                    "trial_id": r["trial_id"],
                    column: float(r[column]),
                    **{k: float(r[k]) for k in COST_COLUMNS if r.get(k)},
                    "picked": r["picked"] == "True",
                }
            )
        except ValueError as e:
            raise GrutuneError(f"{path}: not a number ({e}); rerun stage {stage}") from None
    return rows


def load_dataset_results(
    name: str,
    files: dict[str, Path],
    space: dict[str, Any],
    objectives: tuple[str, ...] = (CLASSIFIER_OBJECTIVE.metric,),
) -> DatasetResults:
    """Read one dataset's inputs: `files` maps each of DATASET_FILES to where its stage wrote it; `space` and
    `objectives` are the classifier sweep's (`search.space`, `search.objectives`)."""
    files = {k: Path(files[k]) for k in DATASET_FILES}
    search_stage, train_stage = f"search@{name}", f"train@{name}"
    confusion = [
        (r["actual"], r["predicted"]) for r in _read_csv(files["confusion"], train_stage, ("actual", "predicted"))
    ]
    classes, digest, _ = read_prepared_meta(files["prepared"], f"prepare@{name}")
    return DatasetResults(
        name=name,
        search=read_json(files["search"], search_stage),
        search_details=read_json(files["search_details"], search_stage),
        classifier=read_json(files["classifier"], train_stage),
        classifier_details=read_json(files["classifier_details"], train_stage),
        sweep=load_sweep(files, search_stage, CLASSIFIER_OBJECTIVE, space),
        confusion=confusion,
        classes=classes,
        content_hash=digest,
        files={k: str(v) for k, v in files.items()},
        pareto=read_pareto(files["pareto"], search_stage),
        objectives=tuple(objectives),
    )


def load_gan_results(dataset: str, files: dict[str, Path], space: dict[str, Any]) -> GanResults:
    """Read the GAN's inputs: `files` maps each of GAN_FILES to where its stage wrote it; `space` is the GAN sweep's
    (`gan_search.space`)."""
    files = {k: Path(files[k]) for k in GAN_FILES}
    _, digest, real = read_prepared_meta(files["prepared"], f"prepare@{dataset}", with_test_images=REAL_IMAGES)
    return GanResults(
        dataset=dataset,
        metrics=read_json(files["metrics"], "gan_eval"),
        details=read_json(files["details"], "gan_eval"),
        search=read_json(files["search"], "gan_search"),
        search_details=read_json(files["search_details"], "gan_search"),
        sweep=load_sweep(files, "gan_search", GAN_OBJECTIVE, space),
        samples_png=_need(files["samples"], "gan_eval").read_bytes(),
        class_png=_need(files["class_samples"], "gan_eval").read_bytes(),
        val_fid=read_val_fid(files["log"], "gan"),
        real=real,
        content_hash=digest,
        files={k: str(v) for k, v in files.items()},
    )
