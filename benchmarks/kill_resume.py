"""SIGKILL the search stage at random moments, N times in a row, then let it finish: nothing finished is run again.

    python benchmarks/kill_resume.py            # 10 kills of a 60-trial sweep on generated MNIST-like data, ~10 min

Each round starts the real stage (`pipeline/search.py`) in one project folder and kills its whole process group
(driver and trial processes: what a lost head node or `kill -9` does) after a random time, drawn so that kills land
before, between and inside trials. Then it runs the stage to the end and checks:
- the study holds exactly num_samples trials, all finished, and trials.csv one row for each;
- no trial that the journal recorded as finished before a kill trained an epoch after it;
- no epoch of a trial was trained twice, except the epochs after its last checkpoint that a kill cut short.
Writes benchmarks/results/kill_resume.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from _common import save  # noqa: E402
from fakedata import make_mnist_like  # noqa: E402
from grutune.data import prepare  # noqa: E402
from grutune.sweep.journal import ALIAS, TUNE_ID, load_study  # noqa: E402


def stage(project: Path, prepared: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(ROOT / "pipeline/search.py"),
        "mnist",
        str(prepared),
        "--best",
        "out/best.yaml",
        "--trials",
        "out/trials.csv",
        "--metrics",
        "metrics.json",
        "--details",
        "details.json",
        "--progress",
        "progress.csv",
        "--progress-time",
        "progress_time.csv",
        "--pareto",
        "out/pareto.csv",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return subprocess.Popen(
        cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def finished_trials(journal: Path) -> dict[str, int]:
    """{Tune trial id: epochs} of the journal's finished trials."""
    if not journal.exists():
        return {}
    study = load_study(journal, None)
    return {
        t.user_attrs[TUNE_ID]: t.user_attrs.get("epochs", 0)
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and TUNE_ID in t.user_attrs
    }


def trained_epochs(sweeps: Path) -> dict[str, list[tuple[float, int]]]:
    """{trial id: [(timestamp, epoch)]} of every epoch a trial trained (a replay re-reports without training)."""
    out: dict[str, list] = {}
    for f in sweeps.glob("*/tune-*/run_trial_*/result.json"):
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "train_loss" in r:
                out.setdefault(r["trial_id"], []).append((r["timestamp"], r["epoch"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-wait", type=float, default=30.0, help="longest time before a kill, seconds")
    args = ap.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_mnist_like(tmp / "raw", n_train=8000, n_test=100, seed=0)
        prepared = tmp / "mnist.npz"
        prepare("mnist", tmp / "raw", prepared, val_fraction=0.2, seed=0)
        project = tmp / "project"
        project.mkdir()
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params.update(datasets=["mnist"])
        params["gan"]["dataset"], params["tracking"]["wandb"] = "mnist", False
        params["search"].update(
            num_samples=args.trials,
            max_epochs=6,
            grace_period=1,
            reduction_factor=2,
            startup_trials=4,
            train_subset=4000,
            max_concurrent_trials=2,
            max_failures=1,
            resources={"cpu": 1, "gpu": 0},
            space={
                **params["search"]["space"],
                "hidden_size": {"choice": [64, 96, 128]},
                "num_layers": 1,
                "backbone": "none",
                "bidirectional": False,
                "batch_size": 64,
            },
        )
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        sweeps = project / ".grutune/sweeps"
        rounds = []
        for k in range(args.kills):
            wait = rng.uniform(6.0, args.max_wait)
            before = finished_trials(next(sweeps.glob("*/optuna.journal"), Path("/nonexistent")))
            proc = stage(project, prepared)
            t0 = time.monotonic()
            while proc.poll() is None and time.monotonic() - t0 < wait:
                time.sleep(0.1)
            done_early = proc.poll() is not None
            if done_early:
                print(proc.stdout.read()[-3000:])
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the driver and its trial processes, even if it exited
            except ProcessLookupError:
                pass
            proc.wait()
            journal = next(sweeps.glob("*/optuna.journal"), None)
            done = sorted(finished_trials(journal)) if journal else []
            rounds.append(
                {
                    "round": k + 1,
                    "kill_after_s": round(wait, 1),
                    "finished_before": len(before),
                    "finished_at_kill": len(done),
                    "stage_ended_first": done_early,
                    "killed_at": time.time(),
                    "finished_ids": done,
                }
            )
            print(
                f"kill {k + 1}: after {wait:.1f} s, {rounds[-1]['finished_at_kill']} of {args.trials} trials finished",
                flush=True,
            )
        final = stage(project, prepared)
        out, _ = final.communicate(timeout=1800)
        ok_stage = final.returncode == 0
        journal = next(sweeps.glob("*/optuna.journal"))
        study = load_study(journal, None).get_trials(deepcopy=False)
        rows = list(csv.DictReader((project / "out/trials.csv").open())) if ok_stage else []
        epochs = trained_epochs(sweeps)
        # A trial finished before kill k trains nothing after it (nor does a trial handed its result: an alias).
        aliases = {k[len(ALIAS) :]: v for k, v in load_study(journal, None).user_attrs.items() if k.startswith(ALIAS)}
        reruns = sorted(
            {
                tid
                for r in rounds
                for tid, ev in epochs.items()
                if aliases.get(tid, tid) in r["finished_ids"] and any(ts > r["killed_at"] + 1 for ts, _ in ev)
            }
        )
        retrained = {
            tid: sorted(e for _, e in ev)
            for tid, ev in epochs.items()
            if len([e for _, e in ev]) != len({e for _, e in ev})
        }
        result = {
            "kills": args.kills,
            "num_samples": args.trials,
            "rounds": rounds,
            "final_stage_ok": ok_stage,
            "study_trials": len(study),
            "study_finished": sum(t.state.is_finished() for t in study),
            "trials_csv_rows": len(rows),
            "segments": len(list(journal.parent.glob("tune-*"))),
            "finished_trials_trained_again": reruns,
            "trials_with_a_repeated_epoch": retrained,
            "final_output_tail": out[-1500:],
        }
        result["passed"] = (
            ok_stage and not reruns and len(study) == args.trials == result["study_finished"] == len(rows)
        )
        print(json.dumps({k: v for k, v in result.items() if k != "final_output_tail"}, indent=1))
        save("kill_resume", result)


if __name__ == "__main__":
    main()
