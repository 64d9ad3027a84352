"""The report stage on small inputs written in the real formats: its numbers against the real `dvc metrics show`,
its images in a real headless browser (Debian's chromium), a missing or bad input, and each sweep's parameter
importance and best so far in its own direction (the classifier's accuracy up, the GAN's FID down)."""

import base64
import csv
import dataclasses
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import optuna
import pytest
import yaml

from grutune.config import load_params
from grutune.data import load_prepared
from grutune.errors import GrutuneError
from grutune.images import image_grid
from grutune.metrics import pareto_front
from grutune.report import (
    CLASSIFIER_SWEEP,
    GAN_SWEEP,
    Objective,
    SweepResults,
    fmt,
    load_dataset_results,
    load_gan_results,
    load_sweep,
    parallel_coordinates_figure,
    param_distributions,
    param_importances,
)
from grutune.search import classifier_sweep, gan_sweep
from grutune.space import parse_space

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
# Each sweep's search space as the report stage gets it from params.yaml.
SPACES = {
    CLASSIFIER_SWEEP: parse_space(PARAMS["search"]["space"], CLASSIFIER_SWEEP.hp_model),
    GAN_SWEEP: parse_space(PARAMS["gan_search"]["space"], GAN_SWEEP.hp_model),
}
HPARAMS = tuple(CLASSIFIER_SWEEP.hp_model.model_fields)
GAN_HPARAMS = tuple(GAN_SWEEP.hp_model.model_fields)
DATASETS = {
    "mnist": ((28, 28, 1), [str(d) for d in range(10)]),
    "cifar10": (
        (32, 32, 3),
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    ),
}
GAN_DATASET = "mnist"
CHROMIUM = shutil.which("chromium")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


# --------------------------------------------------------------------------- inputs in the stages' formats


def sample(space: dict, rng: np.random.Generator) -> dict:
    """One point of a parsed search space ({key: value or (kind, args)}), as plain Python values."""
    out = {}
    for k, dim in space.items():
        kind, args = dim if isinstance(dim, tuple) else ("fixed", dim)
        out[k] = (
            args
            if kind == "fixed"
            else args[rng.integers(len(args))]
            if kind == "choice"
            else int(rng.integers(args[0], args[1] + 1))
            if kind == "int"
            else float(rng.uniform(*args))
            if kind == "uniform"
            else float(10 ** rng.uniform(*np.log10(args)))
        )
    return out


def column(objective: Objective) -> str:
    return f"best_{objective.metric}"


COSTS = ["params", "latency_ms", "latency_batch_ms"]  # the classifier's trials measure these


def trial_columns(objective: Objective) -> list[str]:
    """trials.csv's header, as sweep_results.trial_rows makes it."""
    return [
        "trial",
        "trial_id",
        "status",
        *objective.hp_model.model_fields,
        column(objective),
        *(COSTS if objective is CLASSIFIER_SWEEP else []),
        "train_s",
        "cpu_s",
        "gpu_s",
        "cost_usd",
        "epochs",
        "resumed_from_epoch",
        "error",
    ]


def random_trials(n: int, seed: int, score=None, objective: Objective = CLASSIFIER_SWEEP) -> list[dict]:
    """n completed trials over the sweep's space in params.yaml; its metric = score(trial) (default: random)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t = {
            "trial": i,
            "trial_id": f"{i:05d}_{i:05d}",
            "status": "completed",
            **sample(SPACES[objective], rng),
            "epochs": 4,
            "resumed_from_epoch": 0,
            "error": "",
        }
        t[column(objective)] = score(t) if score else float(rng.uniform(0.5, 0.99))
        # What it spent: a quarter of a GPU; priced for the classifier's sweeps, not for the GAN's (no prices set).
        t["train_s"] = t["cpu_s"] = round(float(rng.uniform(10, 100)), 1)
        t["gpu_s"] = round(t["train_s"] / 4, 1)
        t["cost_usd"] = round(t["gpu_s"] / 3600 * 2.0, 4) if objective is CLASSIFIER_SWEEP else math.nan
        if objective is CLASSIFIER_SWEEP:
            t.update(
                params=int(rng.integers(10_000, 2_000_000)),
                latency_ms=float(rng.uniform(0.1, 5)),
                latency_batch_ms=float(rng.uniform(0.01, 0.5)),
            )
        rows.append(t)
    return rows


def better(objective: Objective, a: float, b: float | None) -> bool:
    return b is None or (a > b if objective.mode == "max" else a < b)


def progress_by_time(trials: list[dict], seed: int, objective: Objective = CLASSIFIER_SWEEP) -> list[dict]:
    """A sweep's progress-time CSV as its stage writes it: best so far as trials end ("" = none yet)."""
    rng = np.random.default_rng(seed)
    m, rows, best = objective.metric, [], None
    for end, i in zip(np.sort(rng.uniform(5, 300, len(trials))), rng.permutation(len(trials))):  # ends out of order
        t = trials[i]
        v = t[f"best_{m}"] if t["status"] in ("completed", "pruned") else None
        best = v if v is not None and better(objective, v, best) else best
        rows.append(
            {
                "wall_time_s": round(float(end), 1),
                f"trial_{m}": "" if v is None else v,
                f"best_{m}": "" if best is None else best,
            }
        )
    return rows


def new_bests(trials: list[dict], objective: Objective) -> list[tuple[int, float]]:
    """(trial, value) of each trial that beat every earlier one, in trial order."""
    out, best = [], None
    for t in sorted(trials, key=lambda t: t["trial"]):
        v = t[column(objective)]
        if t["status"] in ("completed", "pruned") and math.isfinite(v) and better(objective, v, best):
            best = v
            out.append((t["trial"], v))
    return out


def log_unit(key: str, v: float) -> float:
    """A loguniform GAN hyperparameter mapped to [0, 1] across its range in the space."""
    lo, hi = SPACES[GAN_SWEEP][key][1]
    return math.log(v / lo) / math.log(hi / lo)


def lr_fid(t: dict) -> float:
    """A GAN's FID that is low only where lr_d is low (set by lr_d alone there) and otherwise rises with lr_g: the
    best (lowest) trials are told apart by lr_d, the worst (highest) by lr_g."""
    d, g = log_unit("lr_d", t["lr_d"]), log_unit("lr_g", t["lr_g"])
    return 10 + 20 * d if d < 0.3 else 100 + 200 * g


def sweep(trials: list[dict], objective: Objective = CLASSIFIER_SWEEP, mode: str | None = None) -> SweepResults:
    """The trials as the report holds a sweep (its log-scale keys from the space), optionally in the other `mode`."""
    log = frozenset(k for k, d in SPACES[objective].items() if isinstance(d, tuple) and d[0] == "loguniform")
    return SweepResults(dataclasses.replace(objective, mode=mode or objective.mode), trials, [], log)


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")  # as grutune.io.write_json writes it


def write_inputs(root: Path) -> dict:
    """What fetch..gan would leave in metrics/, search/ and data/prepared/; returns the values written."""
    rng = np.random.default_rng(0)
    written = {}
    for k, (name, (shape, classes)) in enumerate(DATASETS.items()):
        x = (rng.random((80, *shape)) * np.linspace(0.3, 1, shape[1])[None, None, :, None] * 255).astype(np.uint8)
        digest = f"sha256:{k}{'c0ffee' * 10}"
        (root / "data/prepared").mkdir(parents=True, exist_ok=True)
        np.savez(
            root / f"data/prepared/{name}.npz",
            dataset=np.array(name),
            x_test=x,
            y_test=rng.integers(0, 10, len(x)),
            classes=np.array(classes, dtype=str),
            content_hash=np.array(digest),
        )
        trials = random_trials(12, seed=k)
        trials[3].update(status="pruned", epochs=1)
        trials[5].update(status="failed", best_val_accuracy=float("nan"), epochs=1)
        trials[8].update(status="errored", best_val_accuracy=float("nan"), epochs=2, error="/tmp/t/error.txt")
        write_csv(root / f"search/{name}/trials.csv", trials, trial_columns(CLASSIFIER_SWEEP))
        done = [t for t in trials if t["status"] == "completed"]
        front = [done[i] for i in pareto_front([(t["best_val_accuracy"], t["params"]) for t in done], (1, -1))]
        picked = max(front, key=lambda t: t["best_val_accuracy"])
        pareto = [{**t, "picked": t is picked} for t in front]
        write_csv(root / f"search/{name}/pareto.csv", pareto, [*trial_columns(CLASSIFIER_SWEEP), "picked"])
        write_csv(
            root / f"metrics/{name}/search_progress_time.csv",
            progress_by_time(trials, seed=k),
            ["wall_time_s", "trial_val_accuracy", "best_val_accuracy"],
        )
        search = {
            "best_val_accuracy": 0.987654321 - k / 10,
            "trials": 12,
            "completed": 9,
            "pruned": 1,
            "failed": 1,
            "errored": 1,
            "epochs_run": 42 + k,
            "wall_time_s": 123.4 + k,
        }
        classifier = {
            "test_accuracy": 0.9712345678 - k / 10,
            "test_loss": 0.0912345678 + k,
            "per_class_accuracy": {c: 0.9 + i / 1000 + 1e-7 for i, c in enumerate(classes)},
            "params": picked["params"],
            "latency_ms": 0.4321987 + k,
            "latency_batch_ms": 0.0123456 + k,
            "latency_hardware": "Some CPU, 2 torch thread(s)",
            "picked": {
                "trial_id": picked["trial_id"],
                "rule": "most_accurate",
                "reason": "most_accurate: the highest val_accuracy on the front",
            },
        }
        write_json(root / f"metrics/{name}/search.json", search)
        write_json(root / f"metrics/{name}/classifier.json", classifier)
        actual = rng.integers(0, 10, 200)
        pred = np.where(rng.random(200) < 0.8, actual, rng.integers(0, 10, 200))
        write_csv(
            root / f"metrics/{name}/confusion.csv",
            [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(actual, pred)],
            ["actual", "predicted"],
        )
        written[name] = {
            "search": search,
            "classifier": classifier,
            "content_hash": digest,
            "trials": trials,
            "pareto": pareto,
        }
    gan_trials = random_trials(30, seed=1, score=lr_fid, objective=GAN_SWEEP)
    gan_trials[4].update(status="pruned", epochs=2)
    gan_trials[6].update(status="failed", best_fid=float("nan"), epochs=1)  # collapsed
    gan_trials[9].update(status="errored", best_fid=float("nan"), epochs=1, error="/tmp/t/error.txt")
    write_csv(root / "search/gan/trials.csv", gan_trials, trial_columns(GAN_SWEEP))
    write_csv(
        root / "metrics/gan_search_progress_time.csv",
        progress_by_time(gan_trials, 1, GAN_SWEEP),
        ["wall_time_s", "trial_fid", "best_fid"],
    )
    written["gan_trials"] = gan_trials
    gan = {
        "fid": 12.3456789,
        "inception_score": 7.654321987,
        "inception_score_std": 0.0123456789,
        "reference_fid_train_vs_test": 0.54321098,
        "reference_inception_score_test": 9.87654321,
        "precision": 0.7123,
        "recall": 0.4567,
        "reference_precision_train_vs_test": 0.8123,
        "reference_recall_train_vs_test": 0.8234,
        "eval_samples": 2000,
        "best_epoch": 3,
    }
    write_json(root / "metrics/gan.json", gan)
    write_json(
        root / "metrics/gan_search.json",
        {
            "best_fid": 23.456789012,
            "trials": 4,
            "completed": 2,
            "pruned": 1,
            "failed": 1,
            "errored": 0,
            "epochs_run": 9,
            "wall_time_s": 61.2,
        },
    )
    samples = image_grid(rng.random((64, 28, 28, 1)) ** 3, 8)  # (242, 242, 1)
    matplotlib.image.imsave(root / "metrics/gan_samples.png", samples.squeeze(-1), cmap="gray", vmin=0, vmax=1)
    by_class = image_grid(rng.random((130, 28, 28, 1)), 13)
    matplotlib.image.imsave(root / "metrics/gan_samples_by_class.png", by_class.squeeze(-1), cmap="gray")
    log = [
        {"epoch": e, "d_loss": 1.0, "g_loss": 0.5, "val_fid": 30 - e if e != 3 else 40, "diversity": 0.4}
        for e in (1, 2, 3, 4)
    ]
    write_csv(root / "metrics/gan_log.csv", log, ["epoch", "d_loss", "g_loss", "val_fid", "diversity"])
    written["gan"] = gan
    return written


def report_stage_args() -> list[str]:
    """The report stage's arguments exactly as dvc.yaml's cmd gives them (with gan.dataset = GAN_DATASET)."""
    cmd = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["cmd"]
    return cmd.replace("${gan.dataset}", GAN_DATASET).split()[3:]


REPORT_ARGS = report_stage_args()
_ROLES = dict(zip(REPORT_ARGS[::2], REPORT_ARGS[1::2]))


def dataset_files(root: Path, name: str) -> dict[str, Path]:
    return {
        k.removeprefix("--").replace("-", "_"): root / v.format(dataset=name)
        for k, v in _ROLES.items()
        if not k.startswith("--gan-")
    }


def gan_files(root: Path, name: str) -> dict[str, Path]:
    return {
        k.removeprefix("--gan-").replace("-", "_"): root / v.replace(GAN_DATASET, name)
        for k, v in _ROLES.items()
        if k.startswith("--gan-")
    }


def load(root: Path) -> tuple:
    """The mnist and GAN inputs under root, read as the stage reads them."""
    return (
        load_dataset_results("mnist", dataset_files(root, "mnist"), SPACES[CLASSIFIER_SWEEP]),
        load_gan_results("mnist", gan_files(root, "mnist"), SPACES[GAN_SWEEP]),
    )


def gan_part(page: str) -> str:
    return page.split('<h2 id="gan">', 1)[1]


def dataset_part(page: str, name: str) -> str:
    return page.split(f'<h2 id="{name}">', 1)[1].split("<h2", 1)[0]


@pytest.fixture(scope="module")
def stage(tmp_path_factory, write_params):
    """The stage's script run as DVC runs it, in a fresh git + DVC repo holding the inputs."""
    root = tmp_path_factory.mktemp("report")
    written = write_inputs(root)
    write_params(root / "params.yaml", datasets=[GAN_DATASET, *(d for d in DATASETS if d != GAN_DATASET)])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_"))},
        **GIT_ENV,
        "DVC_EXP_NAME": "sunny-crab",
    }
    for cmd in (
        ["git", "init", "-q"],
        ["git", "commit", "-q", "--allow-empty", "-m", "init"],
        [sys.executable, "-m", "dvc", "init", "-q"],
    ):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    proc = subprocess.run(
        [sys.executable, ROOT / "pipeline/report.py", "report/index.html", *REPORT_ARGS],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, (root / "report/index.html").read_text(), written, commit, env


# --------------------------------------------------------------------------- the page's content


def test_numbers_match_dvc_metrics_show(stage):
    root, page, written, _, env = stage
    cells = set(re.findall(r'<td class="num">([^<]*)</td>', page))
    assert fmt(written["mnist"]["classifier"]["test_accuracy"]) == "0.97123" and "0.97123" in cells
    assert "12.34568" in cells and "2000" in cells and "0.9712345678" not in page
    # Every number the real `dvc metrics show` prints for these files is a cell of the page.
    files = [f"metrics/{d}/{f}.json" for d in DATASETS for f in ("search", "classifier")] + [
        "metrics/gan.json",
        "metrics/gan_search.json",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "show", "--md", *files],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    numbers = [
        tok.strip()
        for line in out.splitlines()[2:]
        for tok in line.split("|")[2:]
        if re.fullmatch(r"-?\d[\d.e+-]*", tok.strip())
    ]
    assert len(numbers) == 2 * (8 + 2 + 3 + 10) + 11 + 8, out  # classifier.json: test, cost and per-class numbers
    assert not [n for n in numbers if n not in cells], out


def test_the_pareto_front_is_drawn_with_the_picked_model_named(stage):
    root, page, written, _, env = stage
    for name in DATASETS:
        part = dataset_part(page, name)
        (picked,) = [t for t in written[name]["pareto"] if t["picked"]]
        assert f'alt="Pareto front, {name}"' in part
        assert f"Picked: trial {picked['trial']}" in part and "most_accurate" in part
        (d, _) = load(root) if name == "mnist" else (None, None)
        if d is not None:
            assert [p["trial_id"] for p in d.pareto] == [t["trial_id"] for t in written[name]["pareto"]]
            assert [p["picked"] for p in d.pareto].count(True) == 1


def test_each_sweep_shows_what_its_accuracy_cost_and_its_total(stage):
    """The cost figure in the most telling unit trials.csv has for every trial: dollars where the sweep had prices
    (the classifiers'), else GPU-hours (the GAN's, whose cost_usd is empty); the caption gives the sweep's total."""
    _, page, written, *_ = stage
    for name in DATASETS:
        total = sum(t["cost_usd"] for t in written[name]["trials"])
        part = dataset_part(page, name)
        assert f'alt="cost against best_val_accuracy, {name}"' in part
        assert f"The sweep's total: <strong>{total:.3g} dollars</strong>" in part
    gpu_hours = sum(t["gpu_s"] for t in written["gan_trials"]) / 3600
    assert f"The sweep's total: <strong>{gpu_hours:.3g} GPU-hours</strong>" in gan_part(page)


def test_provenance_and_self_contained(stage):
    _, page, written, commit, _ = stage
    assert commit in page and "sunny-crab" in page
    for d in DATASETS:
        assert written[d]["content_hash"] in page
    assert "<script" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    srcs = re.findall(r'<img[^>]* src="([^"]*)"', page)
    # Per dataset: importance, parallel coords, best so far, cost, Pareto front, confusion.
    # GAN: the sweep's four, samples, real, by class, validation FID.
    assert len(srcs) == 6 * len(DATASETS) + 4 + 4
    for src in srcs:  # every image is a PNG that decodes and is not blank
        assert src.startswith("data:image/png;base64,")
        img = matplotlib.image.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert img.min() < img.max()


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    profile = cwd / "chromium-profile"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_every_image_loads_in_a_real_browser(stage, tmp_path):
    _, page, *_ = stage
    total = page.count("<img")
    # A copy of the page with a probe appended: once loaded, it lists each <img> that the browser failed to decode.
    # One deliberately broken image shows the probe can see a failure.
    probe = """<img id="canary" alt="canary" src="data:image/png;base64,iVBORw0KGgoAAAAN">
<script>window.addEventListener("load", () => {
  const imgs = [...document.images], bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0));
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = `loaded ${imgs.length - bad.length} of ${imgs.length}; broken: ${bad.map(i => i.alt).join("|")}`;
  document.body.appendChild(out);
});</script>"""
    copy = tmp_path / "probe.html"
    copy.write_text(page.replace("</body>", probe + "\n</body>"))
    proc = chromium("--virtual-time-budget=5000", "--dump-dom", copy.as_uri(), cwd=tmp_path)
    m = re.search(r'<pre id="probe">([^<]*)</pre>', proc.stdout)
    assert m, f"chromium printed no probe result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert m.group(1) == f"loaded {total} of {total + 1}; broken: canary"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_screenshot_is_not_blank(stage, tmp_path):
    root, *_ = stage
    shot = tmp_path / "shot.png"
    proc = chromium(
        f"--screenshot={shot}",
        "--window-size=1280,3000",
        "--hide-scrollbars",
        (root / "report/index.html").as_uri(),
        cwd=tmp_path,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    img = matplotlib.image.imread(shot)  # (3000, 1280, 3 or 4) in [0, 1]
    assert img.shape[:2] == (3000, 1280)
    rgb = (img[..., :3] * 255).astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)  # (3000, 1280)
    assert len(np.unique(rgb)) > 50  # plots, not a blank page


# --------------------------------------------------------------------------- each sweep in its direction


def new_best_table(part: str, col: str) -> list[tuple[str, str]]:
    """(trial, value) cells of a section's "Trials that set a new best" table."""
    m = re.search(
        rf"Trials that set a new best <code>{col}</code> \([a-z ]+\):</p><table><thead><tr><th>trial</th>"
        rf"(.*?)</tr></thead><tbody><tr><td>{col}</td>(.*?)</tr>",
        part,
    )
    assert m, part[:3000]
    return list(
        zip(re.findall(r"<th>([^<]*)</th>", m.group(1)), re.findall(r'<td class="num">([^<]*)</td>', m.group(2)))
    )


def test_gan_sweep_best_so_far_is_the_running_minimum_of_fid(stage):
    _, page, written, *_ = stage
    trials = written["gan_trials"]
    lowest, highest = new_bests(trials, GAN_SWEEP), new_bests(trials, dataclasses.replace(GAN_SWEEP, mode="max"))
    assert lowest != highest and len(lowest) >= 3  # the inputs tell the two directions apart
    part = gan_part(page)
    assert new_best_table(part, "best_fid") == [(str(n), fmt(v)) for n, v in lowest]
    assert "best_fid</code> (lower is better)" in part and "best so far, GAN sweep" in part
    # The classifier's sweeps, through the same code, keep the highest accuracy.
    mnist = written["mnist"]["trials"]
    assert new_best_table(dataset_part(page, "mnist"), "best_val_accuracy") == [
        (str(n), fmt(v)) for n, v in new_bests(mnist, CLASSIFIER_SWEEP)
    ]


def test_gan_importance_ranks_the_gan_hyperparameters_for_a_low_fid(stage):
    _, page, written, *_ = stage
    m = re.search(
        r"Parameter importance for <code>best_fid</code> \(lower is better\) over the (\d+) completed and "
        r"pruned trials [^:]*: (.*?)\.</figcaption>",
        gan_part(page),
    )
    assert m, gan_part(page)[:3000]
    ranked = re.findall(r"<code>([^<]*)</code> ([\d.]+)", m.group(2))
    usable = [t for t in written["gan_trials"] if t["status"] in ("completed", "pruned")]
    assert int(m.group(1)) == len(usable)
    varied = {k for k in GAN_HPARAMS if len({t[k] for t in usable}) > 1}
    assert {k for k, _ in ranked} == varied == set(GAN_HPARAMS)  # every GAN hyperparameter, none of the classifier's
    assert ranked[0][0] == "lr_d", ranked  # what tells the lowest FIDs apart (lr_g would lead for the highest)


def test_importance_follows_the_sweeps_direction():
    trials = random_trials(80, seed=3, score=lr_fid, objective=GAN_SWEEP)  # 80: PED-ANOVA is steady on these
    low, high = param_importances(sweep(trials, GAN_SWEEP)), param_importances(sweep(trials, GAN_SWEEP, "max"))
    assert set(low) == set(GAN_HPARAMS) and sum(low.values()) == pytest.approx(1)
    assert max(low, key=low.get) == "lr_d" and max(high, key=high.get) == "lr_g", (low, high)


@pytest.mark.parametrize(
    "key",
    [k for k, d in SPACES[GAN_SWEEP].items() if isinstance(d, tuple) and d[0] == "choice" and isinstance(d[1][0], str)],
)
def test_a_categorical_gan_hyperparameter_is_read_and_ranked_as_a_category(tmp_path, key):
    """Each string-valued choice of the GAN space (a backbone, a generator's kind): read from trials.csv as names,
    an Optuna categorical over the names the trials took, an importance and a parallel-coordinates axis; the FID
    here depends on it alone."""
    choices = SPACES[GAN_SWEEP][key][1]
    trials = random_trials(24, seed=5, score=lambda t: 50.0 + 100 * choices.index(t[key]), objective=GAN_SWEEP)
    others = {k: trials[0][k] for k in GAN_HPARAMS if k != key}
    trials = [{**t, **others} for t in trials]  # nothing else varies
    write_csv(tmp_path / "trials.csv", trials, trial_columns(GAN_SWEEP))
    write_csv(
        tmp_path / "progress.csv", progress_by_time(trials, 5, GAN_SWEEP), ["wall_time_s", "trial_fid", "best_fid"]
    )
    s = load_sweep(
        {"trials": tmp_path / "trials.csv", "progress_time": tmp_path / "progress.csv"},
        "gan_search",
        GAN_SWEEP,
        SPACES[GAN_SWEEP],
    )
    assert [t[key] for t in s.trials] == [t[key] for t in trials]
    dist = param_distributions(s)[key]
    assert isinstance(dist, optuna.distributions.CategoricalDistribution)
    assert set(dist.choices) == {t[key] for t in trials}
    assert param_importances(s) == {key: pytest.approx(1.0)}
    assert parallel_coordinates_figure(s) is not None


def test_report_objectives_are_the_sweeps_own(tmp_path, write_params, prepared_mnist):
    """The metric, direction and trial model the report reads each sweep by are the ones search.py runs it with."""
    params = load_params(write_params(tmp_path / "params.yaml"))
    data = load_prepared(prepared_mnist(), name="mnist")
    for objective, swept in (
        (CLASSIFIER_SWEEP, classifier_sweep(params, data)),
        (GAN_SWEEP, gan_sweep(params, data, "sha256:0")),
    ):
        assert (objective.hp_model, objective.metric, objective.mode) == (swept.hp_model, swept.metric, swept.mode)


# --------------------------------------------------------------------------- errors and importance


@pytest.mark.parametrize(
    "missing, stage_name",
    [
        ("metrics/mnist/search.json", "search@mnist"),
        ("search/mnist/trials.csv", "search@mnist"),
        ("metrics/mnist/search_progress_time.csv", "search@mnist"),
        ("metrics/mnist/classifier.json", "train@mnist"),
        ("metrics/mnist/confusion.csv", "train@mnist"),
        ("data/prepared/mnist.npz", "prepare@mnist"),
        ("metrics/gan_samples.png", "gan_eval"),
        ("metrics/gan_samples_by_class.png", "gan_eval"),
        ("metrics/gan_log.csv", "gan"),
        ("metrics/gan.json", "gan"),
        ("metrics/gan_search.json", "gan_search"),
        ("search/gan/trials.csv", "gan_search"),
        ("metrics/gan_search_progress_time.csv", "gan_search"),
    ],
)
def test_a_missing_input_names_the_file_and_its_stage(tmp_path, missing, stage_name):
    write_inputs(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(GrutuneError) as e:
        load(tmp_path)
    assert str(tmp_path / missing) in str(e.value) and f"stage {stage_name} " in str(e.value)


def test_a_bad_gan_trials_file_names_the_file(tmp_path):
    write_inputs(tmp_path)
    gan_trials = tmp_path / "search/gan/trials.csv"
    shutil.copy(tmp_path / "search/mnist/trials.csv", gan_trials)  # the classifier's table: no best_fid, no lr_g
    with pytest.raises(GrutuneError, match=r"missing column\(s\) \['best_fid'.*rerun stage gan_search") as e:
        load(tmp_path)
    assert str(gan_trials) in str(e.value)
    write_inputs(tmp_path)
    gan_trials.write_text(gan_trials.read_text().replace(",conv,", ",mlp,", 1))  # not a backbone
    with pytest.raises(GrutuneError, match=r"(?s)trial '\d+' is not a valid row.*unknown name 'mlp'") as e:
        load(tmp_path)
    assert str(gan_trials) in str(e.value)


@pytest.mark.parametrize("key", ["lr", "hidden_size"])
def test_importance_ranks_the_one_parameter_accuracy_depends_on_first(key):
    def score(t):  # a function of `key` alone
        return {"lr": lambda v: 0.9 + 0.05 * math.log10(v), "hidden_size": lambda v: v / 1000}[key](t[key])

    imp = param_importances(sweep(random_trials(40, seed=1, score=score)))
    assert set(imp) == set(HPARAMS) and sum(imp.values()) == pytest.approx(1)
    assert max(imp, key=imp.get) == key, imp
    assert imp == param_importances(sweep(random_trials(40, seed=1, score=score)))  # deterministic


@pytest.mark.parametrize("objective", [CLASSIFIER_SWEEP, GAN_SWEEP])
def test_importance_is_empty_when_there_is_nothing_to_rank(objective):
    trials, col = random_trials(5, seed=0, objective=objective), column(objective)
    assert param_importances(sweep(trials[:1], objective)) == {}
    same = [{**t, **{k: trials[0][k] for k in objective.hp_model.model_fields}} for t in trials]  # nothing varies
    assert param_importances(sweep(same, objective)) == {}
    tied = [{**t, col: 0.5} for t in trials]
    assert param_importances(sweep(tied, objective)) == {}
    broken = [{**t, "status": "failed", col: float("nan")} for t in trials]
    assert param_importances(sweep(broken, objective)) == {}


def test_the_gan_section_shows_precision_recall_the_classes_and_the_kept_epoch(stage):
    """The GAN's precision and recall with their real references in the metrics table, the by-class picture, and
    the validation FID curve with the kept epoch (here epoch 3, not the curve's lowest) circled in its legend."""
    root, page, _, _, _ = stage
    part = gan_part(page)
    for key, value in (("precision", "0.7123"), ("reference_recall_train_vs_test", "0.8234")):
        assert re.search(rf"<code>{key}</code></td><td[^>]*>{value}<", part), key
    assert "real and generated images by class" in part and "metrics/gan_log.csv" in part
    (_, gan) = load(root)
    assert gan.val_fid == [(1, 29.0), (2, 28.0), (3, 40.0), (4, 26.0)]
    from grutune.report import val_fid_figure

    labels = [t.get_text() for t in val_fid_figure(gan).axes[0].get_legend().get_texts()]
    assert labels == ["validation FID", "kept: epoch 3"]
