"""The Performance page's tables, rendered from benchmarks/results/*.json when the site is built.

mkdocs-gen-files runs this script (mkdocs.yml). docs/performance.md (and search_history.md) holds the prose and,
where a table belongs, a marker `<!-- table: NAME -->`: NAME is a results file's stem, or `stem:part` for one of
several tables from one file. Each marker becomes the table, then the command that produced the file, the machine it
ran on and the file's path. A results file that does not exist yet renders as "not measured yet"; a marker no
renderer knows stops the build.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import mkdocs_gen_files
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = ("performance.md", "search_history.md")  # the pages whose markers become tables
MARKER = re.compile(r"^<!-- table: ([\w.-]+)(?::(\w+))? -->$", re.M)


# --- formatting ------------------------------------------------------------------------------------------------


def num(v: object, digits: int = 3) -> str:
    """A number as the benchmarks print it: floats to `digits` decimals, ints as they are, inf as 'never'."""
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, float) and math.isinf(v):
        return "never"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def p_value(p: float | None) -> str:
    return "—" if p is None else f"{p:.2g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def records(rows: list[dict], columns: Sequence[str] | None = None, digits: dict[str, int] | None = None) -> str:
    """A list of flat records as a table: the given columns, or every column that holds no nested value."""
    columns = columns or [k for k, v in rows[0].items() if not isinstance(v, (dict, list))]
    digits = digits or {}
    return table(columns, [[num(r.get(c), digits.get(c, 3)) for c in columns] for r in rows])


def paired(c: dict | None) -> str:
    """A paired comparison: mean difference (wins-ties-losses over seeds, Wilcoxon p)."""
    if not c:
        return ""
    losses = c["of"] - c["wins"] - c["ties"]
    return f"{c['mean_diff']:+.4f} ({c['wins']}–{c['ties']}–{losses}, p={p_value(c['wilcoxon_p'])})"


def model(cfg: dict) -> str:
    """A classifier config in a few words: bi-LSTM-256 x 2 layers, resnet backbone."""
    bi = "bi-" if str(cfg.get("bidirectional")).lower() == "true" else ""
    layers = int(float(cfg.get("num_layers", 1)))
    more = f" x {layers} layers" if layers > 1 else ""
    return f"{bi}{str(cfg['cell']).upper()}-{int(float(cfg['hidden_size']))}{more}, {cfg['backbone']} backbone"


# --- one renderer per kind of results file ----------------------------------------------------------------------


def trainer_loop(d: dict) -> str:
    return records(d["loop"], digits={"ratio": 3})


def trainer_packing(d: dict) -> str:
    return records(d["packing"])


def tune_overhead(d: dict) -> str:
    return records([d], ["trials", "slots", "ray_start_s", "wall_s", "ideal_s", "overhead"])


READINGS = {
    "cosine": "cosine (today)",
    "cosine_ema": "cosine, EMA weights",
    "const": "constant rate",
    "wsd": "WSD cool-down copy",
}


def learning_curves(d: dict) -> str:
    rows = []
    for r, final in d["final"].items():
        every, top = d["spearman_vs_own_final"][r], d["spearman_top_half_vs_own_final"][r]
        rows.append(
            [READINGS.get(r, r), *(num(x, 2) for x in (every[0], every[2], top[0], top[2]))]
            + [num(final["median"]), num(final["top10_mean"])]
        )
    header = [
        "reading",
        "all configs, epoch 1",
        "epoch 3",
        "better half, epoch 1",
        "epoch 3",
        "final median",
        "final top-10 mean",
    ]
    return table(header, rows)


ARMS = {
    "random": "random",
    "random_asha": "random + ASHA",
    "tpe": "TPE, no ASHA",
    "grutune_v0": "grutune before, 8 random start-up trials",
    "optuna_hb": "Optuna TPE + Hyperband",
    "grutune": "**grutune**, today's defaults",
    "grutune_s10": "grutune, 10% start-up",
    "grutune_s15": "grutune, 15% start-up",
    "grutune_s30_rf4": "grutune, ASHA reduction factor 4",
    "grutune_rung": "grutune, TPE per rung (BOHB's rule: highest rung with d + 3 readings)",
    "grutune_rung_s15": "grutune, TPE per rung, 15% start-up",
    "grutune_rung1": "grutune, TPE on the first rung's readings",
    "grutune_rung_m24": "grutune, TPE per rung with 24 readings",
    "grutune_no_liar": "grutune, no constant liar",
    "grutune_started": "grutune, start-up counted in trials started",
    "grutune_started_s20": "grutune, start-up counted in trials started, 20%",
    "grutune_s15_floor": "grutune, 15% start-up, at least the trials that run at once",
}


def budget_title(key: str) -> str:
    budget, flight = key.split("x")
    return f"{budget} trial-epochs, {flight} in flight"


def with_interval(v: float | None, ci: Sequence[float] | None, digits: int, sign: str = "") -> str:
    """A figure and its 95% bootstrap interval, where the results file has one: 82.5 (65.5–92.5)."""
    if v is None:
        return "—"
    point = f"{v:{sign}.{digits}f}" if not math.isinf(v) else num(v)
    if not ci:
        return point
    return f"{point} ({'–'.join(f'{x:{sign}.{digits}f}' if not math.isinf(x) else num(x) for x in ci)})"


def search_replay(d: dict) -> str:
    header = [
        "arm",
        "seeds",
        "median",
        "IQR",
        "vs random",
        "vs random + ASHA",
        "vs Optuna TPE + Hyperband",
        "trial-epochs to random's final median (95% interval)",
    ]
    out = []
    for key, arms in d["summary"].items():
        rows = [
            [
                f"{ARMS.get(a, a)} (`{a}`)" if a in ARMS and ARMS[a] != a else f"`{a}`",
                num(r["seeds"]),
                num(r["median"], 4),
                f"{num(r['iqr'][0], 4)}–{num(r['iqr'][1], 4)}",
                paired(r.get("vs_random")),
                paired(r.get("vs_random_asha")),
                paired(r.get("vs_optuna_hb")),
                with_interval(r.get("epochs_to_random_median"), r.get("epochs_to_random_median_ci95"), 1),
            ]
            for a, r in arms.items()
        ]
        out.append(f"**{budget_title(key)}**\n\n" + table(header, rows))
    legend = "Paired columns: the row's mean difference against that arm (wins–ties–losses over seeds, Wilcoxon p)."
    return "\n\n".join([*out, legend])


def search_replay_in_flight(d: dict) -> str:
    """Each arm at each number of trials in flight, paired by seed with the same arm one trial at a time."""
    header = [
        "arm",
        "in flight",
        "seeds",
        "median",
        "IQR",
        "against 1 at a time: mean (95% interval), median, wins–ties–losses, p",
    ]
    rows = []
    for key, arms in d["summary"].items():
        _, flight = (float(x) for x in key.split("x"))
        for arm, r in arms.items():
            c = r.get("vs_one_at_a_time")
            against = ""
            if c:
                losses = c["of"] - c["wins"] - c["ties"]
                against = (
                    f"{with_interval(c['mean_diff'], c.get('mean_diff_ci95'), 4, '+')}, {c['median_diff']:+.4f} "
                    f"({c['wins']}–{c['ties']}–{losses}, p={p_value(c['wilcoxon_p'])})"
                )
            iqr = f"{num(r['iqr'][0], 4)}–{num(r['iqr'][1], 4)}"
            name = f"{ARMS.get(arm, arm)} (`{arm}`)" if arm in ARMS else f"`{arm}`"
            rows.append([name, str(int(flight)), num(r["seeds"]), num(r["median"], 4), iqr, against])
    rows.sort(key=lambda row: (row[0], float(row[1])))
    return table(header, rows)


def search_confirm(d: dict) -> str:
    s = d["summary"]
    header = [
        "arm",
        "median (held-out)",
        "IQR",
        "selection best at 25 / 50 / 100% of the budget",
        "trial-epochs to random's final best",
    ]
    rows = []
    for arm in ("grutune", "random"):
        r = s.get(arm)
        if not r:
            continue
        at = r.get("selection_best_at_25_50_100")
        rows.append(
            [
                arm,
                num(r["median"], 4),
                f"{num(r['iqr'][0], 4)}–{num(r['iqr'][1], 4)}",
                " / ".join(num(x, 4) for x in at) if at else "",
                num(r.get("epochs_to_random_final_best"), 1),
            ]
        )
    p = s.get("paired")
    line = f"Seeds: {num(s.get('seeds'))}."
    if p:
        lo, hi = p["ci95"]
        line += (
            f" Paired, grutune − random: mean {p['mean_diff']:+.4f} (95% interval {lo:+.4f} to {hi:+.4f}),"
            f" {p['wins']}–{p['ties']}–{p['of'] - p['wins'] - p['ties']} (wins–ties–losses), Wilcoxon p:"
            f" {p_value(p['wilcoxon_p'])}."
        )
    return table(header, rows) + "\n\n" + line


PEERS = (("random", "random search"), ("random_asha", "random + ASHA"), ("optuna_hb", "Optuna TPE + Hyperband"))


def points(c: dict | None, p_key: str = "wilcoxon_p_holm") -> str:
    """A paired comparison in accuracy points: mean (95% interval), wins–ties–losses, a Holm-corrected p."""
    if not c:
        return "—"
    lo, hi = (100 * x for x in c["mean_diff_ci95"])
    return (
        f"{100 * c['mean_diff']:+.2f} ({lo:+.2f} to {hi:+.2f}), {c['wins']}–{c['ties']}–{c['losses']}, "
        f"p={p_value(c[p_key])}"
    )


CANDIDATES = {
    "grutune_gp": "Optuna's GPSampler, fitted on one rung's readings (`grutune_gp`)",
    "random_top_k": "one epoch for every random config, then the top K to the end (`random_top_k`)",
    "grutune_promote": "promotion-based ASHA: trials pause at a rung and are promoted later (`grutune_promote`)",
    "grutune_pasha": "PASHA (`grutune_pasha`)",
}


def search_replay_candidates(d: dict) -> str:
    """Each candidate at each in-flight level against today's grutune and against random + ASHA, and whether it
    meets the bar declared before the run for a new default."""
    v = d["verdict"]
    key = "wilcoxon_p_holm_screen"
    rows = [
        [
            CANDIDATES.get(arm, arm) if i == 0 else "",
            level,
            points(c["vs_grutune"].get(level), key),
            points(c["vs_random_asha"].get(level), key),
            {True: "yes", False: "no", None: "not judged: seeds missing"}[v["meets_bar"].get(arm)] if i == 0 else "",
        ]
        for arm, c in v["comparisons"].items()
        for i, level in enumerate(str(x) for x in v["declared"]["in_flight"])
    ]
    header = ["candidate", "in flight", "against today's grutune", "against random + ASHA", "meets the bar"]
    bar = v["declared"]
    return (
        table(header, rows)
        + "\n\nAccuracy points, paired by seed: mean (95% interval), wins–ties–losses, Wilcoxon p Holm-corrected over "
        + f"the {len(v['comparisons'])} candidates x {len(bar['in_flight'])} levels, for each peer. The "
        + f"bar, declared before the run: better than today's grutune with Holm p < {bar['alpha']} at some level, and "
        + f"worse at none (no negative mean with raw p < {bar['harm']})."
    )


def search_replay_faithful(d: dict) -> str:
    """grutune against each peer at every budget and in-flight level (the levels reached, not only the asked)."""
    header = [
        "budget, in flight (reached: max, mean)",
        "grutune median",
        *(f"grutune − {name}" for _, name in PEERS),
        "grutune − itself one at a time",
        "trial-epochs to random's final median: grutune / random + ASHA",
    ]
    rows = []
    for key, arms in d["summary"].items():
        budget, flight = key.split("x")
        g = arms["grutune"]
        reach = g["in_flight_reached"]
        asha = arms.get("random_asha", {})
        rows.append(
            [
                f"{budget}, {flight} ({reach['max_median']:.0f}, {reach['mean_median']:.1f})",
                num(g["median"], 4),
                *(points(g.get(f"vs_{arm}")) for arm, _ in PEERS),
                points(g.get("vs_one_at_a_time")),
                f"{with_interval(g.get('epochs_to_random_median'), g.get('epochs_to_random_median_ci95'), 1)} / "
                f"{with_interval(asha.get('epochs_to_random_median'), asha.get('epochs_to_random_median_ci95'), 1)}",
            ]
        )
    legend = (
        "Differences in accuracy points of the noise-free final accuracy of each sweep's pick, paired by seed: mean "
        "(95% bootstrap interval), wins–ties–losses, Wilcoxon signed-rank p, Holm-corrected over the comparisons in "
        "the same setting. In flight: the levels the budget rule let the sweep reach (medians over seeds)."
    )
    return table(header, rows) + "\n\n" + legend


def search_confirm_three_arms(d: dict) -> str:
    """Random, random + ASHA and grutune on real training: the picks' test accuracy, and the declared comparisons."""
    s = d["summary"]
    names = {"random": "random search", "random_asha": "random + ASHA", "grutune": "grutune"}
    names["random_top_k"] = "random, one-epoch screen (top_k)"
    header = ["arm", "seeds", "test accuracy: median (IQR)", "trial-epochs spent: median (range)", "trials (median)"]
    arms = {arm: r for arm, r in s.items() if arm in names}
    reached = any("in_flight_reached" in r for r in arms.values())
    if reached:
        header.append("in flight reached: most, mean (medians)")
    rows = [
        [
            names[arm],
            num(r["seeds"]),
            f"{num(r['test_median'], 4)} ({num(r['test_iqr'][0], 4)}–{num(r['test_iqr'][1], 4)})",
            f"{num(r['trial_epochs_median'], 1)} ({r['trial_epochs_range'][0]}–{r['trial_epochs_range'][1]})",
            num(r["trials_median"], 1),
            *(
                [f"{num(r['in_flight_reached']['max_median'], 1)}, {num(r['in_flight_reached']['mean_median'], 1)}"]
                if "in_flight_reached" in r
                else ["—"]
                if reached
                else []
            ),
        ]
        for arm, r in arms.items()
    ]
    out = table(header, rows)
    comparisons = s.get("comparisons") or {}
    first, last = (int(x) for x in d["declared"]["seeds"].split("-"))
    done, declared = s.get("seeds_with_every_arm", 0), last - first + 1
    if comparisons and done < declared:
        out += (
            f"\n\n*{done} seeds of {declared} done. The paired comparisons, and the test declared in the script, "
            "come when all are in; p-values on part of the seeds are not that test.*"
        )
    elif comparisons:
        lines = [
            [f"{names.get(a, a)} − {names.get(b, b)}", points(c)]
            for key, c in comparisons.items()
            for a, b in [key.split("_vs_") if "_vs_" in key else (key, "")]
        ]
        out += "\n\n" + table(["paired by seed (test accuracy, points)", "mean (95% interval), W–T–L, Holm p"], lines)
    else:
        out += f"\n\n*{done} seeds of {declared} done; the paired comparisons come at the end.*"
    return out


def search_efficiency(d: dict) -> str:
    """Per method: best validation accuracy over seeds, and per seed the trial-epochs to random search's final best."""
    final = {r["seed"]: r["curve"][-1] for r in d["runs"]["random"]}
    header = [
        "method",
        "best_val_median",
        "best_val_min",
        "best_val_max",
        "seeds_reaching_random_best",
        "trial_epochs_to_reach",
    ]
    rows = []
    for s in d["summary"]:
        runs = d["runs"][s["method"]]
        reach = [next((i + 1 for i, v in enumerate(r["curve"]) if v >= final[r["seed"]]), None) for r in runs]
        rows.append(
            [
                s["method"],
                num(s["best_val_median"]),
                num(s["best_val_min"]),
                num(s["best_val_max"]),
                f"{sum(x is not None for x in reach)}/{len(reach)}",
                ", ".join("-" if x is None else str(x) for x in reach),
            ]
        )
    return table(header, rows)


def final_accuracy(d: dict) -> str:
    return records(d["summary"])


def laptop_run_pareto(d: dict) -> str:
    header = ["trial", "model", "val_accuracy", "params", "latency_ms (trial)"]
    picked = d.get("picked", {}).get("trial_id")
    rows = [
        [
            r["trial"],
            model(r) + (" (picked)" if r["trial_id"] == picked else ""),
            num(float(r["best_val_accuracy"]), 4),
            f"{int(float(r['params'])):,}",
            num(float(r["latency_ms"]), 2),
        ]
        for r in d["front"]
    ]
    return table(header, rows)


def cluster_load(d: dict) -> str:
    columns = [
        "slots",
        "peak_trials",
        "trials",
        "all_epochs",
        "lost_mid_trial",
        "resumed_from_checkpoint",
        "from_scratch",
        "study_finished",
        "trials_csv_rows",
        "nodes_killed",
        "wall_s",
        "trial_rss_mib_median",
    ]
    return records([d], columns)


def gan_quality(d: dict) -> str:
    return records(d["runs"], ["run", "IS", "FID", "IS / real", "FID / real", "best epoch", "minutes"])


def gan_quality_variants(d: dict) -> str:
    rows = [{"epochs": 3, **r, "images/s": r["history"][-1].get("images_per_s")} for r in d["runs"]]
    return records(
        rows, ["run", "epochs", "IS", "FID", "IS / real", "best epoch", "images/s", "minutes"], {"images/s": 0}
    )


def gan_quality_full(d: dict) -> str:
    if not d.get("finished"):
        h = d.get("history") or [{}]
        best = min((m for m in h if m.get("val_fid") is not None), key=lambda m: m["val_fid"], default={})
        return (
            f"Not finished: {d.get('epochs_done', 0)} of {d['budget']['epochs']} epochs so far; best validation FID "
            f"{num(best.get('val_fid'))} at epoch {best.get('epoch', '—')}."
        )
    columns = ["epochs", "learning rates", "R1 gamma", "IS", "real IS", "IS / real", "FID", "real FID"]
    return records([gan_full_row(d)], [*columns, "precision", "recall", "best epoch"])


def gan_full_row(d: dict) -> dict:
    """A finished gan_quality --budget full file as a table row: its scores, budget and recipe."""
    return {
        **d,
        "epochs": d["budget"]["epochs"],
        "learning rates": d["recipe"].get("lr_schedule", "constant"),
        "R1 gamma": d["recipe"].get("r1_gamma"),
        "precision": d["metrics"].get("precision"),
        "recall": d["metrics"].get("recall"),
    }


# The full-budget runs behind params.yaml's GAN recipe, in the order they were measured: (results stem, what it
# changed against the recipe as it was). Each row is its own results file, made by the command listed under the table.
GAN_FULL_STEPS = [
    ("gan_quality_full_constant_30", "the recipe as it was"),
    ("gan_quality_full_cosine_8", "cosine learning rates"),
    ("gan_quality_full", "cosine learning rates (the default until d0bc918)"),
    ("gan_quality_full_r1_01_8", "R1 gamma 0.1"),
    ("gan_quality_full_cosine_8_r1_01", "R1 gamma 0.1, cosine learning rates"),
    ("gan_quality_full_r1_01_8_seed1", "R1 gamma 0.1, seed 1"),
    ("gan_quality_full_kaiming_seed0", "cosine learning rates, variance-preserving init (the default since d0bc918)"),
    ("gan_quality_full_vp_r1_03_seed0", "cosine learning rates, variance-preserving init, R1 gamma 0.3"),
    ("gan_quality_full_vp_r1_01_seed0", "cosine learning rates, variance-preserving init, R1 gamma 0.1"),
    ("gan_quality_full_vp_r1_03_seed1", "cosine learning rates, variance-preserving init, R1 gamma 0.3, seed 1"),
    ("gan_quality_full_vp_r1_03_e24_seed0", "cosine learning rates, variance-preserving init, R1 gamma 0.3, 24 epochs"),
    (
        "gan_quality_full_vp_r1_03_e24_seed1",
        "cosine learning rates, variance-preserving init, R1 gamma 0.3, 24 epochs, seed 1",
    ),
]


def listed_runs(runs: Sequence[tuple[str, str]], *, finished: bool) -> Iterator[tuple[str, str, dict]]:
    """(stem, label, results) of each listed run whose results file exists (with `finished`, only finished ones)."""
    for stem, label in runs:
        path = RESULTS / f"{stem}.json"
        if path.exists():
            d = json.loads(path.read_text())
            if d.get("finished") or not finished:
                yield stem, label, d


def run_line(what: str, stem: str, d: dict) -> str:
    """One run's line under a table of several runs: its command, machine, note and results file."""
    note = f"; {d['note']}" if d.get("note") else ""
    return f"- {what}: `{command(stem, d)}`; {machine(d['machine'])}{note}. Results: `benchmarks/results/{stem}.json`."


def gan_quality_full_steps(_: dict) -> str:
    rows, lines = [], []
    for stem, change, d in listed_runs(GAN_FULL_STEPS, finished=True):
        rows.append({**gan_full_row(d), "run": change})
        lines.append(run_line(f"{change}, {rows[-1]['epochs']} epochs", stem, d))
    columns = ["run", "epochs", "learning rates", "R1 gamma", "IS", "IS / real", "FID", "precision", "recall"]
    return records(rows, [*columns, "best epoch"]) + "\n\n" + "\n".join(lines)


gan_quality_full_steps.own_footer = True  # each row is its own file: the commands and machines are listed per row


# Runs of the default recipe (and two changes to it) over seeds, finished or not: (results stem, what it is).
GAN_FULL_SEEDS = [
    ("gan_quality_full", "default, seed 0"),
    ("gan_quality_full_seed1", "default, seed 1"),
    ("gan_quality_full_seed3", "default, seed 3"),
    ("gan_quality_full_gpu_seed1", "default, seed 1"),
    ("gan_quality_full_gpu_seed2", "default, seed 2"),
    ("gan_quality_full_gpu_seed3", "default, seed 3"),
    ("gan_quality_full_gpu_seed4", "default, seed 4"),
    ("gan_quality_full_gpu_r1_03_seed1", "R1 gamma 0.3, seed 1"),
    ("gan_quality_full_gpu_r1_03_seed2", "R1 gamma 0.3, seed 2"),
    ("gan_quality_full_gpu_cosine_24_seed1", "24 epochs, seed 1"),
    ("gan_quality_full_gpu_cosine_24_seed2", "24 epochs, seed 2"),
    ("gan_quality_full_kaiming_seed0", "variance-preserving init, seed 0"),
    ("gan_quality_full_vp_r1_03_seed0", "variance-preserving init, R1 gamma 0.3, seed 0"),
    ("gan_quality_full_vp_r1_01_seed0", "variance-preserving init, R1 gamma 0.1, seed 0"),
    ("gan_quality_full_vp_seed1", "variance-preserving init, seed 1"),
    ("gan_quality_full_vp_r1_03_seed1", "variance-preserving init, R1 gamma 0.3, seed 1"),
    ("gan_quality_full_vp_r1_03_e24_seed0", "variance-preserving init, R1 gamma 0.3, 24 epochs, seed 0"),
    ("gan_quality_full_vp_r1_03_e24_seed1", "variance-preserving init, R1 gamma 0.3, 24 epochs, seed 1"),
    ("gan_quality_full_vp_r1_03_e24_seed2", "variance-preserving init, R1 gamma 0.3, 24 epochs, seed 2"),
]
SEED_EPOCHS = (1, 2, 3, 4, 5, 6, 7, 10, 13, 16)


def gan_quality_full_seeds(_: dict) -> str:
    """The validation FID after each of the first epochs, per seed: how far apart seeds start and how they go on."""
    rows, lines = [], []
    for stem, label, d in listed_runs(GAN_FULL_SEEDS, finished=False):
        fid = {m["epoch"]: m.get("val_fid") for m in d.get("history", [])}
        device = d["device"] if "NVIDIA" in d.get("device", "") else "CPU"
        rows.append(
            {
                "run": label,
                "device": device,
                "epochs": f"{len(fid)} of {d['budget']['epochs']}",
                "diversity after 1": (d.get("history") or [{}])[0].get("diversity"),
                **{str(e): fid.get(e) for e in SEED_EPOCHS},
                "test IS / real": d.get("IS / real"),
            }
        )
        lines.append(run_line(f"{label} ({device})", stem, d))
    columns = ["run", "device", "epochs", "diversity after 1", *map(str, SEED_EPOCHS), "test IS / real"]
    return records(rows, columns, dict.fromkeys(map(str, SEED_EPOCHS), 1)) + "\n\n" + "\n".join(lines)


gan_quality_full_seeds.own_footer = True


def gan_quality_conditional(d: dict) -> str:
    """Class-conditional against unconditional at the full budget: each arm's median (range) over its finished
    seeds, which arm ships as the default (params.yaml's gan_search.space.conditional), and the paired differences
    of the seeds both arms finished."""
    s, runs = d.get("summary", {}), d.get("runs", [])
    if not runs:
        return "*Running: no seed finished yet.*"
    scores = ("IS / real", "FID", "precision", "recall", "class consistency")
    conditional = yaml.safe_load((ROOT / "params.yaml").read_text())["gan_search"]["space"].get("conditional")
    shipped = "conditional" if conditional is True else "unconditional"  # what ships now, not at the run
    rows = []
    for arm, by in s.get("arms", {}).items():
        seeds = sorted(r["seed"] for r in runs if r["arm"] == arm and "FID" in r)
        collapsed = sorted(r["seed"] for r in runs if r["arm"] == arm and "collapsed" in r)
        note = f" (collapsed: {', '.join(map(str, collapsed))})" if collapsed else ""
        row = {
            "arm": arm + (" (the default)" if arm == shipped else ""),
            "seeds": ", ".join(map(str, seeds)) + note,
        }
        for k in scores:
            v = by.get(k)
            row[k] = (
                f"{v['median']:.3f} ({v['min']:.3f}-{v['max']:.3f})" if v and v["n"] > 1 else num(v and v["median"])
            )
        rows.append(row)
    out = records(rows, ["arm", "seeds", *scores])
    paired = s.get("paired_difference_conditional_minus_unconditional") or {}
    if paired:
        parts = [
            f"{k} {v['mean']:+.3f} (range {v['min']:+.3f} to {v['max']:+.3f})" for k, v in paired.items() if v.get("n")
        ]
        seeds = ", ".join(map(str, s.get("paired_seeds", [])))
        out += f"\n\nConditional minus unconditional, paired by seed ({seeds}): " + "; ".join(parts) + "."
    n = {a: sum(1 for r in runs if r["arm"] == a) for a in ("unconditional", "conditional")}
    if v := s.get("verdict"):
        why = (
            f"; conditional better on: {', '.join(v['conditional_better_on']) or 'neither'}"
            if "conditional_better_on" in v
            else ""
        )
        out += f"\n\n**Default by the rule declared before the runs: {v['default']}** ({v['rule']}{why})."
    elif min(n.values()) < 3:
        out += (
            f"\n\n*Running: {n['unconditional']} of 3 unconditional and {n['conditional']} of 3 conditional seeds "
            "finished; the default is chosen at the median of 3 seeds each.*"
        )
    return out


def gan_start(d: dict) -> str:
    s = d["summary"]
    arms = [a for a in s if isinstance(s[a], dict) and "collapsed" in s[a]]
    rows = [
        {
            "arm": a,
            "collapsed": f"{s[a]['collapsed']} of {s['paired_seeds']}",
            "diversity at init (median)": s[a]["diversity_before_median"],
            "after (median)": s[a]["diversity_after_median"],
            "after (IQR)": "–".join(num(q) for q in s[a]["diversity_after_iqr"] or []),
        }
        for a in arms
    ]
    text = records(rows, ["arm", "collapsed", "diversity at init (median)", "after (median)", "after (IQR)"])
    for k, c in s.items():
        if k.endswith(" vs torch default") and c:
            text += f"\n\nPaired over seeds, {k}: diversity after {paired({'ties': 0, **c})}."
    one = s.get("collapsed in one arm only")
    if one:
        arms_only = ", ".join(f"{k} {v}" for k, v in one.items() if k != "exact_p")
        text += f" Seeds where only one arm collapsed: {arms_only} (exact test p={p_value(one['exact_p'])})."
    steps = {r["steps"] for r in d["runs"]}
    return text + f"\n\nAfter {', '.join(map(str, sorted(steps)))} steps; collapsed: below {s['min_diversity']}."


def laptop_run(d: dict) -> str:
    columns = [
        "dataset",
        "wall_min",
        "test_accuracy",
        "search_trials",
        "search_wall_min",
        "gan_fid",
        "gan_real_fid",
        "gan_is",
        "gan_real_is",
        *[
            k
            for k in ("gan_is_over_real", "gan_precision", "gan_real_precision", "gan_recall", "gan_real_recall")
            if k in d
        ],
        "meets_targets",
    ]
    row = dict(d)
    best = yaml.safe_load(d["best"]) if d.get("best") else None
    if best:
        row["picked"] = model(best["config"])
        row["picked_val_accuracy"] = best.get("val_accuracy")
        columns += ["picked", "picked_val_accuracy"]
    text = records([row], columns)
    if d.get("stage_min"):
        text += "\n\nMinutes by stage: " + ", ".join(f"{k} {v:.1f}" for k, v in d["stage_min"].items()) + "."
    if d.get("sample"):  # the README's sampling command, run in the clone after the timed command
        shell = "\n".join(f"$ {r['command']}\n{r['output'].rstrip()}" for r in d["sample"])
        text += f"\n\nThen the sampling command, as the README gives it:\n\n```console\n{shell}\n```"
        drawn = [r["png"] for r in d["sample"] if r.get("png")]
        if drawn:
            text += f"\n\nWhat it drew: `{drawn[0]}`."
    return text


RENDERERS: dict[tuple[str, str | None], Callable[[dict], str]] = {
    ("trainer_throughput", "loop"): trainer_loop,
    ("trainer_throughput", "packing"): trainer_packing,
    ("tune_overhead", None): tune_overhead,
    ("learning_curves", None): learning_curves,
    ("search_replay", None): search_replay,
    ("search_replay_explore", None): search_replay,
    ("search_replay_explore2", None): search_replay,
    ("search_replay_explore3", None): search_replay,
    ("search_replay_startup", None): search_replay,
    ("search_replay_in_flight", None): search_replay_in_flight,
    ("search_replay_in_flight_explore", None): search_replay_in_flight,
    ("search_confirm", None): search_confirm,
    ("search_replay_faithful", None): search_replay_faithful,
    ("search_replay_candidates", None): search_replay_candidates,
    ("search_confirm_three_arms", None): search_confirm_three_arms,
    ("search_confirm_top_k", None): search_confirm_three_arms,
    ("search_confirm_in_flight_32", None): search_confirm_three_arms,
    ("search_efficiency_4x4000", None): search_efficiency,
    ("search_efficiency_4x4000_in_flight", None): search_efficiency,
    ("final_accuracy", None): final_accuracy,
    ("laptop_run_pareto", None): laptop_run_pareto,
    ("cluster_load", None): cluster_load,
    ("gan_quality_laptop", None): gan_quality,
    ("gan_quality_long", None): gan_quality,
    ("gan_quality_laptop_variants", None): gan_quality_variants,
    ("gan_quality_full", None): gan_quality_full,
    ("gan_quality_full", "steps"): gan_quality_full_steps,
    ("gan_quality_full", "seeds"): gan_quality_full_seeds,
    ("gan_quality_conditional", None): gan_quality_conditional,
    ("gan_start", None): gan_start,
    ("laptop_run", None): laptop_run,
}


# --- where a table came from ------------------------------------------------------------------------------------


def script_for(stem: str) -> Path | None:
    """The benchmark that writes <stem>.json: the longest benchmarks/<name>.py whose name starts the stem."""
    names = [p for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")]
    names = [p for p in names if stem == p.stem or stem.startswith(p.stem + "_")]
    return max(names, key=lambda p: len(p.stem), default=None)


def command(stem: str, d: dict) -> str:
    """The command the file names, or else the first command of its benchmark's docstring."""
    cmd = d.get("command")
    if cmd:
        return f"python {cmd}" if cmd.startswith("benchmarks/") else cmd
    script = script_for(stem)
    doc = ast.get_docstring(ast.parse(script.read_text())) if script else None
    for line in (doc or "").splitlines():
        if line.startswith("    ") and "benchmarks/" in line and not line.strip().startswith("#"):
            return line.split("#", 1)[0].strip()
    return ""


def machine(m: dict) -> str:
    gpu = m.get("gpu") or "no GPU"
    parts = [m.get("cpu"), f"{m['cores']} cores" if m.get("cores") else None]
    parts += [f"{m['memory_gib']} GiB" if m.get("memory_gib") else None, gpu]
    parts += [f"torch {m['torch']}" if m.get("torch") else None, f"Python {m['python']}" if m.get("python") else None]
    when = ", ".join(x for x in (f"commit {m['git_commit']}" if m.get("git_commit") else None, m.get("date")) if x)
    return ", ".join(str(p) for p in parts if p) + (f" ({when})" if when else "")


def footer(stem: str, d: dict) -> str:
    lines = []
    cmd = command(stem, d)
    if cmd:
        lines.append(f"Command: `{cmd}`.")
    settings = {k: v for k, v in d.get("settings", {}).items() if k != "data_dir"}
    if settings:
        lines.append("Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".")
    if d.get("machine"):
        lines.append(f"Machine: {machine(d['machine'])}.")
    if d.get("note"):
        lines.append(f"Note: {d['note']}.")
    if d.get("table_machine"):
        lines.append(
            "The table it reads was trained on: " + ", ".join(f"{k} {v}" for k, v in d["table_machine"].items())
        )
    lines.append(f"Results: `benchmarks/results/{stem}.json`.")
    return "  \n".join(lines)


def render(stem: str, part: str | None) -> str:
    fn = RENDERERS.get((stem, part))
    if fn is None:
        known = ", ".join(s + (f":{p}" if p else "") for s, p in RENDERERS)
        raise SystemExit(f"gen_performance: no table named {stem}{':' + part if part else ''}; known: {known}")
    path = RESULTS / f"{stem}.json"
    if not path.exists():
        return f"*Not measured yet: `benchmarks/results/{stem}.json` does not exist.*"
    d = json.loads(path.read_text())
    try:
        body = fn(d)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise SystemExit(f"gen_performance: cannot render benchmarks/results/{stem}.json ({e!r})") from e
    return body if getattr(fn, "own_footer", False) else f"{body}\n\n{footer(stem, d)}"


def main() -> None:
    for name in PAGES:
        page = (ROOT / "docs" / name).read_text()
        page = MARKER.sub(lambda m: render(m.group(1), m.group(2)), page)
        with mkdocs_gen_files.open(name, "w") as f:
            f.write(page)
        mkdocs_gen_files.set_edit_path(name, name)


if __name__ == "__main__":  # by hand, mkdocs_gen_files.open would write the rendered tables over the pages' source
    raise SystemExit("docs/gen_performance.py renders the tables inside `mkdocs build` or `mkdocs serve`; run one")
if __name__ == "<run_path>":  # mkdocs-gen-files runs it with runpy.run_path; an import (a test) only defines
    main()
