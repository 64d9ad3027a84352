"""A finished sweep as the stage reports it: one row per trial, the best config (or the Pareto front and its pick),
counts and best-so-far curves."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grutune.errors import GrutuneError
from grutune.metrics import pareto_front
from grutune.objectives import COSTS
from grutune.sweep.journal import JournalTrial

__all__ = [
    "STATUSES",
    "SearchResult",
    "best_so_far",
    "describe",
    "pareto_rows",
    "pick",
    "summarise",
    "trial_id",
    "trial_rows",
]

STATUSES = ("completed", "pruned", "failed", "errored")


@dataclass(frozen=True)
class SearchResult:
    sweep_id: str
    best: dict[str, Any]  # the picked trial: trial_id, the metric, epochs, config (and costs, pick, reason)
    trials: list[dict[str, Any]]  # one row per trial
    summary: dict[str, Any]  # counts and timing, for DVC metrics
    progress: list[dict[str, Any]]  # best-so-far metric after each trial, in the order they were proposed
    progress_time: list[dict[str, Any]]  # the same, in the order trials ended, against wall time
    metric: str  # what the sweep optimised
    front: list[dict[str, Any]] = ()  # the Pareto front's trials (rows of `trials`), the picked one marked


UNKNOWN = JournalTrial(0, math.nan, -1, False, {}, 0.0)  # a trial the journal does not hold


def trial_rows(
    results,
    sweep,
    journal: dict[str, JournalTrial],
    configs: dict[str, dict] | None = None,
    resources: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per trial: completed (ran max_epochs), pruned (stopped by ASHA), failed (diverged), errored (raised).

    `results` is Tune's ResultGrid; `journal` is `journal.journal_progress` of the sweep's study; `configs` is
    {Tune trial id: config} for every trial, where a trial that never reported has no config in `results`. Each row
    says what the trial cost: its training seconds (Tune's time_total_s), those times the CPUs and GPUs it held
    (`resources`), and their price at the sweep's `price_per_hour` (NaN without prices).
    """
    resources = resources or {}
    prices = sweep.params.price_per_hour
    rows, metric = [], sweep.metric
    for r in results:
        df = r.metrics_dataframe
        has = df is not None and metric in df and len(df) > 0
        tid = trial_id(r)
        j_epochs, j_best, number, j_complete, j_costs, j_seconds = journal.get(tid, UNKNOWN)
        epochs = max(int(df["epoch"].max()) if has else 0, j_epochs)
        diverged = has and "diverged" in df and bool(df["diverged"].fillna(0).max())
        # A trial the journal records as complete finished before a crash; if Tune then failed to restore it from a
        # stale snapshot (its checkpoint already rotated away), that error does not undo its result.
        errored = r.error is not None and not j_complete
        status = (
            "errored"
            if errored
            else "failed"
            if diverged
            else "completed"
            if epochs >= sweep.params.max_epochs
            else "pruned"
        )
        best = math.nan
        if not diverged:
            for v in [*(df[metric].tolist() if has else []), j_best]:
                best = float(v) if sweep.better(float(v), best) else best
        config = r.config or (configs or {}).get(tid) or {}
        hp = {k: config.get(k) for k in sweep.hp_model.model_fields}
        error_file = Path(r.path) / "error.txt"
        ended = float(df["timestamp"].max()) if has and "timestamp" in df else math.nan
        # Tune's result file may hold less than the journal: none yet for a trial stopped while it waited (top_k),
        # or a replay's few seconds where a trial that finished before a crash re-reported its result.
        time_s = max(float(df["time_total_s"].max()) if has and "time_total_s" in df else 0.0, j_seconds)
        extra = {
            k: float(df[k].dropna().iloc[-1]) if has and k in df and df[k].notna().any() else j_costs.get(k, math.nan)
            for k in sweep.columns
        }
        rows.append(
            {
                "trial": number,
                "trial_id": tid,
                "status": status,
                **hp,
                f"best_{metric}": best,
                **extra,
                "epochs": epochs,
                "train_s": round(time_s, 3),
                "cpu_s": round(time_s * resources.get("cpu", 0), 3),
                "gpu_s": round(time_s * resources.get("gpu", 0), 3),
                "cost_usd": round(time_s * prices.per_second(resources), 4) if prices.set else math.nan,
                "resumed_from_epoch": int(df["resumed_from_epoch"].max()) if has and "resumed_from_epoch" in df else 0,
                "error": str(error_file) if errored and error_file.exists() else "",
                "_ended": ended,
            }
        )
    return sorted(rows, key=lambda r: (r["trial"], r["trial_id"]))  # in the order Optuna proposed them


def trial_id(result) -> str:
    """A Tune Result's trial id."""
    return (result.metrics or {}).get("trial_id") or _trial_id_from_dir(result.path)


def _trial_id_from_dir(path: str) -> str:
    """Tune names a trial's directory <trainable>_<trial id>_<index>_<config>; a trial that never reported has
    only this to go by."""
    m = re.search(r"_([0-9a-f]{8}|[0-9a-f]{5}_[0-9]{5})_\d+_", Path(path).name)
    return m.group(1) if m else Path(path).name


def summarise(sweep, rows: list[dict[str, Any]], where: str) -> SearchResult:
    """The stage's view of a finished sweep: its best trial (of those that succeeded), counts and best-so-far."""
    sid, key = sweep.sweep_id, f"best_{sweep.metric}"
    ok = [r for r in rows if r["status"] in ("completed", "pruned") and not math.isnan(r[key])]
    if not ok:
        raise GrutuneError(f"no trial of sweep {sid} succeeded; see the trial directories under {where}")
    top = ok[0]
    for r in ok[1:]:
        top = r if sweep.better(r[key], top[key]) else top
    front, picked, reason = [top], top, "the best trial"
    if sweep.costs:
        front, picked, reason = pick(pareto_rows(rows, sweep), sweep, sweep.params.pick, sweep.params.pick_within)
    best = {
        "sweep_id": sid,
        "data_hash": sweep.data_hash,
        "trial_id": picked["trial_id"],
        sweep.metric: picked[key],
        "epochs": picked["epochs"],
        **({c: picked[c] for c in sweep.columns} if sweep.costs else {}),
        **({"pick": sweep.params.pick, "reason": reason} if sweep.costs else {}),
        "config": sweep.hp_model(**{k: picked[k] for k in sweep.hp_model.model_fields}).model_dump(),
    }
    counts = {st: sum(r["status"] == st for r in rows) for st in STATUSES}
    by_time = sorted((r for r in rows if not math.isnan(r["_ended"])), key=lambda r: r["_ended"])
    t0 = min((r["_ended"] - r["train_s"] for r in by_time), default=0.0)
    # The sweep's wall time: from its first trial's start to its last trial's end, across resumes.
    wall = by_time[-1]["_ended"] - t0 if by_time else 0.0
    summary = {
        key: top[key],
        "trials": len(rows),
        **counts,
        "epochs_run": sum(r["epochs"] for r in rows),
        "wall_time_s": round(wall, 1),
        "trial_hours": round(sum(r["train_s"] for r in rows) / 3600, 4),
        "gpu_hours": round(sum(r["gpu_s"] for r in rows) / 3600, 4),
        **({"cost_usd": round(sum(r["cost_usd"] for r in rows), 2)} if sweep.params.price_per_hour.set else {}),
        **({"pareto_points": len(front), f"picked_{sweep.metric}": picked[key]} if sweep.costs else {}),
    }
    public = lambda r: {k: v for k, v in r.items() if not k.startswith("_")}  # noqa: E731
    return SearchResult(
        sid,
        best,
        [public(r) for r in rows],
        summary,
        best_so_far(rows, sweep, "trial", lambda r: r["trial"]),
        best_so_far(by_time, sweep, "wall_time_s", lambda r: round(r["_ended"] - t0, 1)),
        sweep.metric,
        [{**public(r), "picked": r is picked} for r in front],
    )


def pareto_rows(rows: list[dict[str, Any]], sweep) -> list[dict[str, Any]]:
    """The trials on the Pareto front of the sweep's objectives (its metric, then its costs, minimised), in trial
    order. Only completed trials count: a trial ASHA stopped has a truncated metric, and Optuna holds no
    objective values for it."""
    key = f"best_{sweep.metric}"
    done = [r for r in rows if r["status"] == "completed" and not any(math.isnan(r[k]) for k in (key, *sweep.costs))]
    if not done:
        raise GrutuneError(
            f"no trial of sweep {sweep.sweep_id} ran all {sweep.params.max_epochs} epochs, so it has "
            f"no Pareto front: raise search.num_samples, or lower search.max_epochs"
        )
    senses = (1 if sweep.mode == "max" else -1, *(-1,) * len(sweep.costs))
    return [done[i] for i in pareto_front([[r[k] for k in (key, *sweep.costs)] for r in done], senses)]


def pick(front: list[dict[str, Any]], sweep, rule: str, within: float) -> tuple[list[dict], dict, str]:
    """The front, the point `rule` picks from it, and why: `most_accurate`, or the point with the least of a cost
    (smallest: params, fastest: latency_ms, fastest_batch: latency_batch_ms) among those at most `within` below the
    most accurate point's metric."""
    key = f"best_{sweep.metric}"
    top = max(front, key=lambda r: (r[key], -r["trial"]))
    if rule == "most_accurate":
        return front, top, f"most_accurate: the highest {sweep.metric} on the front ({top[key]:.4f})"
    cost = COSTS[rule]
    near = [r for r in front if r[key] >= top[key] - within]
    chosen = min(near, key=lambda r: (r[cost], -r[key]))
    return (
        front,
        chosen,
        (
            f"{rule}: the least {cost} ({chosen[cost]:.6g}, against {top[cost]:.6g}) among the "
            f"{len(near)} front points within {within} {sweep.metric} of the most accurate "
            f"({top[key]:.4f}); it has {chosen[key]:.4f}"
        ),
    )


def best_so_far(rows: list[dict], sweep, x: str, value_of_x: Callable[[dict], Any]) -> list[dict]:
    """The best metric so far after each row (failed and errored trials bring no improvement)."""
    out, best, m = [], math.nan, sweep.metric
    for r in rows:
        v = r[f"best_{m}"] if r["status"] in ("completed", "pruned") else math.nan
        best = v if sweep.better(v, best) else best
        out.append(
            {x: value_of_x(r), f"trial_{m}": "" if math.isnan(v) else v, f"best_{m}": "" if math.isnan(best) else best}
        )
    return out


def describe(result: SearchResult, what: str = "trials") -> str:
    """One line for the stage's output: the counts and the best trial with its config."""
    s, b, metric = result.summary, result.best, result.metric
    cfg = ", ".join(f"{k}={v}" for k, v in b["config"].items())
    return (
        f"best of {s['trials']} {what} ({s['completed']} completed, {s['pruned']} pruned, {s['failed']} failed, "
        f"{s['errored']} errored): {b['trial_id']} {metric}={b[metric]:.4f} after {b['epochs']} epochs ({cfg})"
    )
