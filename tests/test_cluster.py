"""The search stage's real code on a three-node Ray cluster on one machine (as Ray's own tests do), losing a node."""

import json
import threading
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from grutune.config import load_params
from grutune.data import load_prepared
from grutune.search import run_search


def node_results(state: Path) -> dict[str, list[dict]]:
    """{trial directory: its reported results so far}, read from Tune's per-trial result.json."""
    out = {}
    for f in state.glob("mnist-*/run_trial_*/result.json"):
        try:
            out[f.parent.name] = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        except json.JSONDecodeError:  # a line being written
            pass
    return out


@pytest.mark.slow
def test_sweep_spreads_over_nodes_and_survives_losing_one(tmp_path, write_params, prepared_mnist):
    prepared = prepared_mnist(n_train=3000, n_test=100, val_fraction=0.1)
    params = load_params(write_params(tmp_path / "params.yaml", {"search": {
        "num_samples": 4, "max_epochs": 5, "grace_period": 5, "train_subset": None, "max_failures": 2,
        "max_concurrent_trials": 3, "resources": {"cpu": 1, "gpu": 0},
        "space": {"hidden_size": 64, "num_layers": 1, "backbone": "none", "batch_size": 64, "bidirectional": False}}}))
    state = tmp_path / "state"

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    victim, lost = workers[0], {}

    def remove_victim_mid_trial():
        """Once a trial on the victim node has checkpointed an epoch, take the node away."""
        deadline = time.time() + 240
        while time.time() < deadline and not lost:
            for name, results in node_results(state).items():
                if results and results[-1].get("node_id") == victim.node_id and results[-1]["epoch"] < 5:
                    lost.update(trial=name, epoch=results[-1]["epoch"])
                    cluster.remove_node(victim)
                    return
            time.sleep(0.2)

    watcher = threading.Thread(target=remove_victim_mid_trial, daemon=True)
    watcher.start()
    try:
        result = run_search(params, load_prepared(prepared), state_dir=state, remote=True)
    finally:
        watcher.join(timeout=5)
        ray.shutdown()
        cluster.shutdown()

    assert lost, "no trial ran on the victim node"
    rows = result.trials
    assert len(rows) == 4 and all(r["status"] == "completed" and r["epochs"] == 5 for r in rows)
    results = node_results(state)
    nodes = {r["node_id"] for rs in results.values() for r in rs}
    assert len(nodes) >= 2 and victim.node_id in nodes
    # The trial that lost its node was retried from its checkpoint, not from scratch.
    retried = results[lost["trial"]]
    assert retried[-1]["epoch"] == 5 and retried[-1]["node_id"] != victim.node_id
    assert retried[-1]["resumed_from_epoch"] >= 1
    (row,) = [r for r in rows if r["trial_id"] in lost["trial"]]
    assert row["resumed_from_epoch"] >= 1
