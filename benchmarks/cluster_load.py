"""Cluster load: the search stage's real code on a local multi-node Ray cluster that loses worker nodes mid-sweep.

    GRUTUNE_DATA_MIRROR=/usr/share/datasets/fashion-mnist python benchmarks/cluster_load.py
    # about 6 minutes on 2 cores and 24 GiB: 4 worker nodes x 13 CPUs, 60 trials, 2 nodes killed

Builds the cluster with `ray.cluster_utils.Cluster`, as Ray's own multi-node tests do (a head with no CPUs, worker
nodes as local processes), and runs 60 small trials (GRU h=32, 6 epochs of 4,096 Fashion-MNIST images, one CPU each)
with `max_concurrent_trials: 0`. Two worker nodes are removed at random moments within a minute of the first trials
checkpointing their second epoch. Reports the peak number of trials
holding a slot against the slots, trials that finished all their epochs, trials that lost their node mid-way and
how many of them resumed from their checkpoint,
trials restarted from scratch, the study's finished trials against num_samples, rows in trials.csv, wall time, and
the peak memory of a trial process. Writes benchmarks/results/cluster_load.json.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import psutil
import ray
import yaml
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import save, table  # noqa: E402
from grutune.config import Params  # noqa: E402
from grutune.sweep.journal import load_study  # noqa: E402
from grutune.trials.classifier import run_classifier_sweep  # noqa: E402
from search_efficiency import dataset  # noqa: E402
from tune_results import trial_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PATTERN = "fashion_mnist-*/run_trial_*/result.json"


def trial_memory_mib() -> list[float]:
    """Resident memory of every live trial process on this machine (Ray names them ray::ImplicitFunc...)."""
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if cmd.startswith("ray::ImplicitFunc") or cmd.startswith("ray::run_trial"):
                out.append(p.memory_info().rss / 2**20)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--cpus-per-worker", type=int, default=13)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--kill", type=int, default=2, help="worker nodes removed mid-sweep (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the moments nodes are killed")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "benchmarks/.data")
    args = ap.parse_args()
    os.environ.setdefault("GRUTUNE_DATA_MIRROR", "/usr/share/datasets/fashion-mnist")
    data = dataset(args.data_dir, 2000)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(datasets=["fashion_mnist"])
    raw["gan"]["dataset"], raw["tracking"]["wandb"] = "fashion_mnist", False
    raw["search"].update(
        num_samples=args.trials,
        max_epochs=args.epochs,
        grace_period=args.epochs,
        train_subset=4096,
        max_failures=3,
        max_concurrent_trials=0,
        resources={"cpu": 1, "gpu": 0},
    )
    raw["search"]["space"].update(hidden_size=32, num_layers=1, backbone="none", bidirectional=False, batch_size=128)
    params = Params.model_validate(raw)
    slots = args.workers * args.cpus_per_worker

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=args.cpus_per_worker) for _ in range(args.workers)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    seen = {"used": 0.0, "memory": [], "killed": [], "victims": []}
    stop = threading.Event()
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory() as state:
        t0 = time.perf_counter()
        kill_at: list[float] = []  # drawn once trials have checkpointed an epoch, so that a kill loses work

        def watch():
            while not stop.is_set():
                total = ray.cluster_resources().get("CPU", 0)
                seen["used"] = max(seen["used"], total - ray.available_resources().get("CPU", 0))
                seen["memory"] = max(seen["memory"], trial_memory_mib(), key=len)
                now = time.perf_counter() - t0
                last = {name: rows[-1] for name, rows in trial_results(Path(state), PATTERN).items()}
                if not kill_at and not seen["killed"] and any(r["epoch"] >= 2 for r in last.values()):
                    kill_at.extend(sorted(now + rng.uniform(0, 60) for _ in range(args.kill)))
                if kill_at and now > kill_at[0]:
                    victim = workers.pop(rng.randrange(len(workers)))
                    seen["victims"].append(victim.node_id)
                    cluster.remove_node(victim)
                    seen["killed"].append(round(kill_at.pop(0), 1))
                    print(f"removed worker node {victim.node_id[:8]} at {seen['killed'][-1]} s", flush=True)
                time.sleep(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            result = run_classifier_sweep(params, data, state_dir=Path(state), remote=True)
        finally:
            stop.set()
            watcher.join(timeout=10)
        wall = time.perf_counter() - t0
        results = trial_results(Path(state), PATTERN)
        (journal,) = Path(state).glob("*/optuna.journal")
        finished = sum(t.state.is_finished() for t in load_study(journal, None).get_trials(deepcopy=False))
        finished_ok = sum(
            t.state == optuna.trial.TrialState.COMPLETE for t in load_study(journal, None).get_trials(deepcopy=False)
        )
    ray.shutdown()
    cluster.shutdown()
    epochs = {name: [r["epoch"] for r in rows] for name, rows in results.items()}
    # A trial lost its node mid-way if it reported from a removed node and then went on elsewhere.
    moved = [
        name
        for name, rows in results.items()
        if any(r["node_id"] in seen["victims"] for r in rows) and rows[-1]["node_id"] not in seen["victims"]
    ]
    row = {
        "slots": slots,
        "peak_trials": int(seen["used"]),
        "peak_share": seen["used"] / slots,
        "trials": args.trials,
        "all_epochs": sum(e[-1] == args.epochs for e in epochs.values()),
        "lost_mid_trial": len(moved),
        "resumed_from_checkpoint": sum(results[n][-1]["resumed_from_epoch"] >= 1 for n in moved),
        "from_scratch": sum(e.count(1) > 1 for e in epochs.values()),  # epoch 1 trained again
        "study_finished": finished,
        "study_complete": finished_ok,
        "trials_csv_rows": len(result.trials),
        "nodes_killed": len(seen["killed"]),
        "wall_s": round(wall, 1),
        "trial_rss_mib_max": round(max(seen["memory"], default=0)),
        "trial_rss_mib_median": round(statistics.median(seen["memory"]) if seen["memory"] else 0),
    }
    print(table([row], list(row)))
    print(
        "\nwrote "
        + str(save("cluster_load", {**row, "killed_at_s": seen["killed"], "cpus_per_worker": args.cpus_per_worker}))
    )


if __name__ == "__main__":
    main()
