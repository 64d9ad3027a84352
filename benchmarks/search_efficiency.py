"""Search efficiency on real Fashion-MNIST: grutune (TPE + ASHA) against random search and Optuna alone.

    GRUTUNE_DATA_MIRROR=/usr/share/datasets/fashion-mnist python benchmarks/search_efficiency.py
    # 5 seeds, about 25 minutes on 2 cores; Debian's dataset-fashion-mnist package holds the data
    # the same compute cut into finer epochs, so ASHA has more rungs: --max-epochs 12 --subset 1333 --budget 180
    # grutune with 1, 2 (one per core) and 8 trials in flight:
    #   --methods random,grutune_1,grutune,grutune_8 --name in_flight

Every method gets the same budget of trial-epochs over the same model space, trains with grutune's own loop on the
same per-epoch subset, and is scored on the same validation split:
- grutune: the search stage's real code (Tune + Optuna TPE with the constant liar + ASHA), one CPU per trial;
- random: Tune's default search (random sampling) with no early stopping, through the same trainable;
- optuna: Optuna alone in one process, TPE with Optuna's Hyperband pruner, calling grutune's `fit`.
For each, the best validation accuracy after the budget (median and range over seeds), and the trial-epochs it
needed to reach random search's final best on the same seed.
Writes benchmarks/results/search_efficiency_<max epochs>x<subset>[_<name>].json, after every seed.
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

import optuna
import ray
import torch
import yaml
from ray import tune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, fashion_mnist, save, table  # noqa: E402
from grutune.config import Params  # noqa: E402
from grutune.objectives import TrialConfig  # noqa: E402
from grutune.space import tune_param_space  # noqa: E402
from grutune.training import Split, fit, new_classifier  # noqa: E402
from grutune.trials.classifier import ClassifierTrialSettings, run_classifier_sweep, run_trial  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACE = {  # the classifier space, with the backbones and sizes a 2-core CPU can afford many trials of
    "cell": {"choice": ["gru", "lstm"]},
    "hidden_size": {"choice": [32, 64, 128]},
    "num_layers": {"int": [1, 2]},
    "bidirectional": {"choice": [False, True]},
    "dropout": {"uniform": [0.0, 0.5]},
    "backbone": {"choice": ["none", "conv"]},
    "lr": {"loguniform": [1e-4, 3e-2]},
    "weight_decay": {"loguniform": [1e-5, 1e-1]},
    "batch_size": {"choice": [64, 128, 256]},
}


def dataset(data_dir: Path, val_images: int):
    d = fashion_mnist(data_dir)
    return dataclasses.replace(d, x_val=d.x_val[:val_images], y_val=d.y_val[:val_images])


def params_for(seed: int, args, num_samples: int, in_flight: int | None = None) -> Params:
    """The benchmark's params. `in_flight`: trials at once (None: one per core, the default); more than the cores
    gives each trial a share of a CPU (one thread), which changes the wall time, not what a trial-epoch learns."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(datasets=["fashion_mnist"], seed=seed)
    raw["gan"]["dataset"], raw["tracking"]["wandb"] = "fashion_mnist", False
    cores = os.cpu_count() or 1
    cpu = 1 if in_flight is None or in_flight <= cores else cores / in_flight
    raw["search"].update(
        num_samples=num_samples,
        max_epochs=args.max_epochs,
        grace_period=1,
        reduction_factor=3,
        startup_trials=args.startup_trials,
        train_subset=args.subset,
        max_concurrent_trials=in_flight or 0,
        resources={"cpu": cpu, "gpu": 0},
        space=SPACE,
    )
    return Params.model_validate(raw)


def events_of(state: Path) -> list[tuple[float, float]]:
    """Every trial-epoch of a Tune run as (finish time, val accuracy), in the order they happened."""
    out = []
    for f in state.glob("*/tune-*/*/result.json"):
        out += [
            (r["timestamp"], r["val_accuracy"])  # Tune's timestamps are whole seconds: ties keep file order
            for r in map(json.loads, f.read_text().splitlines())
            if "val_accuracy" in r and not r.get("diverged")
        ]
    return sorted(out, key=lambda e: e[0])


def asha_epochs_per_trial(grace: int, rf: int, max_t: int) -> float:
    """The mean epochs a trial runs under synchronous successive halving: every trial reaches the first rung, a
    1/rf share goes on to the next, and so on up to max_t. (Async ASHA promotes a little more early on.)"""
    rungs = [grace * rf**k for k in range(64) if grace * rf**k < max_t] + [max_t]
    return rungs[0] + sum((b - a) / rf ** (k + 1) for k, (a, b) in enumerate(zip(rungs, rungs[1:])))


def run_grutune(data, seed: int, args, in_flight: int | None = None) -> list[float]:
    # Enough trials to spend the budget (10% over the synchronous estimate), not so many that most are cut off
    trials = math.ceil(1.1 * args.budget / asha_epochs_per_trial(1, 3, args.max_epochs))
    with tempfile.TemporaryDirectory() as state:
        run_classifier_sweep(params_for(seed, args, trials, in_flight), data, state_dir=Path(state))
        return [v for _, v in events_of(Path(state))]


def run_random(data, seed: int, args) -> list[float]:
    p = params_for(seed, args, math.ceil(args.budget / args.max_epochs))
    settings = ClassifierTrialSettings(
        in_shape=data.image_shape,
        num_classes=data.num_classes,
        max_epochs=args.max_epochs,
        train_subset=args.subset,
        seed=seed,
    )
    arrays = {k: getattr(data, k) for k in ("x_train", "y_train", "x_val", "y_val")}
    with tempfile.TemporaryDirectory() as state:
        space = {**tune_param_space(p.search.space)}
        trainable = tune.with_resources(tune.with_parameters(run_trial, data=arrays, settings=settings), {"cpu": 1})
        tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                num_samples=p.search.num_samples,
                reuse_actors=True,
                search_alg=tune.search.BasicVariantGenerator(random_state=seed),
            ),
            run_config=tune.RunConfig(storage_path=state, name="random", verbose=0),
        ).fit()
        return [v for _, v in events_of(Path(state))]


def run_optuna(data, seed: int, args) -> list[float]:
    torch.set_num_threads(os.cpu_count())
    device = torch.device("cpu")
    train, val = Split.of(data.x_train, data.y_train, device), Split.of(data.x_val, data.y_val, device)
    p = params_for(seed, args, 1)
    events: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        cfg = {}
        for key, dim in p.search.space.items():
            if not isinstance(dim, tuple):
                cfg[key] = dim
                continue
            kind, a = dim
            if kind == "choice":
                cfg[key] = trial.suggest_categorical(key, a)
            elif kind == "int":
                cfg[key] = trial.suggest_int(key, *a)
            else:
                cfg[key] = trial.suggest_float(key, *a, log=kind == "loguniform")
        hp = TrialConfig(**cfg)
        torch.manual_seed(seed)
        model, opt = new_classifier(hp, in_shape=data.image_shape, num_classes=data.num_classes, device=device)
        last = 0.0

        def on_epoch(m: dict) -> None:
            nonlocal last
            events.append(m["val_accuracy"])
            last = m["val_accuracy"]
            trial.report(last, m["epoch"])
            if len(events) >= args.budget:
                trial.study.stop()
            if trial.should_prune():
                raise optuna.TrialPruned()

        fit(
            model,
            opt,
            train,
            val,
            epochs=args.max_epochs,
            batch_size=hp.batch_size,
            seed=seed,
            subset=args.subset,
            schedule_epochs=args.max_epochs,
            on_epoch=on_epoch,
        )
        return last

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=args.startup_trials),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=args.max_epochs, reduction_factor=3),
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=10 * args.budget)
    return events


def best_curve(values: list[float]) -> list[float]:
    out, best = [], -math.inf
    for v in values:
        best = max(best, v)
        out.append(best)
    return out


METHODS = {
    "random": run_random,
    "grutune": run_grutune,  # one trial per core: 2 in flight on 2 cores
    "grutune_1": lambda data, seed, args: run_grutune(data, seed, args, in_flight=1),  # TPE sees every trial
    "grutune_8": lambda data, seed, args: run_grutune(data, seed, args, in_flight=8),  # a small cluster's worth
    "optuna": run_optuna,
}


def summary(runs: dict[str, list[dict]], budget: int) -> list[dict]:
    """Per method: final best (median, range), and the trial-epochs to reach random search's final best on the same
    seed (where random search ran)."""
    rows = []
    for name, seeds in runs.items():
        finals = [r["curve"][-1] for r in seeds]
        row = {
            "method": name,
            "seeds": len(seeds),
            "best_val_median": statistics.median(finals),
            "best_val_min": min(finals),
            "best_val_max": max(finals),
        }
        if runs.get("random"):
            reach = [
                next((i + 1 for i, v in enumerate(r["curve"]) if v >= base["curve"][-1]), math.inf)
                for r, base in zip(seeds, runs["random"])
            ]
            row |= {
                "epochs_to_random_best_median": statistics.median(reach),
                "speedup_vs_random": budget / statistics.median(reach),
                "seeds_reaching_random_best": sum(not math.isinf(x) for x in reach),
            }
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=60, help="trial-epochs per method and seed (default: %(default)s)")
    ap.add_argument("--max-epochs", type=int, default=4)
    ap.add_argument("--subset", type=int, default=4000, help="training images per trial-epoch")
    ap.add_argument("--val-images", type=int, default=3000)
    ap.add_argument("--startup-trials", type=int, default=8, help="TPE's random start, for both TPE methods")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument(
        "--methods",
        default="random,grutune,optuna",
        help=f"comma-separated, of {', '.join(METHODS)} (default: %(default)s); grutune_1 and grutune_8 "
        "run grutune with 1 and 8 trials in flight",
    )
    ap.add_argument("--name", default="", help="suffix of the results file")
    args = ap.parse_args()
    methods = args.methods.split(",")
    if unknown := [m for m in methods if m not in METHODS]:
        ap.error(f"--methods: unknown {unknown}; allowed: {', '.join(METHODS)}")
    data = dataset(args.data_dir, args.val_images)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    name = f"search_efficiency_{args.max_epochs}x{args.subset}{'_' + args.name if args.name else ''}"
    for seed in range(args.seeds):
        for method in methods:
            t0 = time.perf_counter()
            values = METHODS[method](data, seed, args)[: args.budget]
            runs[method].append(
                {
                    "seed": seed,
                    "curve": best_curve(values),
                    "trial_epochs": len(values),
                    "wall_s": round(time.perf_counter() - t0, 1),
                }
            )
            print(
                f"seed {seed} {method}: best {max(values):.4f} in {len(values)} trial-epochs "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        # Saved after every seed: a long run stopped early keeps what it measured.
        path = save(
            name,
            {
                "settings": vars(args) | {"data_dir": str(args.data_dir)},
                "space": SPACE,
                "summary": summary(runs, args.budget),
                "runs": runs,
            },
        )
    rows = summary(runs, args.budget)
    print(
        f"\nBest validation accuracy after {args.budget} trial-epochs, {args.seeds} seeds (Fashion-MNIST, "
        f"{args.subset} images per trial-epoch, up to {args.max_epochs} epochs per trial)"
    )
    print(table(rows, list(rows[0])))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
