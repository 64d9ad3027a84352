"""The sampling command (grutune.sample): samples of a named class from a conditional generator, the refusals (an
unknown class, a class for an unconditional generator, no trained generator), each one message and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from grutune.data import DATASETS
from grutune.final.checkpoints import save_checkpoint
from grutune.gan.scoring import generate
from grutune.gan.training import new_gan
from grutune.sample import class_index, gan_checkpoint_path, load_sampler, main
from tiny_models import gan_config

ROOT = Path(__file__).resolve().parents[1]
FASHION = DATASETS["fashion_mnist"].classes


def trained(tmp_path: Path, *, conditional: bool, with_classes: bool = True) -> Path:
    """A generator saved as the gan stage saves it (untrained: the command only draws)."""
    torch.manual_seed(0)
    G = new_gan(
        gan_config(generator="rows", conditional=conditional),
        shape=(28, 28, 1),
        noise_dim=8,
        device="cpu",
        num_classes=10,
    ).G
    path = tmp_path / ("cgan.pt" if conditional else "gan.pt")
    extra = {"classes": list(FASHION)} if with_classes else {}
    save_checkpoint(path, G, epoch=1, val_fid=1.0, dataset="fashion_mnist", data_hash="sha256:x", **extra)
    return path


def run(*argv: str, capsys) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def read_png(path: Path) -> np.ndarray:
    return matplotlib.image.imread(path)


def test_the_default_model_is_where_dvc_yaml_s_gan_stage_writes_it():
    assert gan_checkpoint_path(ROOT / "dvc.yaml") == Path("models/gan.pt")
    assert gan_checkpoint_path(ROOT / "no-such-dvc.yaml") is None


def test_every_dataset_has_its_class_names():
    assert DATASETS["mnist"].classes == tuple("0123456789")
    assert FASHION[7] == "Sneaker" and len(FASHION) == 10
    assert DATASETS["cifar10"].classes[3] == "cat"


def test_a_class_is_found_by_name_whatever_its_case():
    assert class_index("Sneaker", FASHION) == 7 == class_index("sneaker", FASHION)
    assert class_index("ankle boot", FASHION) == 9


def test_samples_of_a_named_class_are_drawn_for_it(tmp_path, capsys):
    model = trained(tmp_path, conditional=True)
    out = tmp_path / "out" / "sneakers.png"
    code, stdout, err = run("--class", "Sneaker", "-n", "6", "-o", str(out), "--model", str(model), capsys=capsys)
    assert code == 0, err
    assert "6 samples of class 'Sneaker'" in stdout
    picture = read_png(out)
    assert picture.shape[:2] == (2 * 30 + 2, 3 * 30 + 2)  # 6 tiles of 28 px, 3 a row, 2 px apart
    G, _ = load_sampler(model)
    sneakers = generate(G, 6, seed=0, device=torch.device("cpu"), classes=torch.full((6,), 7)).numpy()
    shirts = generate(G, 6, seed=0, device=torch.device("cpu"), classes=torch.zeros(6, dtype=torch.long)).numpy()
    tile = picture[2:30, 2:30, 0]
    assert np.abs(tile - sneakers[0, :, :, 0]).max() < 2 / 255  # as drawn, but for the PNG's gray levels
    assert np.abs(tile - shirts[0, :, :, 0]).mean() > 5 * np.abs(tile - sneakers[0, :, :, 0]).mean()
    assert list(tmp_path.glob("out/*")) == [out]  # written in one piece: no temporary file left beside it


def test_an_unknown_class_is_refused_by_name_with_the_valid_ones(tmp_path, capsys):
    model = trained(tmp_path, conditional=True)
    out = tmp_path / "x.png"
    code, _, err = run("--class", "Sneakers", "-o", str(out), "--model", str(model), capsys=capsys)
    assert code == 2 and "unknown class 'Sneakers'; valid: 'T-shirt/top', 'Trouser'" in err and "'Ankle boot'" in err
    assert "Traceback" not in err and not out.exists()


def test_an_unconditional_generator_says_it_cannot_take_a_class_and_draws_without_one(tmp_path, capsys):
    model = trained(tmp_path, conditional=False)
    code, _, err = run("--class", "Sneaker", "-o", str(tmp_path / "x.png"), "--model", str(model), capsys=capsys)
    assert code == 2 and "unconditional: it cannot take a class" in err
    code, stdout, err = run("-n", "4", "-o", str(tmp_path / "y.png"), "--model", str(model), capsys=capsys)
    assert code == 0 and read_png(tmp_path / "y.png").shape[:2] == (62, 62)


def test_class_names_come_from_the_registry_when_the_checkpoint_has_none(tmp_path, capsys):
    model = trained(tmp_path, conditional=True, with_classes=False)
    _, classes = load_sampler(model)
    assert classes == FASHION


def test_a_missing_generator_says_to_train_it_first(tmp_path):
    """As a user runs it: one message, exit 2, no traceback."""
    r = subprocess.run(
        [sys.executable, "-m", "grutune.sample", "--class", "Sneaker", "-o", "x.png"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "dvc repro gan" in r.stderr
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    r = subprocess.run(
        [sys.executable, "-m", "grutune.sample", "-o", "x.png"], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 2 and "no trained generator at models/gan.pt" in r.stderr and "dvc repro gan" in r.stderr


def test_a_checkpoint_that_is_not_a_generator_is_named(tmp_path, capsys):
    path = tmp_path / "clf.pt"
    save_checkpoint(path, _with_kwargs(torch.nn.Linear(2, 2)))
    code, _, err = run("-o", str(tmp_path / "x.png"), "--model", str(path), capsys=capsys)
    assert code == 2 and "is not a GAN generator's checkpoint" in err


def _with_kwargs(m):
    m.kwargs = {"in_shape": (28, 28, 1)}
    return m


@pytest.mark.parametrize("n", ["0", "-3"])
def test_a_count_below_one_is_refused(tmp_path, capsys, n):
    code, _, err = run("-n", n, "-o", str(tmp_path / "x.png"), capsys=capsys)
    assert code == 2 and "-n must be at least 1" in err


@pytest.mark.parametrize(
    "args, says",
    [
        (["--nrow", "0"], "--nrow must be at least 1, got 0"),
        (["--nrow", "-2"], "--nrow must be at least 1, got -2"),
        (["-o", "sneakers.jpg"], "-o sneakers.jpg: the samples are written as a PNG; give a name that ends in .png"),
        (["--device", "gpu"], "--device gpu: not a torch device: cpu, cuda, cuda:N or mps"),
        (["--device", "cuda:99"], "--device cuda:99: torch sees"),
    ],
)
def test_a_bad_setting_is_refused_by_name_before_anything_is_drawn(tmp_path, capsys, monkeypatch, args, says):
    """Each once crashed with a traceback, drew silently, wrote a PNG under another suffix, or blamed the checkpoint."""
    monkeypatch.chdir(tmp_path)  # a relative -o lands here, refused or not
    model = trained(tmp_path, conditional=True)
    argv = ["-n", "4", "-o", str(tmp_path / "x.png"), "--model", str(model), *args]
    code, out, err = run(*argv, capsys=capsys)
    assert code == 2 and says in err and "Traceback" not in err
    assert not out and not list(tmp_path.glob("x.*")) and not list(tmp_path.glob("sneakers.*"))
