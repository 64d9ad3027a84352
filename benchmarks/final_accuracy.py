"""The final classifier at the full budget on real Fashion-MNIST: test accuracy over seeds, with and without
augmentation.

    GRUTUNE_DATA_MIRROR=/usr/share/datasets/fashion-mnist python benchmarks/final_accuracy.py
    # 3 seeds with augmentation + 1 without, about 80 minutes on 2 cores (each run: params.yaml's train.epochs)

The config is the one the README's laptop sweep picked (benchmarks/results/laptop_run.json), or `--best` a
search stage's best.yaml. Each run is the train stage's own code (`retrain_and_test`: train+val, AdamW with the
cosine schedule, then the test split), with `train.augment` on (random shifts, and flips for Fashion-MNIST) or off.
The baseline is the same config and seed without augmentation, in the same run. Results are written after every
run, so an interrupted benchmark keeps what it measured. Writes benchmarks/results/final_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, fashion_mnist, save, table  # noqa: E402
from grutune.config import read_best  # noqa: E402
from grutune.final.classifier import retrain_and_test  # noqa: E402
from grutune.final.ray_train import RunHooks  # noqa: E402
from grutune.objectives import TrialConfig  # noqa: E402
from grutune.training import pick_device  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.935


def laptop_pick() -> TrialConfig:
    best = yaml.safe_load(json.loads((ROOT / "benchmarks/results/laptop_run.json").read_text())["best"])
    return TrialConfig(**best["config"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--best", type=Path, help="a search stage's best.yaml (default: the laptop run's pick)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds with augmentation (default: %(default)s)")
    ap.add_argument("--plain-seeds", type=int, default=1, help="of those, seeds also run without augmentation")
    ap.add_argument("--epochs", type=int, help="default: params.yaml's train.epochs")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    args = ap.parse_args()
    epochs = args.epochs or yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["epochs"]
    hp = read_best(args.best)[1] if args.best else laptop_pick()
    data, device = fashion_mnist(args.data_dir), pick_device()
    plan = [(s, True) for s in range(args.seeds)]
    for s in range(args.plain_seeds):  # the baseline right after the same seed's augmented run
        plan.insert(plan.index((s, True)) + 1, (s, False))
    runs: list[dict] = []
    print(f"{hp.model_dump()} for {epochs} epochs on {len(data.y_train) + len(data.y_val)} images, {device}")
    for seed, augment in plan:
        t0 = time.perf_counter()
        final = retrain_and_test(
            hp,
            data,
            epochs=epochs,
            seed=seed,
            device=device,
            augment=augment,
            hooks=RunHooks(
                on_epoch=lambda m: print(
                    f"  epoch {m['epoch']}/{epochs} train_loss {m['train_loss']:.4f} "
                    f"train_acc {m['train_accuracy']:.4f}",
                    flush=True,
                )
            ),
        )
        runs.append(
            {
                "seed": seed,
                "augment": augment,
                "test_accuracy": final.test["accuracy"],
                "test_loss": final.test["loss"],
                "train_accuracy_last_epoch": final.history[-1]["train_accuracy"],
                "wall_min": round((time.perf_counter() - t0) / 60, 2),
            }
        )
        print(
            f"seed {seed} augment {augment}: test accuracy {final.test['accuracy']:.4f} ({runs[-1]['wall_min']} min)",
            flush=True,
        )
        rows = []
        for aug in (True, False):
            accs = [r["test_accuracy"] for r in runs if r["augment"] is aug]
            if accs:
                rows.append(
                    {
                        "augment": aug,
                        "seeds": len(accs),
                        "test_accuracy_mean": statistics.mean(accs),
                        "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                        "test_accuracies": ", ".join(f"{a:.4f}" for a in accs),
                        "target": TARGET,
                    }
                )
        path = save(
            "final_accuracy",
            {"config": hp.model_dump(), "epochs": epochs, "dataset": "fashion_mnist", "summary": rows, "runs": runs},
        )
    print(f"\nFashion-MNIST test accuracy after {epochs} epochs on train+val ({device})")
    print(table(rows, list(rows[0])))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
