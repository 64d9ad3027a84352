"""The report stage on small inputs written in the real formats: its numbers against the real `dvc metrics show`,
its images in a real headless browser (Debian's chromium), a missing input, and parameter importance."""

import base64
import csv
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
import pytest
import yaml

from grutune.errors import GrutuneError
from grutune.gan import image_grid
from grutune.report import HPARAMS, fmt, load_dataset_results, load_gan_results, param_importances

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"mnist": ((28, 28, 1), [str(d) for d in range(10)]),
            "cifar10": ((32, 32, 3), ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                      "ship", "truck"])}
GAN_DATASET = "mnist"
TRIAL_COLUMNS = ["trial", "trial_id", "status", *HPARAMS, "best_val_accuracy", "epochs", "resumed_from_epoch",
                 "error"]
CHROMIUM = shutil.which("chromium")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


# --------------------------------------------------------------------------- inputs in the stages' formats

def random_trials(n: int, seed: int, score=None) -> list[dict]:
    """n trials over the default search space; best_val_accuracy = score(trial) (default: random)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t = {"trial": i, "trial_id": f"{i:05d}_{i:05d}", "status": "completed",
             "cell": str(rng.choice(["gru", "lstm", "rnn"])), "hidden_size": int(rng.choice([64, 128, 256, 512])),
             "num_layers": int(rng.integers(1, 4)), "bidirectional": bool(rng.integers(2)),
             "dropout": float(rng.uniform(0, 0.5)), "backbone": str(rng.choice(["none", "conv", "resnet"])),
             "lr": float(10 ** rng.uniform(-4, -2)), "batch_size": int(rng.choice([64, 128, 256])),
             "weight_decay": float(10 ** rng.uniform(-5, -1)), "epochs": 4, "resumed_from_epoch": 0, "error": ""}
        t["best_val_accuracy"] = score(t) if score else float(rng.uniform(0.5, 0.99))
        rows.append(t)
    return rows


def progress_by_time(trials: list[dict], seed: int) -> list[dict]:
    """search_progress_time.csv as the search stage writes it: best so far as trials end ("" = none yet)."""
    rng = np.random.default_rng(seed)
    rows, best = [], None
    for end, i in zip(np.sort(rng.uniform(5, 300, len(trials))), rng.permutation(len(trials))):  # ends out of order
        t = trials[i]
        v = t["best_val_accuracy"] if t["status"] in ("completed", "pruned") else None
        best = v if v is not None and (best is None or v > best) else best
        rows.append({"wall_time_s": round(float(end), 1), "trial_val_accuracy": "" if v is None else v,
                     "best_val_accuracy": "" if best is None else best})
    return rows


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
        np.savez(root / f"data/prepared/{name}.npz", dataset=np.array(name), x_test=x,
                 y_test=rng.integers(0, 10, len(x)), classes=np.array(classes, dtype=str),
                 content_hash=np.array(digest))
        trials = random_trials(12, seed=k)
        trials[3].update(status="pruned", epochs=1)
        trials[5].update(status="failed", best_val_accuracy=float("nan"), epochs=1)
        trials[8].update(status="errored", best_val_accuracy=float("nan"), epochs=2, error="/tmp/t/error.txt")
        write_csv(root / f"search/{name}/trials.csv", trials, TRIAL_COLUMNS)
        write_csv(root / f"metrics/{name}/search_progress_time.csv", progress_by_time(trials, seed=k),
                  ["wall_time_s", "trial_val_accuracy", "best_val_accuracy"])
        search = {"best_val_accuracy": 0.987654321 - k / 10, "trials": 12, "completed": 9, "pruned": 1, "failed": 1,
                  "errored": 1, "epochs_run": 42 + k, "wall_time_s": 123.4 + k}
        classifier = {"test_accuracy": 0.9712345678 - k / 10, "test_loss": 0.0912345678 + k,
                      "per_class_accuracy": {c: 0.9 + i / 1000 + 1e-7 for i, c in enumerate(classes)}}
        write_json(root / f"metrics/{name}/search.json", search)
        write_json(root / f"metrics/{name}/classifier.json", classifier)
        actual = rng.integers(0, 10, 200)
        pred = np.where(rng.random(200) < 0.8, actual, rng.integers(0, 10, 200))
        write_csv(root / f"metrics/{name}/confusion.csv",
                  [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(actual, pred)],
                  ["actual", "predicted"])
        written[name] = {"search": search, "classifier": classifier, "content_hash": digest}
    gan = {"fid": 12.3456789, "inception_score": 7.654321987, "inception_score_std": 0.0123456789,
           "reference_fid_train_vs_test": 0.54321098, "reference_inception_score_test": 9.87654321,
           "eval_samples": 2000}
    write_json(root / "metrics/gan.json", gan)
    write_json(root / "metrics/gan_search.json", {"best_fid": 23.456789012, "trials": 4, "completed": 2, "pruned": 1,
                                                   "failed": 1, "errored": 0, "epochs_run": 9, "wall_time_s": 61.2})
    samples = image_grid(rng.random((64, 28, 28, 1)) ** 3, 8)  # (242, 242, 1)
    matplotlib.image.imsave(root / "metrics/gan_samples.png", samples.squeeze(-1), cmap="gray", vmin=0, vmax=1)
    written["gan"] = gan
    return written


def report_stage_args() -> list[str]:
    """The report stage's arguments exactly as dvc.yaml's cmd gives them (with gan.dataset = GAN_DATASET)."""
    cmd = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["cmd"]
    return cmd.replace("${gan.dataset}", GAN_DATASET).split()[3:]


REPORT_ARGS = report_stage_args()
_ROLES = dict(zip(REPORT_ARGS[::2], REPORT_ARGS[1::2]))


def dataset_files(root: Path, name: str) -> dict[str, Path]:
    return {k.removeprefix("--").replace("-", "_"): root / v.format(dataset=name)
            for k, v in _ROLES.items() if not k.startswith("--gan-")}


def gan_files(root: Path, name: str) -> dict[str, Path]:
    return {k.removeprefix("--gan-"): root / v.replace(GAN_DATASET, name) for k, v in _ROLES.items()
            if k.startswith("--gan-")}


@pytest.fixture(scope="module")
def stage(tmp_path_factory, write_params):
    """The stage's script run as DVC runs it, in a fresh git + DVC repo holding the inputs."""
    root = tmp_path_factory.mktemp("report")
    written = write_inputs(root)
    write_params(root / "params.yaml", datasets=[GAN_DATASET, *(d for d in DATASETS if d != GAN_DATASET)])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_"))}, **GIT_ENV,
           "DVC_EXP_NAME": "sunny-crab"}
    for cmd in (["git", "init", "-q"], ["git", "commit", "-q", "--allow-empty", "-m", "init"],
                [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, env=env, check=True, capture_output=True,
                            text=True).stdout.strip()
    proc = subprocess.run([sys.executable, ROOT / "pipeline/report.py", "report/index.html", *REPORT_ARGS], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, (root / "report/index.html").read_text(), written, commit, env


# --------------------------------------------------------------------------- the page's content

def test_numbers_match_dvc_metrics_show(stage):
    root, page, written, _, env = stage
    cells = set(re.findall(r'<td class="num">([^<]*)</td>', page))
    assert fmt(written["mnist"]["classifier"]["test_accuracy"]) == "0.97123" and "0.97123" in cells
    assert "12.34568" in cells and "2000" in cells and "0.9712345678" not in page
    # Every number the real `dvc metrics show` prints for these files is a cell of the page.
    files = ([f"metrics/{d}/{f}.json" for d in DATASETS for f in ("search", "classifier")]
             + ["metrics/gan.json", "metrics/gan_search.json"])
    out = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--md", *files], cwd=root, env=env,
                         capture_output=True, text=True, check=True).stdout
    numbers = [tok.strip() for line in out.splitlines()[2:] for tok in line.split("|")[2:]
               if re.fullmatch(r"-?\d[\d.e+-]*", tok.strip())]
    assert len(numbers) == 2 * (8 + 2 + 10) + 6 + 8, out
    assert not [n for n in numbers if n not in cells], out


def test_provenance_and_self_contained(stage):
    _, page, written, commit, _ = stage
    assert commit in page and "sunny-crab" in page
    for d in DATASETS:
        assert written[d]["content_hash"] in page
    assert "<script" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    srcs = re.findall(r'<img[^>]* src="([^"]*)"', page)
    assert len(srcs) == 4 * len(DATASETS) + 2  # importance, parallel coords, best so far, confusion; GAN x2
    for src in srcs:  # every image is a PNG that decodes and is not blank
        assert src.startswith("data:image/png;base64,")
        img = matplotlib.image.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert img.min() < img.max()


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    profile = cwd / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
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
    proc = chromium(f"--screenshot={shot}", "--window-size=1280,3000", "--hide-scrollbars",
                    (root / "report/index.html").as_uri(), cwd=tmp_path)
    assert shot.is_file(), proc.stderr[-2000:]
    img = matplotlib.image.imread(shot)  # (3000, 1280, 3 or 4) in [0, 1]
    assert img.shape[:2] == (3000, 1280)
    rgb = (img[..., :3] * 255).astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)  # (3000, 1280)
    assert len(np.unique(rgb)) > 50  # plots, not a blank page


# --------------------------------------------------------------------------- errors and importance

@pytest.mark.parametrize("missing, stage_name", [
    ("metrics/mnist/search.json", "search@mnist"), ("search/mnist/trials.csv", "search@mnist"),
    ("metrics/mnist/search_progress_time.csv", "search@mnist"),
    ("metrics/mnist/classifier.json", "train@mnist"), ("metrics/mnist/confusion.csv", "train@mnist"),
    ("data/prepared/mnist.npz", "prepare@mnist"), ("metrics/gan_samples.png", "gan"), ("metrics/gan.json", "gan"),
    ("metrics/gan_search.json", "gan_search"),
])
def test_a_missing_input_names_the_file_and_its_stage(tmp_path, missing, stage_name):
    write_inputs(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(GrutuneError) as e:
        load_dataset_results("mnist", dataset_files(tmp_path, "mnist"))
        load_gan_results("mnist", gan_files(tmp_path, "mnist"))
    assert str(tmp_path / missing) in str(e.value) and f"stage {stage_name} " in str(e.value)


@pytest.mark.parametrize("key", ["lr", "hidden_size"])
def test_importance_ranks_the_one_parameter_accuracy_depends_on_first(key):
    def score(t):  # a function of `key` alone
        return {"lr": lambda v: 0.9 + 0.05 * math.log10(v), "hidden_size": lambda v: v / 1000}[key](t[key])

    imp = param_importances(random_trials(40, seed=1, score=score))
    assert set(imp) == set(HPARAMS) and sum(imp.values()) == pytest.approx(1)
    assert max(imp, key=imp.get) == key, imp
    assert imp == param_importances(random_trials(40, seed=1, score=score))  # deterministic


def test_importance_is_empty_when_there_is_nothing_to_rank():
    trials = random_trials(5, seed=0)
    assert param_importances(trials[:1]) == {}
    same = [{**t, **{k: trials[0][k] for k in HPARAMS}} for t in trials]  # nothing varies
    assert param_importances(same) == {}
    tied = [{**t, "best_val_accuracy": 0.5} for t in trials]
    assert param_importances(tied) == {}
    broken = [{**t, "status": "failed", "best_val_accuracy": float("nan")} for t in trials]
    assert param_importances(broken) == {}
