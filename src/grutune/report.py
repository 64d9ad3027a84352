"""The `report` stage's page: every dataset's sweep and classifier, and the GAN's sweep and final model, in one
self-contained HTML file.

Plots are PNGs drawn with matplotlib and embedded as base64 data URIs, so the page has no external assets or scripts
and reads offline. Every metric printed is a value from a metrics file, formatted as `dvc metrics show` prints it.
The readers at the top name the stage that writes a missing file; everything below them is data in, HTML out.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import optuna
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from pydantic import BaseModel, ValidationError

from grutune.config import GanTrialConfig, TrialConfig
from grutune.errors import GrutuneError
from grutune.images import image_grid
from grutune.metrics import confusion_matrix

__all__ = [
    "CLASSIFIER_KEYS",
    "CLASSIFIER_SWEEP",
    "COST_KEYS",
    "CSS",
    "DATASET_FILES",
    "DatasetResults",
    "GAN_FILES",
    "GAN_KEYS",
    "GAN_SWEEP",
    "GanResults",
    "OK_STATUSES",
    "Objective",
    "REAL_IMAGES",
    "SEARCH_KEYS",
    "SPEND",
    "SweepResults",
    "best_so_far_figure",
    "confusion_figure",
    "cost_figure",
    "dataset_section",
    "fmt",
    "gan_section",
    "image_png",
    "importance_figure",
    "load_dataset_results",
    "load_gan_results",
    "load_sweep",
    "metrics_table",
    "new_bests",
    "parallel_coordinates_figure",
    "param_distributions",
    "param_importances",
    "pareto_caption",
    "pareto_figure",
    "png_bytes",
    "read_json",
    "read_pareto",
    "read_prepared_meta",
    "read_progress_time",
    "read_trials",
    "read_val_fid",
    "render_report",
    "running_best",
    "spend",
    "sweep_html",
    "usable_trials",
    "val_fid_figure",
]

OK_STATUSES = ("completed", "pruned")  # trials whose best metric counts
COST_KEYS = ("params", "latency_ms", "latency_batch_ms")  # what each classifier trial measures of its model
# What each trial spent (trials.csv of grutune 0.x after sweep budgets; older files lack them): training seconds,
# GPU-seconds, dollars at the sweep's price_per_hour (nan without prices). Most telling first, with its unit.
SPEND = (("cost_usd", "dollars", 1.0), ("gpu_s", "GPU-hours", 1 / 3600), ("train_s", "trial-hours", 1 / 3600))
REAL_IMAGES = 64  # real test images shown beside the GAN's 8x8 samples
# Known metric keys in the order the page lists them; keys not listed here follow, sorted.
SEARCH_KEYS = ("best_val_accuracy", "trials", "completed", "pruned", "failed", "errored", "epochs_run", "wall_time_s")
CLASSIFIER_KEYS = ("test_accuracy", "test_loss", "params", "latency_ms", "latency_batch_ms", "latency_hardware")
GAN_KEYS = (
    "fid",
    "reference_fid_train_vs_test",
    "inception_score",
    "inception_score_std",
    "reference_inception_score_test",
    "precision",
    "reference_precision_train_vs_test",
    "recall",
    "reference_recall_train_vs_test",
    "class_share_distance",
    "eval_samples",
)


# =========================================================================== inputs


@dataclass(frozen=True)
class Objective:
    """What a sweep optimised, as its `Sweep` in search.py says (tests/test_report.py checks that they agree)."""

    hp_model: type[BaseModel]  # one trial's config: its fields are trials.csv's hyperparameter columns
    metric: str  # trials.csv holds best_<metric>; search_progress_time.csv trial_<metric>, best_<metric>
    mode: str  # "max" or "min"


CLASSIFIER_SWEEP = Objective(TrialConfig, "val_accuracy", "max")
GAN_SWEEP = Objective(GanTrialConfig, "fid", "min")


@dataclass(frozen=True)
class SweepResults:
    """One sweep's trials and best so far, as its stage wrote them, and what it optimised."""

    objective: Objective
    trials: list[dict[str, Any]]  # trials.csv, typed, in the order Optuna proposed them
    progress_time: list[dict[str, float]]  # search_progress_time.csv: best so far by wall time
    log_scale: frozenset[str]  # hyperparameters the space searches on a log scale (`loguniform`)

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


@dataclass(frozen=True)
class DatasetResults:
    """What the search and train stages wrote for one dataset, and its data version."""

    name: str
    search: dict[str, Any]  # metrics/<ds>/search.json
    classifier: dict[str, Any]  # metrics/<ds>/classifier.json
    sweep: SweepResults  # search/<ds>/trials.csv and metrics/<ds>/search_progress_time.csv
    confusion: list[tuple[str, str]]  # metrics/<ds>/confusion.csv: (actual, predicted) per test image
    classes: tuple[str, ...]  # from the prepared data, in label order
    content_hash: str
    files: dict[str, str]  # role -> path, shown next to the numbers they hold
    pareto: list[dict[str, Any]] = ()  # search/<ds>/pareto.csv: the front of search.objectives, the pick marked
    objectives: tuple[str, ...] = ("val_accuracy",)


@dataclass(frozen=True)
class GanResults:
    dataset: str
    metrics: dict[str, Any]  # metrics/gan.json
    search: dict[str, Any]  # metrics/gan_search.json: the GAN sweep's counts and best FID
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
    stays a string), the metric a float (nan if none)."""
    hparams, column = tuple(objective.hp_model.model_fields), f"best_{objective.metric}"
    rows = []
    for row in _read_csv(path, stage, ("trial", "status", column, *hparams)):
        try:
            hp = objective.hp_model(**{k: row[k] for k in hparams}).model_dump()
            value = float(row[column] or "nan")
            costs = {k: float(row[k] or "nan") for k in COST_KEYS if k in row}  # the classifier's trials measure them
            spent = {k: float(row[k] or "nan") for k, _, _ in SPEND if k in row}
            rows.append({"trial": int(row["trial"]), "status": row["status"], **hp, column: value, **costs, **spent})
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
    ({key: value or (kind, args)}), which says which hyperparameters were searched on a log scale."""
    log_scale = frozenset(k for k, dim in space.items() if isinstance(dim, tuple) and dim[0] == "loguniform")
    return SweepResults(
        objective=objective,
        trials=read_trials(files["trials"], stage, objective),
        progress_time=read_progress_time(files["progress_time"], stage, objective.metric),
        log_scale=log_scale,
    )


def read_pareto(path: Path, stage: str) -> list[dict[str, Any]]:
    """A classifier sweep's pareto.csv: each front point's metric and costs as floats, and whether it was picked."""
    rows = []
    for r in _read_csv(path, stage, ("trial", "trial_id", "best_val_accuracy", "picked")):
        try:
            rows.append(
                {
                    "trial": int(r["trial"]),
                    "trial_id": r["trial_id"],
                    "best_val_accuracy": float(r["best_val_accuracy"]),
                    **{k: float(r[k]) for k in COST_KEYS if r.get(k)},
                    "picked": r["picked"] == "True",
                }
            )
        except ValueError as e:
            raise GrutuneError(f"{path}: not a number ({e}); rerun stage {stage}") from None
    return rows


DATASET_FILES = ("search", "trials", "progress_time", "pareto", "classifier", "confusion", "prepared")
GAN_FILES = ("metrics", "samples", "search", "trials", "progress_time", "prepared", "class_samples", "log")


def load_dataset_results(
    name: str, files: dict[str, Path], space: dict[str, Any], objectives: tuple[str, ...] = ("val_accuracy",)
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
        classifier=read_json(files["classifier"], train_stage),
        sweep=load_sweep(files, search_stage, CLASSIFIER_SWEEP, space),
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
        metrics=read_json(files["metrics"], "gan"),
        search=read_json(files["search"], "gan_search"),
        sweep=load_sweep(files, "gan_search", GAN_SWEEP, space),
        samples_png=_need(files["samples"], "gan_eval").read_bytes(),
        class_png=_need(files["class_samples"], "gan_eval").read_bytes(),
        val_fid=read_val_fid(files["log"], "gan"),
        real=real,
        content_hash=digest,
        files={k: str(v) for k, v in files.items()},
    )


# =========================================================================== numbers


def fmt(v: Any) -> str:
    """A metric as `dvc metrics show` prints it: floats rounded to 5 decimal places, everything else as it is.

    (DVC 3's `metrics show` prints str(round(v, 5)); it is `exp show` that prints 5 significant digits.)
    """
    return str(round(v, 5)) if isinstance(v, float) else str(v)


def _ordered(metrics: dict[str, Any], known: tuple[str, ...]) -> list[str]:
    """Scalar keys: the known ones in their order, then the rest sorted (nested dicts get their own tables)."""
    scalar = [k for k in metrics if not isinstance(metrics[k], (dict, list))]
    return [k for k in known if k in scalar] + sorted(set(scalar) - set(known))


def usable_trials(s: SweepResults) -> list[dict[str, Any]]:
    return [t for t in s.trials if t["status"] in OK_STATUSES and math.isfinite(t[s.column])]


def running_best(s: SweepResults) -> np.ndarray:
    """The best value so far after each trial, in the sweep's direction and Optuna's order of the trials; failed
    and errored trials bring no improvement, and before any value the best is nan."""
    v = np.array([t[s.column] if t["status"] in OK_STATUSES else math.nan for t in s.trials], dtype=float)
    if s.objective.mode == "max":
        best = np.maximum.accumulate(np.where(np.isfinite(v), v, -np.inf))
    else:
        best = np.minimum.accumulate(np.where(np.isfinite(v), v, np.inf))
    return np.where(np.isfinite(best), best, np.nan)


def new_bests(s: SweepResults) -> list[tuple[int, float]]:
    """(trial, value) for each trial that set a new best: the steps of the best-so-far curve."""
    best, out = running_best(s), []
    for i, t in enumerate(s.trials):
        if math.isfinite(best[i]) and (i == 0 or best[i] != best[i - 1]):  # the first value, or a better one
            out.append((t["trial"], float(best[i])))
    return out


def param_distributions(s: SweepResults) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions spanning the values the usable trials took; a hyperparameter that never varied is left
    out. Strings and bools (a backbone, a generator's kind) are categorical."""
    trials, dists = usable_trials(s), {}
    for k in s.hparams:
        seen = sorted({t[k] for t in trials})
        if len(seen) < 2:
            continue
        if isinstance(seen[0], (bool, str)):
            dists[k] = optuna.distributions.CategoricalDistribution(seen)
        elif isinstance(seen[0], int):
            dists[k] = optuna.distributions.IntDistribution(seen[0], seen[-1])
        else:
            dists[k] = optuna.distributions.FloatDistribution(seen[0], seen[-1], log=k in s.log_scale)
    return dists


def param_importances(s: SweepResults) -> dict[str, float]:
    """Optuna's importance of each varying hyperparameter for the sweep's metric, summing to 1, most important first.

    The completed and pruned trials become an in-memory study in the sweep's direction (PED-ANOVA compares the best
    trials with all of them, so the direction decides which trials are the best). The evaluator is PED-ANOVA,
    Optuna 5's default: it needs no scikit-learn (fANOVA and mean-decrease-impurity do) and has no randomness, so it
    takes no seed and the same table always gives the same answer. Empty when there is nothing to rank: fewer than 2
    usable trials, no varying hyperparameter, or every trial scoring the same.
    """
    ok = usable_trials(s)
    dists = param_distributions(s)
    if len(ok) < 2 or not dists:
        return {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = optuna.create_study(direction="maximize" if s.objective.mode == "max" else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(
        [optuna.trial.create_trial(params={k: t[k] for k in dists}, distributions=dists, value=t[s.column]) for t in ok]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "importances will be equal" when all trials tie; handled below
        raw = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), normalize=False
        )
    total = sum(raw.values())
    if not total > 0:
        return {}
    return {k: v / total for k, v in sorted(raw.items(), key=lambda kv: -kv[1])}


# =========================================================================== figures


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def image_png(images: np.ndarray, nrow: int) -> bytes:
    """(N, H, W, C) uint8 images tiled into one PNG, drawn like gan.py draws its samples."""
    grid = image_grid(images.astype(np.float32) / 255.0, nrow)  # (rows*(H+2)+2, nrow*(W+2)+2, C) in [0, 1]
    buf = io.BytesIO()
    matplotlib.image.imsave(
        buf, grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1, format="png"
    )
    return buf.getvalue()


def importance_figure(importances: dict[str, float], metric: str) -> Figure:
    names = list(importances)[::-1]  # most important on top
    fig = Figure(figsize=(6, 0.35 * len(names) + 1.0), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="#4c72b0")
    ax.set_xlabel(f"importance for {metric} (PED-ANOVA, sums to 1)")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _axis(values: list, log: bool) -> tuple[Any, list[tuple[float, str]]]:
    """A value -> [0, 1] map for one parallel-coordinates axis, and its (position, label) ticks."""
    seen = sorted(set(values))
    if isinstance(seen[0], (bool, str)):  # categorical: evenly spaced positions
        pos = {v: i / max(len(seen) - 1, 1) for i, v in enumerate(seen)}
        return pos.__getitem__, [(p, str(v)) for v, p in pos.items()]
    f = math.log10 if log else float
    lo, hi = f(seen[0]), f(seen[-1])
    span = (hi - lo) or 1.0

    def scale(v):
        return (f(v) - lo) / span

    if isinstance(seen[0], int) and len(seen) <= 6:
        ticks = seen
    else:
        ticks = [seen[0], 10 ** ((lo + hi) / 2) if log else (lo + hi) / 2, seen[-1]] if hi > lo else [seen[0]]
    return scale, [(scale(v), f"{v:.3g}" if isinstance(v, float) else str(v)) for v in ticks]


def parallel_coordinates_figure(s: SweepResults) -> Figure | None:
    """One line per trial across the varying hyperparameters and the metric, coloured by the metric (the best
    trials brightest, and drawn last).

    Categorical axes put each value at its own position; the space's loguniform ones are on a log scale. Trials
    without a metric (failed, errored) are grey dashed lines across the hyperparameter axes only. None when no
    hyperparameter varied.
    """
    trials, metric = s.trials, s.column
    names = [k for k in s.hparams if len({t[k] for t in trials}) > 1]
    scored = [t for t in trials if math.isfinite(t[metric])]
    if not names or not scored:
        return None
    axes = [*names, metric]
    maps = [_axis([t[k] for t in (trials if k != metric else scored)], k in s.log_scale) for k in axes]
    accs = [t[metric] for t in scored]
    norm = Normalize(min(accs), max(accs) if max(accs) > min(accs) else min(accs) + 1e-9)
    cmap = colormaps["viridis" if s.objective.mode == "max" else "viridis_r"]
    sign = 1 if s.objective.mode == "max" else -1

    fig = Figure(figsize=(max(6.0, 1.2 * len(axes) + 1.5), 4.6), layout="constrained")
    ax = fig.subplots()
    xs = np.arange(len(axes))
    for t in sorted(trials, key=lambda t: sign * t[metric] if math.isfinite(t[metric]) else -math.inf):
        if math.isfinite(t[metric]):
            ys = [scale(t[k]) for k, (scale, _) in zip(axes, maps)]
            ax.plot(xs, ys, color=cmap(norm(t[metric])), lw=1.6, alpha=0.85)
        else:
            ys = [scale(t[k]) for k, (scale, _) in zip(names, maps)]
            ax.plot(xs[:-1], ys, color="0.6", lw=1, ls="--", alpha=0.8)
    for x, (_, ticks) in zip(xs, maps):
        ax.axvline(x, color="0.25", lw=1, zorder=0)
        for y, label in ticks:
            ax.text(
                x - 0.04,
                y,
                label,
                ha="right",
                va="center",
                fontsize=9,
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75},
            )
    ax.set_xticks(xs, [k if k not in s.log_scale else f"{k} (log)" for k in axes], fontsize=9)
    ax.set_xlim(-0.6, len(axes) - 0.8)
    ax.set_ylim(-0.06, 1.06)
    ax.set_yticks([])
    ax.spines[["top", "right", "left", "bottom"]].set_visible(False)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=f"{metric} ({s.goal})", pad=0.01)
    if len(scored) < len(trials):
        ax.plot([], [], color="0.6", ls="--", label=f"no {metric} ({len(trials) - len(scored)} failed/errored)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False, fontsize=8)
    return fig


def best_so_far_figure(s: SweepResults) -> Figure | None:
    """Each trial's metric and the best so far (in the sweep's direction): against the trial number (Optuna's
    proposal order) and, from the sweep stage's progress-by-time file, against the sweep's wall time."""
    ordered, metric = s.trials, s.column
    n = np.array([t["trial"] for t in ordered])
    v = np.array([t[metric] for t in ordered], dtype=float)
    if not np.isfinite(v).any():
        return None
    best = running_best(s)
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax, ax_t = fig.subplots(1, 2, sharey=True)
    shown = np.isfinite(best)
    ax.step(n[shown], best[shown], where="post", color="#c44e52", lw=2, label="best so far")
    styles = {"completed": ("o", "#4c72b0"), "pruned": ("x", "#8c8c8c")}
    for status, (marker, color) in styles.items():
        m = np.array([t["status"] == status for t in ordered]) & np.isfinite(v)
        if m.any():
            ax.scatter(n[m], v[m], marker=marker, color=color, s=20, zorder=3, label=f"{status} ({m.sum()})")
    lost = ~np.isfinite(v)
    if lost.any():  # failed and errored trials have no value: mark them along the bottom
        ax.scatter(
            n[lost],
            np.zeros(lost.sum()),
            marker="v",
            color="black",
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            zorder=3,
            label=f"failed/errored ({lost.sum()})",
        )
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{metric} ({s.goal})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlim(n.min() - 0.5, n.max() + 0.5)
    ax.grid(alpha=0.3)

    by_time = s.progress_time
    t = np.array([r["wall_time_s"] for r in by_time])
    tv, tb = (np.array([r[k] for r in by_time]) for k in (f"trial_{s.objective.metric}", metric))
    shown = np.isfinite(tb)
    if shown.any():
        ax_t.step(t[shown], tb[shown], where="post", color="#c44e52", lw=2)
        ax_t.scatter(t[np.isfinite(tv)], tv[np.isfinite(tv)], color="#4c72b0", s=20, zorder=3)
    else:
        ax_t.text(0.5, 0.5, "no trial timings", transform=ax_t.transAxes, ha="center", color="0.4")
    ax_t.set_xlabel("wall time of the sweep (s)")
    ax_t.grid(alpha=0.3)
    ax_t.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def spend(s: SweepResults) -> tuple[str, np.ndarray] | None:
    """What each trial of the sweep cost, in the most telling unit its trials.csv has for every trial (dollars,
    GPU-hours, trial-hours), and that unit; None for a trials.csv without costs."""
    for key, unit, scale in SPEND:
        v = np.array([t.get(key, math.nan) for t in s.trials], dtype=float) * scale
        if len(v) and np.isfinite(v).all() and v.sum() > 0:
            return unit, v
    return None


def cost_figure(s: SweepResults) -> Figure | None:
    """What the sweep's accuracy cost: each trial's metric against its own cost, and the best so far against the
    sweep's cumulative spend (in Optuna's order of the trials)."""
    paid, metric = spend(s), s.column
    v = np.array([t[metric] if t["status"] in OK_STATUSES else math.nan for t in s.trials], dtype=float)
    if paid is None or not np.isfinite(v).any():
        return None
    unit, cost = paid
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax, ax_c = fig.subplots(1, 2, sharey=True)
    for status, (marker, color) in {"completed": ("o", "#4c72b0"), "pruned": ("x", "#8c8c8c")}.items():
        m = np.array([t["status"] == status for t in s.trials]) & np.isfinite(v)
        if m.any():
            ax.scatter(cost[m], v[m], marker=marker, color=color, s=20, zorder=3, label=f"{status} ({m.sum()})")
    ax.set_xlabel(f"the trial's cost ({unit})")
    ax.set_ylabel(f"{metric} ({s.goal})")
    ax.grid(alpha=0.3)
    best, total = running_best(s), np.cumsum(cost)
    shown = np.isfinite(best)
    ax_c.step(total[shown], best[shown], where="post", color="#c44e52", lw=2, label="best so far")
    ax_c.set_xlabel(f"the sweep's spend so far ({unit})")
    ax_c.set_xlim(0, total[-1] * 1.02)
    ax_c.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = ax_c.get_legend_handles_labels()
    ax_c.legend(handles + h2, labels + l2, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def val_fid_figure(g: GanResults) -> Figure | None:
    """The final GAN's validation FID by epoch, with the epoch the gan stage kept (metrics/gan.json's best_epoch)."""
    if not g.val_fid:
        return None
    epochs, fid = zip(*g.val_fid)
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(epochs, fid, marker="o", color="#4c72b0", label="validation FID")
    kept = g.metrics.get("best_epoch")
    if kept in epochs:
        ax.scatter(
            [kept],
            [fid[epochs.index(kept)]],
            s=120,
            facecolors="none",
            edgecolors="#c44e52",
            lw=2,
            zorder=3,
            label=f"kept: epoch {kept}",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation FID (lower is better)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig


def pareto_figure(d: DatasetResults) -> Figure | None:
    """Validation accuracy against the sweep's first cost (params when it has none): every completed trial, the
    Pareto front joined as a staircase, and the picked point (the model `train` retrained) marked."""
    x_key = d.objectives[1] if len(d.objectives) > 1 else "params"
    y_key = "best_val_accuracy"
    done = [
        t
        for t in d.sweep.trials
        if t["status"] == "completed" and math.isfinite(t.get(x_key, math.nan)) and math.isfinite(t[y_key])
    ]
    front = sorted((p for p in d.pareto if x_key in p), key=lambda p: p[x_key])
    if not front:
        return None
    fig = Figure(figsize=(7, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.scatter(
        [t[x_key] for t in done],
        [t[y_key] for t in done],
        color="#bbbbbb",
        s=18,
        label=f"completed trials ({len(done)})",
    )
    ax.step([p[x_key] for p in front], [p[y_key] for p in front], where="post", color="#4c72b0", lw=1.5)
    ax.scatter(
        [p[x_key] for p in front],
        [p[y_key] for p in front],
        color="#4c72b0",
        s=30,
        zorder=3,
        label=f"Pareto front ({len(front)})",
    )
    for p in front:
        if p["picked"]:
            ax.scatter(
                [p[x_key]],
                [p[y_key]],
                marker="*",
                s=260,
                color="#dd8452",
                edgecolor="black",
                zorder=4,
                label=f"picked: trial {p['trial']}",
            )
    ax.set_xscale("log")
    # Labels at 1, 2 and 5 of each decade only; matplotlib would also label minor ticks within one decade, and those
    # crowd into each other. Parameter counts read as 300k, 1.5M.
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(EngFormatter(sep="") if x_key == "params" else FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(
        {
            "params": "parameters",
            "latency_ms": "latency per image at batch 1 (ms)",
            "latency_batch_ms": "time per image at batch 256 (ms)",
        }.get(x_key, x_key)
        + " (lower is better)"
    )
    ax.set_ylabel("validation accuracy (higher is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def confusion_figure(pairs: list[tuple[str, str]], classes: tuple[str, ...]) -> Figure:
    """Counts of (actual, predicted) test images as a heatmap; rows are the actual class."""
    names = list(classes) + sorted({c for p in pairs for c in p} - set(classes))  # classes, then any strays
    index = {c: i for i, c in enumerate(names)}
    cm = confusion_matrix([index[a] for a, _ in pairs], [index[p] for _, p in pairs], len(names))  # (K, K)
    k = len(names)
    size = max(3.5, 0.45 * k + 1.5)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    hi = cm.max() or 1
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=8 if k > 6 else 10,
                color="white" if cm[i, j] > hi / 2 else "black",
            )
    ax.set_xticks(
        range(k),
        names,
        rotation=45 if max(map(len, names)) > 2 else 0,
        ha="right" if max(map(len, names)) > 2 else "center",
        fontsize=9,
    )
    ax.set_yticks(range(k), names, fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    fig.colorbar(im, ax=ax, label="test images", shrink=0.8)
    return fig


# =========================================================================== HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, monospace; }
th { background: #f3f3f3; }
code, .mono { font-family: ui-monospace, monospace; font-size: 0.9em; }
.mono { word-break: break-all; }
figure { display: inline-block; margin: 0.5em 1.5em 1em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; max-width: 900px; }
img { max-width: 100%; }
img.pixels { width: 360px; image-rendering: pixelated; border: 1px solid #ccc; }
.note { color: #555; font-style: italic; }
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _img(png: bytes, alt: str, cls: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    klass = f' class="{cls}"' if cls else ""
    return f'<img{klass} alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figure(fig: Figure | None, alt: str, caption: str, empty: str) -> str:
    if fig is None:
        return f'<p class="note">{_e(empty)}</p>'
    return f"<figure>{_img(png_bytes(fig), alt)}<figcaption>{caption}</figcaption></figure>"


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """rows hold pre-escaped cell HTML; cells from column `numeric_from` on are right-aligned numbers."""
    head = f"<thead><tr>{''.join(f'<th>{h}</th>' for h in header)}</tr></thead>" if header else ""
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table>{head}<tbody>{body}</tbody></table>"


def metrics_table(datasets: list[DatasetResults]) -> str:
    """Rows: each search.json and classifier.json key; columns: datasets. Cells as `dvc metrics show` prints them."""
    rows = []
    for part, known in (("search", SEARCH_KEYS), ("classifier", CLASSIFIER_KEYS)):
        keys = list(dict.fromkeys(k for d in datasets for k in _ordered(getattr(d, part), known)))
        for k in keys:
            rows.append(
                [
                    f"<code>{_e(k)}</code>",
                    f"<code>{part}.json</code>",
                    *(_e(fmt(getattr(d, part)[k])) if k in getattr(d, part) else "-" for d in datasets),
                ]
            )
    return _table(["metric", "file", *(_e(d.name) for d in datasets)], rows, numeric_from=2)


def _per_class_table(d: DatasetResults) -> str:
    acc = d.classifier.get("per_class_accuracy") or {}
    names = [c for c in d.classes if c in acc] + sorted(set(acc) - set(d.classes))
    if not names:
        return ""
    return (
        "<p>Per-class test accuracy (<code>per_class_accuracy</code> in "
        f"<code>{_e(d.files['classifier'])}</code>):</p>"
        + _table(["class", *(_e(c) for c in names)], [["accuracy", *(_e(fmt(acc[c])) for c in names)]])
    )


def sweep_html(s: SweepResults, name: str, files: dict[str, str]) -> str:
    """A sweep's parameter importance, parallel coordinates and best so far, each in the sweep's direction.
    `name` labels it ("mnist", "GAN sweep"); `files` gives its trials and progress_time paths."""
    ok, col = usable_trials(s), s.column
    imp = param_importances(s)
    if imp:
        imp_html = _figure(
            importance_figure(imp, col),
            f"parameter importance, {name}",
            f"Parameter importance for <code>{_e(col)}</code> ({s.goal}) over the {len(ok)} completed "
            "and pruned trials (Optuna's PED-ANOVA evaluator; hyperparameters that never varied are "
            "left out): " + ", ".join(f"<code>{_e(k)}</code> {v:.2f}" for k, v in imp.items()) + ".",
            "",
        )
    else:
        why = (
            "fewer than 2 trials succeeded"
            if len(ok) < 2
            else "no hyperparameter varied across the successful trials"
            if not param_distributions(s)
            else f"every successful trial reached the same {col}"
        )
        imp_html = f'<p class="note">No parameter importance for {_e(name)}: {_e(why)}.</p>'
    steps = new_bests(s)
    steps_html = (
        f"<p>Trials that set a new best <code>{_e(col)}</code> ({s.goal}):</p>"
        + _table(["trial", *(_e(n) for n, _ in steps)], [[_e(col), *(_e(fmt(v)) for _, v in steps)]])
        if steps
        else ""
    )
    return "\n".join(
        [
            imp_html,
            _figure(
                parallel_coordinates_figure(s),
                f"parallel coordinates, {name}",
                f"Every trial of the sweep ({len(s.trials)}), one line each, coloured by <code>{_e(col)}</code> "
                f"({s.goal}).",
                f"No parallel coordinates: no hyperparameter varied, or no trial has a {col}.",
            ),
            _figure(
                best_so_far_figure(s),
                f"best so far, {name}",
                f"<code>{_e(col)}</code> of each trial and the best so far ({s.goal}): in the order Optuna proposed "
                f"the trials (<code>{_e(files['trials'])}</code>), and by the sweep's wall time when each trial "
                f"ended (<code>{_e(files['progress_time'])}</code>).",
                f"No trial reached a {col}.",
            ),
            _cost_html(s, name, files),
            steps_html,
        ]
    )


def _cost_html(s: SweepResults, name: str, files: dict[str, str]) -> str:
    paid = spend(s)
    if paid is None:
        return ""
    unit, cost = paid
    return _figure(
        cost_figure(s),
        f"cost against {s.column}, {name}",
        f"What <code>{_e(s.column)}</code> cost: each trial against its own cost, and the best so far against the "
        f"sweep's spend, in {unit} (<code>{_e(files['trials'])}</code>: <code>train_s</code>, <code>gpu_s</code>, "
        f"<code>cost_usd</code>). The sweep's total: <strong>{cost.sum():.3g} {unit}</strong> over "
        f"{len(s.trials)} trials.",
        f"No trial reached a {s.column}.",
    )


def pareto_caption(d: DatasetResults) -> str:
    picked = next((p for p in d.pareto if p["picked"]), None)
    why = (d.classifier.get("picked") or {}).get("reason", "")
    what = (
        f"The Pareto front of {', '.join(d.objectives)}"
        if len(d.objectives) > 1
        else "Validation accuracy against size (the sweep optimised accuracy alone: its front is its best trial)"
    )
    return (
        f"{_e(what)} (<code>{_e(d.files['pareto'])}</code>). Picked: trial {picked['trial'] if picked else '-'}"
        f"{', ' + _e(why) if why else ''}; <code>train</code> retrained it."
    )


def dataset_section(d: DatasetResults) -> str:
    files = "".join(f"<li>{_e(role)}: <code>{_e(path)}</code></li>" for role, path in d.files.items())
    return "\n".join(
        [
            f'<h2 id="{_e(d.name)}">{_e(d.name)}</h2>',
            f"<ul>{files}</ul>",
            "<h3>Search</h3>",
            sweep_html(d.sweep, d.name, d.files),
            _figure(pareto_figure(d), f"Pareto front, {d.name}", pareto_caption(d), "No trial ran all its epochs."),
            "<h3>Classifier (test split)</h3>",
            _per_class_table(d),
            _figure(
                confusion_figure(d.confusion, d.classes),
                f"confusion matrix, {d.name}",
                f"Confusion matrix of the {len(d.confusion)} test images (<code>{_e(d.files['confusion'])}</code>).",
                "",
            ),
        ]
    )


def gan_section(g: GanResults) -> str:
    keys = _ordered(g.metrics, GAN_KEYS)
    table = _table(["metric", "value"], [[f"<code>{_e(k)}</code>", _e(fmt(g.metrics[k]))] for k in keys])
    n = len(g.real)
    files = "".join(f"<li>{_e(role)}: <code>{_e(path)}</code></li>" for role, path in g.files.items())
    return "\n".join(
        [
            f'<h2 id="gan">GAN ({_e(g.dataset)})</h2>',
            f"<ul>{files}</ul>",
            "<h3>Search</h3>",
            f"<p>The GAN sweep (<code>{_e(g.files['search'])}</code>), which chose this GAN's architecture and "
            "learning "
            f"rates by FID:</p>",
            _table(["metric", "value"], [[f"<code>{_e(k)}</code>", _e(fmt(v))] for k, v in g.search.items()]),
            sweep_html(g.sweep, "GAN sweep", g.files),
            "<h3>Final GAN</h3>",
            f"<p>Metrics from <code>{_e(g.files['metrics'])}</code>. FID and Inception Score use the features of the "
            f"classifier trained on {_e(g.dataset)}; the <code>reference_*</code> rows score real images the same "
            "way.</p>",
            table,
            f"<figure>{_img(g.samples_png, 'generated samples', 'pixels')}"
            f"<figcaption>Generated: <code>{_e(g.files['samples'])}</code></figcaption></figure>",
            f"<figure>{_img(image_png(g.real, 8), 'real test images', 'pixels')}"
            f"<figcaption>Real: the first {n} test images of <code>{_e(g.files['prepared'])}</code>"
            "</figcaption></figure>",
            f"<figure>{_img(g.class_png, 'real and generated images by class', 'pixels')}"
            "<figcaption>By class, one row each: real test images (left) and the generated samples that the "
            "classifier assigns to that class (right; blank where it assigns fewer). Class shares: "
            f"<code>class_share</code> against <code>reference_class_share_test</code> in "
            f"<code>{_e(g.files['metrics'])}</code>.</figcaption></figure>",
            _figure(
                val_fid_figure(g),
                "validation FID by epoch",
                f"Validation FID of each scored epoch (<code>{_e(g.files['log'])}</code>); the gan stage keeps the "
                "circled epoch.",
                "No scored epochs in the GAN's log.",
            ),
        ]
    )


def render_report(
    datasets: list[DatasetResults], gan: GanResults, *, commit: str, experiment: str | None = None
) -> str:
    """The whole page as one HTML string (ASCII: non-ASCII characters become character references)."""
    versions = {d.name: (d.files["prepared"], d.content_hash) for d in datasets}
    versions.setdefault(gan.dataset, (gan.files["prepared"], gan.content_hash))
    prov = [["git commit (when this page was made)", f'<span class="mono">{_e(commit)}</span>']]
    if experiment:
        prov.append(["DVC experiment", f'<span class="mono">{_e(experiment)}</span>'])
    prov += [
        [f"data version: {_e(name)}", f'<span class="mono">{_e(h)}</span> (<code>{_e(p)}</code>)']
        for name, (p, h) in versions.items()
    ]
    toc = " &middot; ".join(f'<a href="#{_e(d.name)}">{_e(d.name)}</a>' for d in datasets)
    body = "\n".join(
        [
            "<h1>grutune report</h1>",
            f'<p>{toc} &middot; <a href="#gan">GAN</a></p>',
            _table([], prov, numeric_from=99),
            "<h2>Metrics</h2>",
            "<p>Numbers are printed as <code>dvc metrics show</code> prints them (rounded to 5 decimal places).</p>",
            metrics_table(datasets),
            *(dataset_section(d) for d in datasets),
            gan_section(gan),
        ]
    )
    page = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>grutune report</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
    return page.encode("ascii", "xmlcharrefreplace").decode("ascii")
