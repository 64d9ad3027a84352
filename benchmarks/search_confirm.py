"""Confirmation on real Fashion-MNIST: the search stage's own code, three arms at the shipped settings.

    GRUTUNE_DATA_MIRROR=/usr/share/datasets/fashion-mnist python benchmarks/search_confirm.py
    # the declared run: fresh seeds 2000-2019, 3 arms of 200 trial-epochs, every pick retrained at 3 training seeds
    # and scored on the test split; about 30 minutes a seed on 2 cores (10 hours); resumable seed by seed, arm by arm
    python benchmarks/search_confirm.py --seeds 2000 --budget 30 --name search_confirm_smoke   # a smoke run
    python benchmarks/search_confirm.py --top-k   # the replay's screen on real data: a fourth arm, declared below
    python benchmarks/search_confirm.py --in-flight 32   # 32 trials in flight on real training, declared below

Every arm runs `grutune.trials.classifier.run_classifier_sweep` (real Ray Tune, Optuna journal, grutune's searcher) on
the same data and seed (so the same data order), bounded by the same budget of trial-epochs
(`search.max_trial_epochs`), with conf/config.yaml's search section for everything it does not name:
- `random`: random search, every trial to its last epoch (TPE's start-up never ends; grace period = max_epochs);
- `random_asha`: random search under the shipped ASHA (its grace_period and reduction_factor): what a Ray Tune user
  gets from early stopping alone, so the difference to `grutune` is what TPE adds;
- `grutune`: the shipped search (TPE with its start-up share, constant liar, ASHA).
TPE's random start-up draws from the same seeded generator as random search, so the arms' first configs are the
same. Two settings are the benchmark's own, as in the earlier runs: the CPU-sized space of
benchmarks/search_efficiency.py, and trials of 9 epochs of 2,000 training images (the learning-curve table's; at the
shipped grace period 2 and reduction factor 3, ASHA decides at epochs 2 and 6 at 9 epochs as at the shipped 12).
Each arm picks its trial as the search stage does (the best validation accuracy any epoch reported, on the first
--val-images of the validation split). The arm's result is what the user gets: the picked config trained again from
scratch at 3 training seeds (`RETRAIN_SEEDS`, the same for every arm, so two arms that pick the same config tie) at
the per-trial budget, scored on the test split, which no sweep saw; the mean of the three (a config picked before, by
another arm or seed, is not retrained: on the CPU its retraining is deterministic).

The screen on real data (`--top-k`, issue 36 item 3): `random_top_k`, the candidate the replay screened and
confirmed (benchmarks/search_replay.py): random configs under `search.scheduler: top_k` at grace period 1 and
reduction factor 9 (at 200 trial-epochs of 9 epochs: 104 configs screened for one epoch, the 12 best trained to the
end), on the same seeds, paired with the three-arm run's `grutune` and `random_asha` (read from its results file).
Those seeds chose nothing about the screen. Declared before its run (`TOP_K`): the comparisons random_top_k minus
grutune (whether it may replace the default: Holm-adjusted p < 0.01 and no loss) and random_top_k minus random +
ASHA, Holm-adjusted over the two. Written to benchmarks/results/search_confirm_top_k.json.

Many trials in flight on real training (`--in-flight 32`, issue 36's aim at 32 in flight; declared in `IN_FLIGHT`
before its run): random + ASHA, grutune and random_top_k, as above but with up to 32 trials at once. Each trial asks
for cores/32 of a CPU (and trains on one torch thread), so on a 2-core CPU 32 trials share the cores side by side as
32 nodes' trials would run: results reach the searcher and ASHA in the order a cluster of 32 slots would deliver
them, only slower. Fresh seeds 2100-2119; primary comparison grutune minus random + ASHA; the family of three
(`IN_FLIGHT["comparisons"]`) Holm-adjusted; random_top_k against grutune judged by `TOP_K`'s bar. The levels
reached (the budget rule starts a trial only if the budget also pays for every running one to finish) are counted
from the trials' own result rows and reported per run. Written to benchmarks/results/search_confirm_in_flight_32.json.

Declared before the run: the seeds (`FRESH_SEEDS`, used to choose nothing), the primary comparison (`PRIMARY`:
grutune minus random + ASHA in test accuracy), and the family of three paired comparisons (`COMPARISONS`), whose
Wilcoxon p-values are reported raw and Holm-adjusted; wins-ties-losses and bootstrap intervals are counted as the
replay counts them (benchmarks/search_replay.py, `paired`). Each arm's spend (trial-epochs, trials) is reported, as
budgets end within one trial of the budget. Writes benchmarks/results/<name>.json after every arm of every seed (a
rerun skips what it holds): per run the pick, its selection score, the spend, the three test accuracies, the
selection metric's best-so-far by trial-epochs (in the order Tune received the epochs), the commit and the load
average before it; then per arm the median and interquartile range, the spend, and the comparisons. On a machine
with a GPU, trials take the shipped search.resources.gpu each and the retraining runs there too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, fashion_mnist, machine, save  # noqa: E402
from grutune.config import Params  # noqa: E402
from grutune.objectives import TrialConfig  # noqa: E402
from grutune.training import Split, evaluate, fit, new_classifier, pick_device  # noqa: E402
from grutune.trials.classifier import run_classifier_sweep  # noqa: E402
from search_efficiency import SPACE  # noqa: E402  (the CPU-sized space of the earlier benchmark)
from search_replay import holm, paired, parse_seeds  # noqa: E402  (the replay's statistics, counted one way)

ROOT = Path(__file__).resolve().parents[1]
FRESH_SEEDS = range(2000, 2020)  # fixed before the run; nothing was chosen on them (the old file used 0-19)
ARMS = ("random", "random_asha", "grutune")
RETRAIN_SEEDS = (0, 1, 2)  # training seeds of every pick's retraining
PRIMARY = {"arm": "grutune", "versus": "random_asha"}
COMPARISONS = (("grutune", "random_asha"), ("grutune", "random"), ("random_asha", "random"))
# The replay's screen on real data (--top-k), declared before its run: its arm, whom it is paired with (the three-arm
# run's file) and its family of comparisons; the first decides whether it may become the default.
TOP_K = {
    "arm": "random_top_k",
    "paired_with": "search_confirm_three_arms",
    "comparisons": (("random_top_k", "grutune"), ("random_top_k", "random_asha")),
    "bar": {"alpha": 0.01, "harm": 0.05},
}


# Many trials in flight (--in-flight), declared before its run: the level, fresh seeds (nothing was chosen on them),
# the arms, the primary comparison and the Holm family.
IN_FLIGHT = {
    "level": 32,
    "seeds": "2100-2119",
    "arms": ("random_asha", "grutune", "random_top_k"),
    "primary": {"arm": "grutune", "versus": "random_asha"},
    "comparisons": (("grutune", "random_asha"), ("random_top_k", "grutune"), ("random_top_k", "random_asha")),
}


def dataset(data_dir: Path, val_images: int):
    """The prepared data with the sweeps' validation images cut to the first `val_images`, and the test split."""
    d = fashion_mnist(data_dir)
    select = dataclasses.replace(d, x_val=d.x_val[:val_images], y_val=d.y_val[:val_images])
    return select, Split.of(d.x_test, d.y_test, pick_device())


def params_for(arm: str, seed: int, args) -> Params:
    """The sweep's params: params.yaml's composition, conf/config.yaml's search section, and what the arm and the
    benchmark name (`args.in_flight`: trials at once, None for as many as the cores hold, one a core)."""
    in_flight = getattr(args, "in_flight", None)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(datasets=["fashion_mnist"], seed=seed)
    raw["gan"]["dataset"], raw["tracking"]["wandb"] = "fashion_mnist", False
    s = raw["search"] = dict(yaml.safe_load((ROOT / "conf/config.yaml").read_text())["search"])
    s.update(
        num_samples=args.budget,  # the trial-epoch budget ends the sweep first
        max_epochs=args.max_epochs,
        train_subset=args.subset,
        max_trial_epochs=args.budget,
        max_concurrent_trials=in_flight or 0,
        resources={
            # N in flight: each trial a 1/N share of the cores (one torch thread), so N of them run at once
            "cpu": (os.cpu_count() or 1) / in_flight if in_flight else 1,
            "gpu": s["resources"]["gpu"] if torch.cuda.is_available() else 0,
        },
        space=SPACE,
        storage=None,  # the sweep's folder is the run's temporary state dir (conf/ names an environment variable)
    )
    if arm in ("random", "random_asha"):
        s["startup_trials"] = 10**6  # TPE's random start-up never ends
    if arm == "random":
        s["grace_period"] = args.max_epochs  # no early stopping
    if arm == TOP_K["arm"]:  # random configs (TPE would draw at random too: nothing finishes before the screen ends)
        s.update(startup_trials=10**6, scheduler="top_k", grace_period=1, reduction_factor=9)
    return Params.model_validate(raw)


def retrain(config: dict, data, test: Split, seed: int, args) -> float:
    """Train the picked config from scratch at the per-trial budget at training seed `seed`; its test accuracy."""
    torch.set_num_threads(os.cpu_count() or 1)
    device = pick_device()
    hp = TrialConfig(**config)
    torch.manual_seed(seed)
    model, opt = new_classifier(hp, in_shape=data.image_shape, num_classes=data.num_classes, device=device)
    fit(
        model,
        opt,
        Split.of(data.x_train, data.y_train, device),
        None,
        epochs=args.max_epochs,
        batch_size=hp.batch_size,
        seed=seed,
        subset=args.subset,
        schedule_epochs=args.max_epochs,
    )
    return evaluate(model, test)["accuracy"]


def result_rows(state: Path) -> list[list[dict]]:
    """Each trial's result.json rows (Tune's), as the sweep in `state` wrote them."""
    return [
        [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        for f in state.glob("*/tune-*/*/result.json")
    ]


def progress(trials: list[list[dict]]) -> list[list[float]]:
    """Best-so-far of the selection metric by trial-epochs spent, in the order Tune received the epochs (the
    trials' result rows), kept where it changes."""
    events = [(row["timestamp"], row.get("time_total_s", 0.0), row["val_accuracy"]) for rows in trials for row in rows]
    out, best = [], -1.0
    for spent, (_, _, v) in enumerate(sorted(events), 1):
        if v > best:
            best = v
            out.append([spent, round(v, 4)])
    return out


def in_flight_reached(trials: list[list[dict]]) -> dict:
    """How many trials ran at once, from the trials' own result rows: each runs from its first epoch's start (the
    row's timestamp less its time_this_iter_s) to its last report. Tune's timestamps are whole seconds, so each
    interval is taken at its shortest (the start a second later, where that still leaves it a length): the counts
    are lower bounds, never more than ran. The most at any moment, and the mean over the sweep's span."""
    events = []
    for rows in trials:
        if rows:
            end = rows[-1]["timestamp"]
            start = min(rows[0]["timestamp"] + 1 - rows[0].get("time_this_iter_s", 0.0), end)
            events += [(start, 1), (end, -1)]
    if not events:
        return {"max": 0, "mean": 0.0}
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same second
    running = most = 0
    area, last = 0.0, events[0][0]
    for t, step in events:
        area += running * (t - last)
        running, last = running + step, t
        most = max(most, running)
    span = events[-1][0] - events[0][0]
    return {"max": most, "mean": round(area / span, 2) if span else float(most)}


def best_at(curve: list[list[float]], epochs: float) -> float:
    return max([v for s, v in curve if s <= epochs], default=0.0)


def summary(runs: list[dict], budget: int, arms=ARMS, family=COMPARISONS, primary=PRIMARY) -> dict:
    by = {a: {r["seed"]: r for r in runs if r["arm"] == a} for a in arms}
    out: dict = {"seeds_with_every_arm": len(set.intersection(*(set(v) for v in by.values())))}
    for a in arms:
        if not by[a]:
            continue
        vals = [r["test"] for r in by[a].values()]
        spend = [r["trial_epochs"] for r in by[a].values()]
        q = np.percentile(vals, [25, 50, 75])
        row = {
            "seeds": len(vals),
            "test_median": float(q[1]),
            "test_iqr": [float(q[0]), float(q[2])],
            "test_mean": float(np.mean(vals)),
            "trial_epochs_median": statistics.median(spend),
            "trial_epochs_range": [min(spend), max(spend)],
            "trials_median": statistics.median(r["trials"] for r in by[a].values()),
            "selection_best_at_25_50_100": [
                float(np.median([best_at(r["progress"], f * budget) for r in by[a].values()])) for f in (0.25, 0.5, 1.0)
            ],
        }
        if reached := [r["in_flight"] for r in by[a].values() if "in_flight" in r]:
            row["in_flight_reached"] = {
                "max_median": statistics.median(x["max"] for x in reached),
                "mean_median": statistics.median(x["mean"] for x in reached),
            }
        if by.get("random"):  # trial-epochs to reach random search's final selection best of the same seed
            reach = [
                next((e for e, v in r["progress"] if v >= best_at(by["random"][s]["progress"], math.inf)), math.inf)
                for s, r in by[a].items()
                if s in by["random"]
            ]
            row["epochs_to_random_final_best"] = float(np.median(reach))
        out[a] = row
    comparisons = {}
    for a, b in family:
        seeds = sorted(set(by[a]) & set(by[b]))
        if len(seeds) >= 5:
            comparisons[f"{a}_vs_{b}"] = paired([by[a][s]["test"] - by[b][s]["test"] for s in seeds])
    for v, p in zip(comparisons.values(), holm([v["wilcoxon_p"] for v in comparisons.values()])):
        v["wilcoxon_p_holm"] = p  # over the declared family (`COMPARISONS`, or `TOP_K`'s)
    out["comparisons"] = comparisons
    out["primary"] = {
        **primary,
        "measure": "test accuracy of the pick, mean of 3 retrainings",
        "result": comparisons.get(f"{primary['arm']}_vs_{primary['versus']}"),
    }
    return out


def top_k_summary(runs: list[dict], budget: int) -> dict:
    """The --top-k file's summary: its arm paired with the three-arm run's arms of the same seeds, and whether it
    clears `TOP_K`'s bar against grutune (Holm p < alpha, and no loss: no negative mean with raw p < harm)."""
    three = RESULTS / f"{TOP_K['paired_with']}.json"
    others = [r for r in json.loads(three.read_text())["runs"] if r["arm"] != TOP_K["arm"]] if three.exists() else []
    arms = ("random", "random_asha", "grutune", TOP_K["arm"])
    first = TOP_K["comparisons"][0]
    out = summary([*runs, *others], budget, arms, TOP_K["comparisons"], {"arm": first[0], "versus": first[1]})
    return with_bar(out)


def with_bar(out: dict) -> dict:
    """`out` with whether random_top_k clears `TOP_K`'s bar against grutune (Holm p < alpha, a positive mean, and no
    loss: no negative mean with raw p < harm), once that comparison is in."""
    c = out["comparisons"].get("random_top_k_vs_grutune")
    if c:
        bar = TOP_K["bar"]
        loses = c["mean_diff"] < 0 and c["wilcoxon_p"] < bar["harm"]
        out["clears_bar"] = bool(c["wilcoxon_p_holm"] < bar["alpha"] and c["mean_diff"] > 0 and not loses)
    return out


def in_flight_summary(runs: list[dict], budget: int) -> dict:
    """The --in-flight file's summary: its three arms, `IN_FLIGHT`'s family and primary, and `TOP_K`'s bar."""
    return with_bar(summary(runs, budget, IN_FLIGHT["arms"], IN_FLIGHT["comparisons"], IN_FLIGHT["primary"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--seeds", help=f"e.g. 2000-2019 (the default; with --in-flight {IN_FLIGHT['level']}: {IN_FLIGHT['seeds']})"
    )
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated, of %(default)s")
    ap.add_argument("--budget", type=int, default=200, help="trial-epochs per arm and seed")
    ap.add_argument("--max-epochs", type=int, default=9)
    ap.add_argument("--subset", type=int, default=2000, help="training images per trial-epoch")
    ap.add_argument("--val-images", type=int, default=3000, help="validation images the sweeps select on")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument(
        "--name", default=None, help="the results' name (search_confirm_three_arms; with --top-k search_confirm_top_k)"
    )
    ap.add_argument("--top-k", action="store_true", help="the replay's screen on real data (TOP_K), its own file")
    ap.add_argument(
        "--in-flight",
        type=int,
        metavar="N",
        help=f"N trials at once, each on a 1/N share of the cores: {IN_FLIGHT['level']} is the declared run "
        "(IN_FLIGHT: its arms, seeds and comparisons), its own file",
    )
    args = ap.parse_args()
    if args.in_flight is not None and args.in_flight < 1:
        ap.error(f"--in-flight must be at least 1, got {args.in_flight}")
    if args.in_flight and args.top_k:
        ap.error("--in-flight runs the screen as one of its arms: leave out --top-k")
    if args.in_flight:
        arms = list(IN_FLIGHT["arms"]) if args.arms == ",".join(ARMS) else args.arms.split(",")
        valid = IN_FLIGHT["arms"]
        args.name = args.name or f"search_confirm_in_flight_{args.in_flight}"
        args.seeds = args.seeds or IN_FLIGHT["seeds"]
        summarise, declared = (
            in_flight_summary,
            {
                "in_flight": args.in_flight,
                **{k: IN_FLIGHT[k] for k in ("seeds", "primary", "comparisons")},
                "top_k_bar": TOP_K["bar"],
            },
        )
    else:
        arms = [TOP_K["arm"]] if args.top_k else args.arms.split(",")
        valid = (*ARMS, TOP_K["arm"]) if args.top_k else ARMS
        args.name = args.name or ("search_confirm_top_k" if args.top_k else "search_confirm_three_arms")
        args.seeds = args.seeds or f"{FRESH_SEEDS[0]}-{FRESH_SEEDS[-1]}"
        summarise = top_k_summary if args.top_k else summary
        declared = {
            "seeds": f"{FRESH_SEEDS[0]}-{FRESH_SEEDS[-1]}",
            **({"top_k": TOP_K} if args.top_k else {"primary": PRIMARY, "comparisons": COMPARISONS}),
        }
    if unknown := [a for a in arms if a not in valid]:
        sys.exit(f"error: unknown arm(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        ap.error(str(e))
    data, test = dataset(args.data_dir, args.val_images)
    path = RESULTS / f"{args.name}.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    done = {(r["seed"], r["arm"]) for r in runs}
    ray.init(address="local", include_dashboard=False, log_to_driver=False)  # this machine's own, never a cluster's
    for seed in seeds:
        for arm in arms:
            if (seed, arm) in done:
                continue
            row = {"seed": seed, "arm": arm, "commit": machine()["git_commit"], "load_before": os.getloadavg()}
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as state:
                result = run_classifier_sweep(params_for(arm, seed, args), data, state_dir=Path(state))
                trials = result_rows(Path(state))  # read once, for both
                curve = progress(trials)
                row["in_flight"] = in_flight_reached(trials)
            best = result.best
            sweep_s = time.perf_counter() - t0
            key = json.dumps(best["config"], sort_keys=True)
            known = next((r["test_per_seed"] for r in runs if json.dumps(r["config"], sort_keys=True) == key), None)
            tests = known or [retrain(best["config"], data, test, s, args) for s in RETRAIN_SEEDS]
            row.update(
                config=best["config"],
                val_selection=best["val_accuracy"],
                trials=result.summary["trials"],
                trial_epochs=result.summary["epochs_run"],
                test_per_seed=tests,
                test=float(np.mean(tests)),
                sweep_s=round(sweep_s, 1),
                retrain_s=round(time.perf_counter() - t0 - sweep_s, 1),  # 0: a pick retrained before, reused
                progress=curve,
            )
            runs.append(row)
            print(
                f"seed {seed} {arm}: {row['trials']} trials, {row['trial_epochs']} trial-epochs, picked "
                f"{row['val_selection']:.4f}, test {row['test']:.4f} ({', '.join(f'{t:.4f}' for t in tests)}), "
                f"{row['sweep_s']:.0f} + {row['retrain_s']:.0f} s; in flight at most {row['in_flight']['max']}, "
                f"{row['in_flight']['mean']:.1f} on average",
                flush=True,
            )
            save(
                args.name,
                {
                    "settings": {k: str(v) for k, v in vars(args).items()},
                    "declared": {**declared, "retrain_seeds": RETRAIN_SEEDS},
                    "space": SPACE,
                    "summary": summarise(runs, args.budget),
                    "runs": runs,
                },
            )
    print(json.dumps(summarise(runs, args.budget), indent=1))


if __name__ == "__main__":
    main()
