"""The report's pictures: each sweep's importance, parallel coordinates, best so far and cost, the classifier's
Pareto front and confusion matrix, and the GAN's validation FID, as matplotlib figures and PNG bytes."""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib.image
import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from grutune.images import image_grid
from grutune.metrics import confusion_matrix
from grutune.report.analysis import OK_STATUSES, running_best, spend
from grutune.report.inputs import DatasetResults, GanResults, SweepResults

__all__ = [
    "best_so_far_figure",
    "confusion_figure",
    "cost_figure",
    "image_png",
    "importance_figure",
    "parallel_coordinates_figure",
    "pareto_figure",
    "png_bytes",
    "val_fid_figure",
]


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
    """The final GAN's validation FID by epoch, with the epoch the gan stage kept (best_epoch in gan_eval's
    details)."""
    if not g.val_fid:
        return None
    epochs, fid = zip(*g.val_fid)
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(epochs, fid, marker="o", color="#4c72b0", label="validation FID")
    kept = g.details.get("best_epoch")
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
    y_key = d.sweep.column
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
