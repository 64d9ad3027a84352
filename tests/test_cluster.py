"""The search stage's real code on multi-node Ray clusters on one machine (as Ray's own tests build them): losing a
node, filling every slot of a fixed cluster, and growing an autoscaling one."""

import contextlib
import csv
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray
import yaml
from ray import tune
from ray.cluster_utils import Cluster

from grutune.cluster import autoscaler_slots, trial_resources, trial_slots
from grutune.config import load_params
from grutune.data import load_prepared
from grutune.trials.classifier import run_classifier_sweep
from tune_results import cpus_in_use, peak_concurrency, trial_results

ROOT = Path(__file__).resolve().parents[1]


def node_results(state: Path) -> dict[str, list[dict]]:
    """{trial directory: its reported results so far}, read from Tune's per-trial result.json."""
    out = {}
    for f in state.glob("mnist-*/tune-*/run_trial_*/result.json"):
        try:
            out[f.parent.name] = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        except json.JSONDecodeError:  # a line being written
            pass
    return out


class Seen(tune.Callback):
    """What Tune's controller has seen of each trial, through Tune's public callback API: its last reported epoch
    and node, and the epoch of the last checkpoint it registered (`on_checkpoint`), which is where a trial that
    loses its node resumes. Kept in a class attribute of this process (a callback is pickled with the experiment)."""

    seen: dict[str, dict] = {}
    lock = threading.Lock()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        with self.lock:
            s = self.seen.setdefault(trial.trial_id, {"registered": 0})
            s.update(epoch=result["epoch"], node_id=result.get("node_id"))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        with self.lock:
            self.seen.setdefault(trial.trial_id, {"registered": 0})["registered"] = trial.last_result["epoch"]

    @classmethod
    def snapshot(cls) -> dict[str, dict]:
        with cls.lock:
            return {k: dict(v) for k, v in cls.seen.items()}


@pytest.mark.slow
def test_sweep_spreads_over_nodes_and_survives_losing_one(tmp_path, write_params, prepared_mnist):
    prepared = prepared_mnist(n_train=3000, n_test=100, val_fraction=0.1)
    params = load_params(
        write_params(
            tmp_path / "params.yaml",
            {
                "search": {
                    "num_samples": 4,
                    "max_epochs": 5,
                    "grace_period": 5,
                    "train_subset": None,
                    "max_failures": 2,
                    "max_concurrent_trials": 3,
                    "resources": {"cpu": 1, "gpu": 0},
                    "space": {
                        "hidden_size": 64,
                        "num_layers": 1,
                        "backbone": "none",
                        "batch_size": 64,
                        "bidirectional": False,
                    },
                }
            },
        )
    )
    state = tmp_path / "state"

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    victim, lost = workers[0], {}

    Seen.seen.clear()

    def remove_victim_mid_trial():
        """Once Tune has registered a checkpoint of a trial running on the victim node, take the node away."""
        deadline = time.time() + 240
        while time.time() < deadline and not lost:
            for tid, s in Seen.snapshot().items():
                if s.get("node_id") == victim.node_id and 1 <= s["registered"] < 5:
                    lost.update(trial=tid, registered=s["registered"])
                    cluster.remove_node(victim)
                    return
            time.sleep(0.05)  # polling for the event above, not waiting for it to happen

    watcher = threading.Thread(target=remove_victim_mid_trial, daemon=True)
    watcher.start()
    try:
        result = run_classifier_sweep(params, load_prepared(prepared), state_dir=state, remote=True, callbacks=[Seen()])
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
    # The trial that lost its node was retried from the checkpoint Tune had registered (or a later one), not from
    # scratch.
    (retried,) = [rs for rs in results.values() if rs[0]["trial_id"] == lost["trial"]]
    assert retried[-1]["epoch"] == 5 and retried[-1]["node_id"] != victim.node_id
    assert retried[-1]["resumed_from_epoch"] >= lost["registered"] >= 1
    (row,) = [r for r in rows if r["trial_id"] == lost["trial"]]
    assert row["resumed_from_epoch"] >= lost["registered"]


# --------------------------------------------------------------------------- filling the cluster


def test_slots_of_an_autoscaling_cluster_at_its_largest():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert autoscaler_slots(config, {"cpu": 1, "gpu": 0.25}) == 16  # 4 g5.xlarge workers, 4 trials per GPU
    assert autoscaler_slots(config, {"cpu": 4, "gpu": 0.25}) == 4  # CPUs bind first
    assert autoscaler_slots(config, {"cpu": 1, "gpu": 0}) == 16
    mixed = {
        "head_node_type": "head",
        "max_workers": 3,
        "available_node_types": {
            "head": {"resources": {"CPU": 2}},
            "small": {"resources": {"CPU": 2}, "max_workers": 5},
            "big": {"resources": {"CPU": 8}, "max_workers": 2},
        },
    }
    assert autoscaler_slots(mixed, {"cpu": 1, "gpu": 0}) == 2 + 2 * 8 + 1 * 2  # the cluster's cap: 3 workers


@pytest.mark.slow
def test_a_sweep_fills_a_fixed_cluster_and_loses_nothing_with_a_node(tmp_path, write_params, prepared_mnist):
    """Two 4-CPU workers, one CPU per trial: 8 slots, all busy; a worker is lost mid-sweep, its trials resume.
    The trials ask for a quarter GPU, as params.yaml does: on a cluster with no GPU and no autoscaler, that is
    dropped because resources.cpu_fallback allows it (else they would wait for a GPU node)."""
    params = load_params(
        write_params(
            tmp_path / "params.yaml",
            {
                "search": {
                    "num_samples": 12,
                    "max_epochs": 4,
                    "grace_period": 4,
                    "train_subset": 1024,
                    "max_failures": 3,
                    "max_concurrent_trials": 0,
                    "resources": {"cpu": 1, "gpu": 0.25, "cpu_fallback": True},  # no GPU here: dropped, as allowed
                    "space": {
                        "hidden_size": 16,
                        "num_layers": 1,
                        "backbone": "none",
                        "batch_size": 64,
                        "bidirectional": False,
                    },
                }
            },
        )
    )
    prepared = prepared_mnist(n_train=3000, n_test=100, val_fraction=0.1)
    state = tmp_path / "state"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=4) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    lost, used = {}, []
    Seen.seen.clear()

    def remove_a_worker_mid_sweep():
        """Watch how many of the 8 CPUs trials hold; once two trials on the first worker are mid-way and Tune has
        registered a checkpoint of each, remove the worker. What each had registered is noted: that is where Tune
        resumes it (an epoch reported after it, whose checkpoint Tune had not registered yet, is trained again)."""
        deadline = time.time() + 300
        while time.time() < deadline:
            used.append(8 - ray.available_resources().get("CPU", 0))
            mine = {  # the trials still running on the worker, and the epoch of the checkpoint Tune holds of each
                tid: s["registered"]
                for tid, s in Seen.snapshot().items()
                if s.get("node_id") == workers[0].node_id and s["epoch"] < 4
            }
            if not lost and sum(e >= 1 for e in mine.values()) >= 2 and max(used) == 8:
                lost.update(mine)
                cluster.remove_node(workers[0])
                return
            time.sleep(0.05)  # polling for the event above, not waiting for it to happen

    watcher = threading.Thread(target=remove_a_worker_mid_sweep, daemon=True)
    watcher.start()
    try:
        result = run_classifier_sweep(params, load_prepared(prepared), state_dir=state, remote=True, callbacks=[Seen()])
    finally:
        watcher.join(timeout=5)
        ray.shutdown()
        cluster.shutdown()
    results = trial_results(state)
    assert lost, "no trial was running on the worker when it was to be removed"
    assert max(used) == 8 and peak_concurrency(results) >= 4  # every slot held a trial; many trained at once
    assert len(result.trials) == 12 and all(r["status"] == "completed" and r["epochs"] == 4 for r in result.trials)
    # No trial started over. A trial on the lost worker resumed from the checkpoint Tune had registered when the
    # worker went (or a later one), so the only epochs it trained twice are ones reported after that checkpoint;
    # every other trial trained each epoch once.
    for rows in results.values():
        epochs, tid = [r["epoch"] for r in rows], rows[0]["trial_id"]
        assert epochs == sorted(epochs) and sorted(set(epochs)) == [1, 2, 3, 4], epochs
        repeated = {e for e in epochs if epochs.count(e) > 1}
        if any(r["node_id"] == workers[0].node_id for r in rows):  # ran on the lost worker (maybe just started)
            registered = lost.get(tid, 0)  # 0: Tune held no checkpoint of it when the worker went
            assert all(e > registered for e in repeated), (tid, epochs, registered)
            if rows[-1]["node_id"] != workers[0].node_id:  # it moved: resumed from what Tune held, or later
                assert rows[-1]["resumed_from_epoch"] >= registered, (tid, rows[-1], registered)
        else:
            assert not repeated, (tid, epochs)
    assert all(any(rows[0]["trial_id"] == tid for rows in results.values()) for tid in lost)


def stop_cluster(temp_dir: str) -> None:
    """Stop the processes of the Ray cluster started with `temp_dir`, and only those.

    `ray stop` stops every Ray process of the user on the machine, a developer's benchmark beside the tests included.
    """
    procs = [p for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or ())]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=30)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=30)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("config_seen", [True, False], ids=["config-seen", "config-unseen"])
def test_a_sweep_grows_an_autoscaling_cluster_to_its_largest(tmp_path, write_params, prepared_mnist, config_seen):
    """Ray's real autoscaler with its fake multi-node provider (worker nodes are local processes): a head with no
    CPUs and up to 4 workers shaped like cluster.yaml's (4 CPUs, 1 GPU). 16 trials of 1 CPU and 0.25 GPU grow the
    cluster from 0 workers to 4, and all 16 slots hold a trial: where the stage reads the autoscaler's config
    (GRUTUNE_AUTOSCALING_CONFIG), and where it cannot (started with `ray start --autoscaling-config` and nothing
    else): then the trials keep their GPU request, the stage says once that they wait for a GPU node, and every
    trial is kept pending so that the autoscaler sees the whole demand."""
    worker = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]["ray.worker.gpu"]
    config = {
        "cluster_name": "grutune-fake",
        "max_workers": 4,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "ray.worker.gpu": {
                "resources": {**worker["resources"], "object_store_memory": 200 * 2**20},
                "node_config": {},
                "min_workers": 0,
                "max_workers": worker["max_workers"],
            },
        },
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
    path = tmp_path / "autoscaling.yaml"
    path.write_text(yaml.safe_dump(config))
    write_params(
        tmp_path / "params.yaml",
        {
            "search": {
                "num_samples": 16,
                "max_epochs": 3,
                "grace_period": 3,
                "train_subset": 2048,
                "max_failures": 2,
                "max_concurrent_trials": 0,
                "resources": {"cpu": 1, "gpu": 0.25},
                "space": {
                    "hidden_size": 32,
                    "num_layers": 1,
                    "backbone": "none",
                    "batch_size": 64,
                    "bidirectional": False,
                },
            }
        },
    )
    prepared = prepared_mnist(n_train=3000, n_test=100, val_fraction=0.1)
    bin_dir = Path(sys.executable).parent
    port = 6379  # the fake provider's worker nodes join the head at Ray's default port
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # Token authentication stays on: clients joining by address say so, as the README tells users to. The cluster's
    # token is the test's own (a user makes one with `ray get-auth-token --generate`): `ray start` in token mode
    # fails without one, and ~/.ray/auth_token exists only where some earlier local Ray happened to write it.
    token = tmp_path / "ray_auth_token"
    token.write_text(secrets.token_hex(32))  # as Ray generates its tokens
    env.update(
        RAY_FAKE_CLUSTER="1",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
    )
    # A temp dir of its own (short: Ray's socket paths must fit in 107 characters), which every process of this
    # cluster names on its command line, so that the test stops this cluster and no other Ray on the machine.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    head = subprocess.run(
        [
            "ray",
            "start",
            "--head",
            f"--port={port}",
            f"--temp-dir={temp_dir}",
            f"--autoscaling-config={path}",
            "--num-cpus=0",
            "--include-dashboard=false",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert head.returncode == 0, f"ray start --head failed:\n{head.stdout[-3000:]}\n{head.stderr[-3000:]}"
    address = f"{ray.util.get_node_ip_address()}:{port}"
    seen = {"cpus": 0.0, "used": 0.0}
    stop = threading.Event()

    def watch():
        """`ray status`, as a user would run it: the cluster's CPUs, and how many are held by trials."""
        while not stop.is_set():
            out = subprocess.run(
                ["ray", "status", f"--address={address}"], env=env, capture_output=True, text=True, timeout=60
            ).stdout
            if m := re.search(r"([0-9.]+)/([0-9.]+) CPU", out):
                seen["used"], seen["cpus"] = max(seen["used"], float(m[1])), max(seen["cpus"], float(m[2]))
            if m := re.search(r"([0-9.]+)/([0-9.]+) GPU", out):
                seen["gpus_used"] = max(seen.get("gpus_used", 0.0), float(m[1]))
            time.sleep(1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # The search stage as a user runs it on the head: RAY_ADDRESS, and the autoscaler's config where it is
        # (on a `ray up` head, ~/ray_bootstrap_config.yaml needs no variable).
        stage = subprocess.run(
            [
                sys.executable,
                str(ROOT / "pipeline/search.py"),
                "mnist",
                str(prepared),
                "--best",
                "out/best.yaml",
                "--trials",
                "out/trials.csv",
                "--metrics",
                "m.json",
                "--details",
                "d.json",
                "--progress",
                "p.csv",
                "--progress-time",
                "pt.csv",
                "--pareto",
                "out/pareto.csv",
            ],
            cwd=tmp_path,
            env={**env, "RAY_ADDRESS": address, **({"GRUTUNE_AUTOSCALING_CONFIG": str(path)} if config_seen else {})},
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        stop.set()
        watcher.join(timeout=60)
        stop_cluster(temp_dir)
    assert stage.returncode == 0, stage.stdout[-3000:] + stage.stderr[-3000:]
    assert "best of 16 trials (16 completed" in stage.stdout
    assert seen == {"cpus": 16.0, "used": 16.0, "gpus_used": 4.0}  # 4 workers, every CPU and GPU held by trials
    assert stage.stderr.count("the trials wait for a GPU node") == (0 if config_seen else 1), stage.stderr[-3000:]
    assert "exceed" not in stage.stderr  # the GPU request was kept, not dropped


def test_slots_count_a_memory_reservation_where_a_node_declares_its_memory():
    gib = 2**30
    config = {
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 0}},
            "declared": {"resources": {"CPU": 8, "memory": 4 * gib}, "max_workers": 2},  # 8 CPUs, room for 2 trials
            "undeclared": {"resources": {"CPU": 4}, "max_workers": 1},
        },
    }  # its memory comes from its instance type
    assert autoscaler_slots(config, {"cpu": 1, "gpu": 0, "memory": 1.5 * gib}) == 2 * 2 + 4
    assert autoscaler_slots(config, {"cpu": 1, "gpu": 0}) == 2 * 8 + 4


@pytest.mark.slow
def test_a_memory_reservation_keeps_a_node_from_taking_more_trials_than_its_memory(
    tmp_path, write_params, prepared_mnist
):
    """`search.resources.memory` becomes Ray's memory resource: a 4-CPU node with 1 GiB of it holds two trials of
    400 MiB, not four, and the sweep's concurrency is sized to those two slots."""
    params = load_params(
        write_params(
            tmp_path / "params.yaml",
            {
                "search": {
                    "num_samples": 4,
                    "max_epochs": 2,
                    "grace_period": 2,
                    "train_subset": None,
                    "max_failures": 0,
                    "max_concurrent_trials": 0,
                    "resources": {"cpu": 1, "gpu": 0, "memory": "400MiB"},
                    "space": {
                        "hidden_size": 16,
                        "num_layers": 1,
                        "backbone": "none",
                        "batch_size": 64,
                        "bidirectional": False,
                    },
                }
            },
        )
    )
    prepared = prepared_mnist(n_train=3000, n_test=100, val_fraction=0.1)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=4, memory=2**30)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        assert trial_slots(trial_resources(params.search.resources, remote=True), 4, remote=True) == 2
        with cpus_in_use(4) as used:
            result = run_classifier_sweep(params, load_prepared(prepared), state_dir=tmp_path / "state", remote=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(result.trials) == 4 and all(r["status"] == "completed" for r in result.trials)
    assert max(used) == 2  # two trials at once on 4 free CPUs: the memory, not the CPUs, bound them


# --------------------------------------------------------------------------- the final stages on the cluster


def train_project(tmp_path: Path, write_params, prepared: Path, over: dict) -> tuple[Path, dict]:
    """A git+DVC project holding this repo's pipeline, the prepared dataset and a search stage's best.yaml written by
    hand, so that `dvc repro -s train@mnist` runs the train stage alone."""
    proj = tmp_path / "project"
    proj.mkdir()
    for name in ["dvc.yaml", "pipeline", "src", ".dvcignore"]:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, proj / name)
    write_params(proj / "params.yaml", over)
    (proj / "data/prepared").mkdir(parents=True)
    shutil.copy(prepared, proj / "data/prepared/mnist.npz")
    config = {
        "cell": "gru",
        "hidden_size": 32,
        "num_layers": 1,
        "bidirectional": False,
        "dropout": 0.2,  # dropout draws random numbers: a resume must restore their state to match a straight run
        "backbone": "none",
        "lr": 3e-3,
        "weight_decay": 1e-4,
        "batch_size": 64,
    }
    (proj / "search/mnist").mkdir(parents=True)
    (proj / "search/mnist/best.yaml").write_text(yaml.safe_dump({"trial_id": "t1", "config": config}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RAY_", "DVC_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", WANDB_MODE="offline")
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=proj, env=env, check=True, capture_output=True)
    return proj, env


def state_of(checkpoint: Path) -> dict:
    import torch

    return torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_the_train_stage_trains_on_a_gpu_worker_and_resumes_after_losing_it(tmp_path, write_params, prepared_mnist):
    """`dvc repro train@mnist` on a cluster whose head has no GPU and whose two workers declare one each: the
    training runs as a Ray Train worker holding a GPU, on a worker node; that node is removed after an epoch's
    checkpoint, and the training restarts on the other worker from that checkpoint. The outputs are written on the
    head, and they are what a straight run of the same training in one process gives, to the last prediction."""
    import torch

    from grutune.config import read_best
    from grutune.final.classifier import retrain_and_test

    epochs = 6
    prepared = prepared_mnist(n_train=3000, n_test=200, val_fraction=0.1)
    proj, env = train_project(
        tmp_path,
        write_params,
        prepared,
        {
            "train": {"epochs": epochs, "augment": True, "resources": {"cpu": 1, "gpu": 1}, "max_failures": 2},
            "gan": {"epochs": 2, "train_subset": 256, "eval_samples": 100, "resources": {"cpu": 1, "gpu": 1}},
            "gan_search": {"eval_samples": 100, "min_diversity": 0.0},
        },
    )
    gan_config = {
        "generator": "deconv",
        "hidden_size": 16,
        "num_layers": 1,
        "backbone": "none",
        "lr_g": 2e-3,
        "lr_d": 2e-3,
    }
    (proj / "search/gan").mkdir(parents=True)
    (proj / "search/gan/best.yaml").write_text(yaml.safe_dump({"trial_id": "g1", "config": gan_config}))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    final = proj / ".grutune/final"
    seen: dict = {}
    stage = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "-s", "train@mnist"],
        cwd=proj,
        env={**env, "RAY_ADDRESS": cluster.address},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in stage.stdout:
            lines.append(line)
            # The stage shows an epoch once Ray Train has registered its checkpoint (final.ray_train._Relay): from then
            # on, a lost worker resumes after that epoch. The worker's node is in the checkpoint's own state.
            if not seen and (m := re.search(r"epoch +(\d+)/6", line)) and int(m.group(1)) == 2:
                (ckpt,) = [
                    c for c in final.glob("train-mnist-*/checkpoint_*") if c.is_dir() and state_of(c)["epoch"] == 2
                ]
                seen.update(
                    epoch=2,
                    node=state_of(ckpt)["node_id"],
                    gpus_held=2 - ray.available_resources().get("GPU", 0),
                    # Ray's own record of where the training's resources are: its worker group's placement group
                    placed=[
                        pg["bundles_to_node_id"][0]
                        for pg in ray.util.placement_group_table().values()
                        if pg["state"] == "CREATED" and pg["bundles"][0].get("GPU")
                    ],
                )
                cluster.remove_node(next(w for w in workers if w.node_id == seen["node"]))
        stage.wait(timeout=900)
        # Then the GAN and its scoring, on the worker that is left (the stages' own code paths on a cluster)
        gan = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "-s", "gan", "gan_eval"],
            cwd=proj,
            env={**env, "RAY_ADDRESS": cluster.address},
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        stage.kill()
        ray.shutdown()
        cluster.shutdown()
    out = "".join(lines)
    assert stage.returncode == 0, out[-6000:]
    assert seen, "the stage showed no second epoch"
    assert seen["gpus_held"] == 1  # Ray's record: the training held one of the cluster's two GPUs,
    assert seen["placed"] == [seen["node"]]  # on the node the worker says it runs on,
    assert seen["node"] in {w.node_id for w in workers}  # a GPU worker, not the head
    assert "one Ray Train worker of {'cpu': 1, 'gpu': 1}" in out
    assert "lost its worker" in out and out.count("epoch   2/6") == 1  # said once; no epoch shown twice
    assert "Traceback" not in out  # Ray's logs of the lost worker stay on the cluster
    (run,) = final.glob("train-mnist-*")
    last = state_of(max(c for c in run.glob("checkpoint_*") if c.is_dir()))
    gpu_nodes = {w.node_id for w in workers}
    assert last["node_id"] in gpu_nodes and last["node_id"] != seen["node"]  # moved to the other GPU worker
    assert last["resumed_from_epoch"] >= seen["epoch"] >= 1
    assert gan.returncode == 0, gan.stdout[-3000:] + gan.stderr[-3000:]
    assert gan.stdout.count("on the Ray cluster (one Ray Train worker of {'cpu': 1, 'gpu': 1})") == 1  # the gan stage
    gan_metrics = json.loads((proj / "metrics/gan.json").read_text())
    assert json.loads((proj / "metrics/gan_details.json").read_text())["best_epoch"] in (1, 2)
    assert gan_metrics["fid"] > 0
    assert (proj / "metrics/gan_samples_by_class.png").stat().st_size > 0
    assert [c.name.split("-")[0] for c in sorted(final.iterdir())] == ["gan", "gan", "train"]  # gan-, gan-eval-, train-

    # The outputs, written on the head: the same files as a laptop's run, and the same training as one in a process
    metrics = json.loads((proj / "metrics/mnist/classifier.json").read_text())
    log_rows = list(csv.DictReader((proj / "metrics/train_log/mnist.csv").open()))
    assert [int(r["epoch"]) for r in log_rows] == list(range(1, epochs + 1))
    ckpt = torch.load(proj / "models/mnist/classifier.pt", weights_only=True)
    assert ckpt["epoch"] == epochs and ckpt["dataset"] == "mnist"
    _, hp = read_best(proj / "search/mnist/best.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker, which holds one CPU
    try:
        straight = retrain_and_test(
            hp, load_prepared(prepared), epochs=epochs, seed=0, device=torch.device("cpu"), augment=True
        )
    finally:
        torch.set_num_threads(threads)
    assert metrics["test_accuracy"] == pytest.approx(straight.test["accuracy"], abs=1e-9)
    predicted = [r["predicted"] for r in csv.DictReader((proj / "metrics/mnist/confusion.csv").open())]
    classes = load_prepared(prepared).classes
    assert predicted == [classes[p] for p in straight.test["pred"].tolist()]
    assert [float(r["train_loss"]) for r in log_rows] == pytest.approx(
        [m["train_loss"] for m in straight.history], rel=1e-6
    )
