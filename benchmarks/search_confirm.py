"""Confirmation on real Fashion-MNIST: the search stage's own code, grutune's defaults against random search.

    GRUTUNE_DATA_MIRROR=/usr/share/datasets/fashion-mnist python benchmarks/search_confirm.py
    # 20 paired seeds of 200 trial-epochs per arm; about 8 minutes a seed on 2 cores, resumable by seed

Both arms run `grutune.trials.classifier.run_classifier_sweep` (real Ray Tune, Optuna journal, grutune's searcher) on
the same data, with the same training seed (so the same data order), and a sweep bounded by the same budget of
trial-epochs (`search.max_trial_epochs`):
- `random`: random search, every trial to its last epoch (TPE's start-up never ends, no early stopping);
- `grutune`: params.yaml's search settings (TPE, ASHA), with the per-trial budget below.
TPE's random start-up draws from the same seeded generator as random search, so the two arms' first configs are
the same. Each arm picks its trial as the search stage does (the best validation accuracy any epoch reported, on
the first 3,000 validation images); the picked config is then trained again from scratch at the full per-trial
budget and scored on the other 3,000 validation images, which no trial saw: that is the arm's result.
Writes benchmarks/results/search_confirm.json after every seed: per seed both results, then the medians, the
interquartile ranges, the mean paired difference with a bootstrap 95% interval, wins and a Wilcoxon p-value, and,
from each sweep's own epochs in the order Tune received them, the selection metric's best-so-far at 25%, 50% and
100% of the budget and the trial-epochs each arm needed to reach random search's final best of the same seed. Each
seed records the commit it ran at and the load average before it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
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
from grutune.config import Params, TrialConfig  # noqa: E402
from grutune.training import Split, evaluate, fit, new_classifier  # noqa: E402
from grutune.trials.classifier import run_classifier_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
from search_efficiency import SPACE  # noqa: E402  (the CPU-sized space of the earlier benchmark)


def dataset(data_dir: Path, val_images: int):
    d = fashion_mnist(data_dir)
    select = dataclasses.replace(d, x_val=d.x_val[:val_images], y_val=d.y_val[:val_images])
    held_out = Split.of(d.x_val[val_images : 2 * val_images], d.y_val[val_images : 2 * val_images], torch.device("cpu"))
    return select, held_out


def params_for(arm: str, seed: int, args) -> Params:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(datasets=["fashion_mnist"], seed=seed)
    raw["gan"]["dataset"], raw["tracking"]["wandb"] = "fashion_mnist", False
    s = raw["search"]
    s.update(
        max_epochs=args.max_epochs,
        train_subset=args.subset,
        max_trial_epochs=args.budget,
        max_concurrent_trials=0,
        resources={"cpu": 1, "gpu": 0},
        space=SPACE,
    )
    if arm == "random":
        s.update(
            num_samples=math.ceil(args.budget / args.max_epochs), startup_trials=10**6, grace_period=args.max_epochs
        )
    else:
        s.update(num_samples=args.budget)  # the trial-epoch budget ends the sweep first
    return Params.model_validate(raw)


def rescore(config: dict, data, held_out: Split, seed: int, args) -> float:
    """Train the picked config from scratch at the full per-trial budget; its accuracy on the held-out images."""
    torch.set_num_threads(os.cpu_count() or 1)
    hp = TrialConfig(**config)
    torch.manual_seed(seed)
    model, opt = new_classifier(hp, in_shape=data.image_shape, num_classes=data.num_classes, device=torch.device("cpu"))
    train = Split.of(data.x_train, data.y_train, torch.device("cpu"))
    fit(
        model,
        opt,
        train,
        None,
        epochs=args.max_epochs,
        batch_size=hp.batch_size,
        seed=seed,
        subset=args.subset,
        schedule_epochs=args.max_epochs,
    )
    return evaluate(model, held_out)["accuracy"]


def progress(state: Path) -> list[list[float]]:
    """Best-so-far of the selection metric by trial-epochs spent, in the order Tune received the epochs (its
    result.json rows), kept where it changes."""
    events = []
    for f in state.glob("*/tune-*/*/result.json"):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            events.append((row["timestamp"], row.get("time_total_s", 0.0), row["val_accuracy"]))
    out, best = [], -1.0
    for spent, (_, _, v) in enumerate(sorted(events), 1):
        if v > best:
            best = v
            out.append([spent, round(v, 4)])
    return out


def best_at(curve: list[list[float]], epochs: float) -> float:
    return max([v for s, v in curve if s <= epochs], default=0.0)


def summary(seeds: list[dict], budget: int) -> dict:
    from scipy.stats import wilcoxon

    if not seeds:
        return {}
    g = np.array([s["grutune"]["held_out"] for s in seeds])
    r = np.array([s["random"]["held_out"] for s in seeds])
    d = g - r
    rng = np.random.default_rng(0)
    boot = [rng.choice(d, len(d)).mean() for _ in range(10_000)]
    out = {"seeds": len(seeds)}
    for name, v in (("grutune", g), ("random", r)):
        q = np.percentile(v, [25, 50, 75])
        out[name] = {"median": float(q[1]), "iqr": [float(q[0]), float(q[2])]}
        curves = [s[name]["progress"] for s in seeds if "progress" in s[name]]
        if curves:  # the selection metric (the first validation images), as the sweep saw it
            out[name]["selection_best_at_25_50_100"] = [
                float(np.median([best_at(c, f * budget) for c in curves])) for f in (0.25, 0.5, 1.0)
            ]
            # trial-epochs to reach random search's final selection best of the same seed (median over seeds)
            reach = [
                next((e for e, v in s[name]["progress"] if v >= best_at(s["random"]["progress"], math.inf)), math.inf)
                for s in seeds
                if "progress" in s[name] and "progress" in s["random"]
            ]
            out[name]["epochs_to_random_final_best"] = float(np.median(reach))
    out["paired"] = {
        "mean_diff": float(d.mean()),
        "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "wins": int((d > 0).sum()),
        "ties": int((d == 0).sum()),
        "of": len(d),
        "wilcoxon_p": float(wilcoxon(d).pvalue) if len(d) >= 5 and d.any() else None,
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=200, help="trial-epochs per arm and seed")
    ap.add_argument("--max-epochs", type=int, default=9)
    ap.add_argument("--subset", type=int, default=2000, help="training images per trial-epoch")
    ap.add_argument("--val-images", type=int, default=3000)
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--name", default="search_confirm")
    args = ap.parse_args()
    data, held_out = dataset(args.data_dir, args.val_images)
    path = RESULTS / f"{args.name}.json"
    seeds = json.loads(path.read_text())["seeds"] if path.exists() else []
    done = {s["seed"] for s in seeds}
    ray.init(address="local", include_dashboard=False, log_to_driver=False)  # this machine's own, never a cluster's
    for seed in range(args.seeds):
        if seed in done:
            continue
        row = {"seed": seed, "commit": machine()["git_commit"], "load_before": os.getloadavg()}
        for arm in ("random", "grutune"):
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as state:
                result = run_classifier_sweep(params_for(arm, seed, args), data, state_dir=Path(state))
                curve = progress(Path(state))
            best = result.best
            row[arm] = {
                "config": best["config"],
                "val_selection": best["val_accuracy"],
                "trials": result.summary["trials"],
                "trial_epochs": result.summary["epochs_run"],
                "held_out": rescore(best["config"], data, held_out, seed, args),
                "wall_s": round(time.perf_counter() - t0, 1),
                "progress": curve,
            }
            print(
                f"seed {seed} {arm}: {row[arm]['trials']} trials, {row[arm]['trial_epochs']} trial-epochs, "
                f"picked {best['val_accuracy']:.4f}, held out {row[arm]['held_out']:.4f}",
                flush=True,
            )
        seeds.append(row)
        save(
            args.name,
            {
                "settings": {k: str(v) for k, v in vars(args).items()},
                "space": SPACE,
                "load": os.getloadavg(),
                "summary": summary(seeds, args.budget),
                "seeds": seeds,
            },
        )
    print(json.dumps(summary(seeds, args.budget), indent=1))


if __name__ == "__main__":
    main()
