"""The gan stage's script on a laptop (in its own process): what it writes when the GAN collapsed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from grutune.data import load_prepared
from grutune.final.checkpoints import save_checkpoint
from tiny_models import gan_config, scoring_classifier

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
