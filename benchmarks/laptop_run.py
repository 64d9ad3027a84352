"""The laptop run: the laptop command of the docs and README, exactly as written, on real Fashion-MNIST, timed.

    python benchmarks/laptop_run.py          # about 15 minutes on 2 cores; needs Debian's dataset-fashion-mnist
    # the multi-objective variant (accuracy and size), written to laptop_run_pareto.json:
    python benchmarks/laptop_run.py --name laptop_run_pareto --set 'search.objectives=[val_accuracy,params]'

Clones this repository's HEAD into a temporary directory, runs the laptop command there (the `laptop` section of
docs/snippets/laptop.sh, which the docs include and README.md quotes) with `mnist` swapped for `fashion_mnist` and
GRUTUNE_DATA_MIRROR pointing at the local copy, then reads the metrics it wrote. The baseline is the targets: the
whole pipeline in 15 minutes or less, test accuracy 0.90 or more, a GAN whose Inception Score is 0.63 of the real
test images' or more. Prints each stage as it starts and records the minutes each took. After the timed command it
runs the README's sampling command in the clone, as a user would next (`SAMPLE`: the README's Sneakers; an
unconditional generator refuses a class, which is recorded, and then draws without one), and keeps what each
printed and the PNG (<name>_samples.png). Writes benchmarks/results/<name>.json; with several objectives, also the
Pareto front's figure from the report (<name>_pareto.png) and its points.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, save, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"wall_min": 15.0, "test_accuracy": 0.90, "gan_is_over_real": 0.63}
LAPTOP_SNIPPET = ROOT / "docs" / "snippets" / "laptop.sh"
SAMPLE = ["python", "-m", "grutune.sample", "--class", "Sneaker", "-n", "64", "-o", "sneakers.png"]  # the README's


def sample(repo: Path, env: dict, name: str) -> list[dict]:
    """The README's sampling command in the clone after the run: what it printed and its exit code; its PNG is kept
    as RESULTS/<name>_samples.png. An unconditional generator refuses a class: then it draws without one."""
    runs = []
    unconditional = [a for a in SAMPLE if a not in ("--class", "Sneaker")][:-1] + ["samples.png"]
    for cmd in (SAMPLE, unconditional):
        done = subprocess.run(cmd, cwd=repo, env=env, text=True, capture_output=True)
        runs.append(
            {"command": shlex.join(cmd), "exit": done.returncode, "output": (done.stdout + done.stderr)[-2000:]}
        )
        print(f"$ {runs[-1]['command']}\n{runs[-1]['output']}", flush=True)
        if done.returncode == 0:
            (RESULTS / f"{name}_samples.png").write_bytes((repo / cmd[-1]).read_bytes())
            runs[-1]["png"] = f"benchmarks/results/{name}_samples.png"
            break
    return runs


def laptop_command(dataset: str) -> list[str]:
    """The laptop command (docs/snippets/laptop.sh, section `laptop`), for `dataset`."""
    section = re.search(r"# --8<-- \[start:laptop\]\n(.*?)# --8<-- \[end:laptop\]", LAPTOP_SNIPPET.read_text(), re.S)
    lines = [line for line in section.group(1).replace("\\\n", " ").splitlines() if not line.startswith("#")]
    cmd = lines[0].strip().replace("dataset=mnist", f"dataset={dataset}")
    return shlex.split(cmd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one more `-S` for dvc exp run")
    ap.add_argument("--name", default="laptop_run", help="the results file's name (default: %(default)s)")
    args = ap.parse_args()
    cmd = laptop_command(args.dataset) + [a for kv in args.set for a in ("-S", kv)]
    env = {
        **os.environ,
        "GRUTUNE_DATA_MIRROR": args.mirror,
        "WANDB_MODE": "offline",
        # a Ray of the run's own: the final stages join the latest Ray started on the machine (a benchmark's, paused)
        "RAY_ADDRESS": "local",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "grutune"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        # The clone's own code, not this checkout's (an editable install points at this checkout's src/, where
        # uncommitted edits would leak into the run).
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo / "src"), os.environ.get("PYTHONPATH")) if p)
        print("$", shlex.join(cmd), flush=True)
        t0 = time.perf_counter()
        lines, starts = [], []  # starts: (stage, seconds since the command began), from dvc's "Running stage" lines
        with subprocess.Popen(
            cmd, cwd=repo, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as proc:
            for line in proc.stdout:
                lines.append(line)
                if m := re.match(r"Running stage '([^']+)'", line):
                    starts.append((m.group(1), time.perf_counter() - t0))
                    print(f"{starts[-1][1] / 60:5.1f} min  stage {m.group(1)}", flush=True)
        wall = time.perf_counter() - t0
        log = "".join(lines)
        stage_min = {
            name: round((end - begin) / 60, 2) for (name, begin), (_, end) in zip(starts, [*starts[1:], ("", wall)])
        }
        if proc.returncode != 0:
            sys.exit(f"the laptop command failed:\n{log[-5000:]}")
        m = repo / "metrics"
        read = lambda *paths: {k: v for p in paths for k, v in json.loads((m / p).read_text()).items()}  # noqa: E731
        # each stage's DVC metrics and the details beside them
        clf = read(f"{args.dataset}/classifier.json", f"{args.dataset}/classifier_details.json")
        search = read(f"{args.dataset}/search.json", f"{args.dataset}/search_details.json")
        gan = read("gan.json", "gan_details.json")
        best = (repo / "search" / args.dataset / "best.yaml").read_text()
        with open(repo / "search" / args.dataset / "pareto.csv") as f:
            front = [{k: v for k, v in r.items()} for r in csv.DictReader(f)]
        page = (repo / "report/index.html").read_text()
        png = re.search(rf'<img[^>]*alt="Pareto front, {args.dataset}"[^>]*src="data:image/png;base64,([^"]*)"', page)
        png = png or re.search(
            rf'<img[^>]*src="data:image/png;base64,([^"]*)"[^>]*alt="Pareto front, {args.dataset}"', page
        )
        if png and len(front) > 1:
            (RESULTS / f"{args.name}_pareto.png").write_bytes(base64.b64decode(png.group(1)))
        sampled = sample(repo, env, args.name)
    extra = {}
    if len(front) > 1:
        acc, size = [float(r["best_val_accuracy"]) for r in front], [float(r["params"]) for r in front]
        extra = {
            "pareto_points": len(front),
            "front_val_accuracy": [min(acc), max(acc)],
            "front_params": [int(min(size)), int(max(size))],
            "picked_params": clf["params"],
            "front": front,
        }
    row = {
        "dataset": args.dataset,
        "wall_min": wall / 60,
        "test_accuracy": clf["test_accuracy"],
        "search_trials": search["trials"],
        "search_wall_min": search["wall_time_s"] / 60,
        "gan_fid": gan["fid"],
        "gan_real_fid": gan["reference_fid_train_vs_test"],
        "gan_is": gan["inception_score"],
        "gan_real_is": gan["reference_inception_score_test"],
        "gan_is_over_real": gan["inception_score"] / gan["reference_inception_score_test"],
        "gan_precision": gan.get("precision"),
        "gan_real_precision": gan.get("reference_precision_train_vs_test"),
        "gan_recall": gan.get("recall"),
        "gan_real_recall": gan.get("reference_recall_train_vs_test"),
    }
    row["meets_targets"] = (
        row["wall_min"] <= TARGETS["wall_min"]
        and row["test_accuracy"] >= TARGETS["test_accuracy"]
        and row["gan_is_over_real"] >= TARGETS["gan_is_over_real"]
    )
    print(table([row], list(row)))
    if extra:
        print(
            f"Pareto front: {extra['pareto_points']} points, val accuracy {extra['front_val_accuracy']}, "
            f"params {extra['front_params']}"
        )
    print(
        "\nwrote "
        + str(
            save(
                args.name,
                {
                    "command": shlex.join(cmd),
                    "targets": TARGETS,
                    **row,
                    "stage_min": stage_min,
                    **extra,
                    "best": best,
                    "sample": sampled,
                    "log_tail": log[-4000:],
                },
            )
        )
    )


if __name__ == "__main__":
    main()
