"""Tune overhead: N fixed-length trials through grutune's real sweep path, against the ideal wall time.

    python benchmarks/tune_overhead.py                 # 100 trials, about 2 minutes on 2 cores

Each trial runs grutune's trial skeleton (journal check, checkpoint and report every epoch) around a training step
that sleeps a fixed time per epoch, so only the machinery is measured. The stage's wall time (Ray's start
included) is compared with the ideal: the sum of the trials' own times divided by the parallel slots.
Ray's release test accepts 1.14x at 10k trials; grutune's target is at most 1.10x at 100 trials.
Writes benchmarks/results/tune_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save, table  # noqa: E402
from grutune.cluster import init_ray  # noqa: E402
from grutune.config import Params  # noqa: E402
from grutune.data import Prepared  # noqa: E402
from grutune.objectives import TrialConfig  # noqa: E402
from grutune.trials.classifier import run_classifier_sweep  # noqa: E402
from grutune.trials.skeleton import TrialJob, run_epochs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def fixed_trial(config: dict, *, data: dict, settings) -> None:
    """grutune's trial skeleton around a 'training' that takes exactly `epoch_s` seconds per epoch."""

    def build(hp, device):
        model = torch.nn.Linear(4, 2)

        def fit(start: int, on_epoch) -> None:
            for epoch in range(start, settings.max_epochs):
                time.sleep(data["epoch_s"])
                on_epoch({"epoch": epoch + 1, "val_accuracy": float(hp.lr)})

        return TrialJob(parts={"model": model}, kwargs={"model": {}}, fit=fit)

    run_epochs(config, settings, hp_model=TrialConfig, metric="val_accuracy", worst=0.0, build=build)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per trial (default: %(default)s)")
    ap.add_argument("--epoch-s", type=float, default=1.0, help="seconds per epoch (default: %(default)s)")
    args = ap.parse_args()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"], raw["gan"]["dataset"], raw["tracking"]["wandb"] = ["mnist"], "mnist", False
    raw["search"].update(
        num_samples=args.trials,
        max_epochs=args.epochs,
        grace_period=args.epochs,
        max_concurrent_trials=0,
        resources={"cpu": 1, "gpu": 0},
    )
    params = Params.model_validate(raw)
    z = np.zeros((8, 28, 28, 1), np.uint8)
    data = Prepared(
        name="mnist",
        x_train=z,
        y_train=np.zeros(8, np.int64),
        x_val=z,
        y_val=np.zeros(8, np.int64),
        x_test=z,
        y_test=np.zeros(8, np.int64),
        classes=tuple("0123456789"),
        content_hash="sha256:bench",
    )

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with tempfile.TemporaryDirectory() as state:
        t0 = time.perf_counter()
        remote = init_ray()
        slots = int(ray.cluster_resources()["CPU"])
        ray_start = time.perf_counter() - t0

        def trial(config, *, data, settings):
            fixed_trial(config, data={**data, "epoch_s": args.epoch_s}, settings=settings)

        result = run_classifier_sweep(params, data, state_dir=Path(state), remote=remote, trainable=trial)
        wall = time.perf_counter() - t0
        times = [
            json.loads(f.read_text().splitlines()[-1])["time_total_s"]
            for f in Path(state).glob("mnist-*/tune-*/*/result.json")
        ]
    ideal = sum(times) / slots
    nominal = args.trials * args.epochs * args.epoch_s / slots
    row = {
        "trials": args.trials,
        "slots": slots,
        "epochs": args.epochs,
        "epoch_s": args.epoch_s,
        "ray_start_s": ray_start,
        "wall_s": wall,
        "ideal_s": ideal,
        "overhead": wall / ideal,
        "overhead_vs_nominal": wall / nominal,
        "completed": result.summary["completed"],
    }
    print(table([row], list(row)))
    print(f"\nwrote {save('tune_overhead', row)}")


if __name__ == "__main__":
    main()
