"""The gan stage's script on a laptop (in its own process): what it writes when the GAN collapsed, and a
class-conditional GAN's checkpoint as gan_eval and the sampling command read it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import yaml

from grutune.data import load_prepared
from grutune.final.checkpoints import save_checkpoint
from tiny_models import gan_config, scoring_classifier
from wandb_records import read_run

ROOT = Path(__file__).resolve().parents[1]


def test_the_gan_stage_writes_nothing_when_the_gan_collapsed(tmp_path, prepared_mnist, write_params):
    """The stage script itself: exit 2, a one-line error naming the config and diversity, no output files."""
    prepared = prepared_mnist(n_train=600, n_test=100, val_fraction=0.2)
    write_params(
        tmp_path / "params.yaml",
        {
            "gan": {"epochs": 2, "batch_size": 64, "noise_dim": 8, "train_subset": 64},
            "gan_search": {"eval_samples": 20, "min_diversity": 10.0},
        },
    )
    save_checkpoint(tmp_path / "clf.pt", scoring_classifier(), data_hash=load_prepared(prepared).content_hash)
    (tmp_path / "best.yaml").write_text(yaml.safe_dump({"config": gan_config().model_dump()}))
    outs = ["model.pt", "log.csv"]
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "pipeline/gan.py"),
            str(prepared),
            "clf.pt",
            "best.yaml",
            outs[0],
            "--log",
            outs[1],
        ],
        cwd=tmp_path,
        env={**os.environ, "RAY_ADDRESS": "local"},  # trains in this process, whatever Ray runs on the machine
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: the GAN collapsed at every scored epoch" in proc.stderr and "Traceback" not in proc.stderr
    assert not [f for f in outs if (tmp_path / f).exists()]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        # in this process, whatever Ray runs on the machine; W&B (where params turn it on) writes its runs offline
        env={**os.environ, "RAY_ADDRESS": "local", "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_conditional_gan_from_the_gan_stage_is_scored_per_class_and_sampled_by_class_name(
    tmp_path, prepared_mnist, write_params
):
    """best.yaml with `conditional: true`: the gan stage trains a class-conditional GAN and keeps the class names in
    its checkpoint; gan_eval writes its class consistency and per-class scores to the details, not the DVC metrics,
    and to W&B the grid by class and a table of the per-class scores; `python -m grutune.sample --class 3` draws
    from that checkpoint."""
    prepared = prepared_mnist(n_train=600, n_test=100, val_fraction=0.2)
    write_params(
        tmp_path / "params.yaml",
        {
            "gan": {"epochs": 1, "batch_size": 64, "noise_dim": 8, "train_subset": 64, "eval_samples": 60},
            "gan_search": {"eval_samples": 20, "min_diversity": 0.0},
        },
        wandb=True,
    )
    save_checkpoint(tmp_path / "clf.pt", scoring_classifier(), data_hash=load_prepared(prepared).content_hash)
    config = gan_config(generator="rows", conditional=True).model_dump()
    (tmp_path / "best.yaml").write_text(yaml.safe_dump({"config": config}))
    proc = run(
        [str(ROOT / "pipeline/gan.py"), str(prepared), "clf.pt", "best.yaml", "gan.pt", "--log", "log.csv"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training the class-conditional rows GAN" in proc.stdout
    outs = ["--metrics", "gan.json", "--details", "details.json", "--samples", "s.png", "--class-samples", "c.png"]
    proc = run([str(ROOT / "pipeline/gan_eval.py"), str(prepared), "clf.pt", "gan.pt", *outs], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "class consistency" in proc.stdout
    metrics, details = (json.loads((tmp_path / f).read_text()) for f in ("gan.json", "details.json"))
    assert set(metrics) == {"fid", "inception_score_ratio"}  # the DVC metrics file: the headline figures only
    assert details["conditional"] is True and 0 <= details["class_consistency"] <= 1
    assert details["per_class_by"] == "requested" and set(details["per_class"]) == set("0123456789")
    (logged,) = [
        r for r in map(read_run, tmp_path.glob("wandb/offline-run-*/run-*.wandb")) if r["job_type"] == "gan_eval"
    ]
    (step,) = logged["history"]
    assert step["samples_by_class"]["_type"] == "image-file" and "drawn for" in step["samples_by_class"]["caption"]
    table = step["per_class"]
    assert table["_type"] == "table-file" and (table["nrows"], table["ncols"]) == (10, 7)  # class + 6 scores
    proc = run(["-m", "grutune.sample", "--class", "3", "-n", "4", "-o", "threes.png", "--model", "gan.pt"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert matplotlib.image.imread(tmp_path / "threes.png").shape[:2] == (62, 62)
    proc = run(["-m", "grutune.sample", "--class", "three", "-o", "x.png", "--model", "gan.pt"], tmp_path)
    assert proc.returncode == 2 and "unknown class 'three'; valid: '0', '1'" in proc.stderr
