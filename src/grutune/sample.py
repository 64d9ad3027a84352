"""Draw samples from the trained GAN's generator (the `gan` stage's checkpoint) into one PNG.

    python -m grutune.sample --class Sneaker -n 64 -o sneakers.png
    python -m grutune.sample -n 64 -o samples.png       # every class in turn, or an unconditional generator's draws

`grutune-sample` is the same command. The classes are the dataset's names (grutune.data's registry: MNIST's digits
0-9, Fashion-MNIST's "Sneaker", "Ankle boot", ..., CIFAR-10's "cat", ...), matched regardless of case. Only a
class-conditional generator (`gan_search.space.conditional: true`) takes one. The checkpoint's default is where
dvc.yaml's `gan` stage writes it; it loads with weights_only=True, and the PNG is written atomically.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import yaml

from grutune.data import DATASETS
from grutune.errors import GrutuneError, cli
from grutune.final.checkpoints import load_checkpoint
from grutune.gan.models import GENERATORS, Generator, build_generator
from grutune.gan.scoring import generate
from grutune.images import image_grid
from grutune.io import write_png

__all__ = ["class_index", "draw", "gan_checkpoint_path", "load_sampler", "main"]

TRAIN_FIRST = (
    "train the GAN first: `dvc repro gan`, or the README's laptop command (`dvc exp run -S budget=laptop ...`)"
)


def gan_checkpoint_path(dvc_yaml: str | Path = "dvc.yaml") -> Path | None:
    """Where dvc.yaml's `gan` stage writes its generator (its `.pt` output), so that the path is written in one
    place; None without a dvc.yaml that names one (run from elsewhere: pass --model)."""
    try:
        stage = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]["gan"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
    return next((Path(o) for o in outs if str(o).endswith(".pt")), None)


def class_index(name: str, classes: tuple[str, ...]) -> int:
    """The index of class `name` among `classes` (exact, else regardless of case); an unknown name is refused,
    listing the valid ones."""
    if name in classes:
        return classes.index(name)
    folded = [c.casefold() for c in classes]
    if name.casefold() in folded:
        return folded.index(name.casefold())
    raise GrutuneError(f"unknown class {name!r}; valid: {', '.join(repr(c) for c in classes)}")


def load_sampler(path: Path, device: str = "cpu") -> tuple[Generator, tuple[str, ...]]:
    """The gan stage's generator (weights_only=True) and its dataset's class names."""
    if not path.is_file():
        raise GrutuneError(f"no trained generator at {path}: {TRAIN_FIRST}")
    ckpt = load_checkpoint(path, device)
    if ckpt["model_kwargs"].get("kind") not in GENERATORS:
        raise GrutuneError(f"{path} is not a GAN generator's checkpoint (the gan stage writes one): {TRAIN_FIRST}")
    G = build_generator(ckpt["model_kwargs"])
    G.load_state_dict(ckpt["model"])
    classes = tuple(ckpt.get("classes") or DATASETS[ckpt["dataset"]].classes)
    return G.to(device).eval(), classes


UNCONDITIONAL = (
    "this generator is unconditional: it cannot take a class. Draw without --class, or train a class-conditional "
    "one (gan_search.space.conditional: true, then `dvc repro gan_search gan`)"
)


def draw(G: Generator, n: int, *, seed: int, cls: int | None = None, device: str = "cpu") -> torch.Tensor:
    """n samples (n, H, W, C) in [0, 1]: of class `cls` (a conditional generator), else each class in turn
    (conditional) or the generator's own draws (unconditional)."""
    if cls is not None and not G.conditional:
        raise GrutuneError(UNCONDITIONAL)
    classes = None if cls is None else torch.full((n,), cls, dtype=torch.long)
    return generate(G, n, seed=seed, device=torch.device(device), classes=classes)


def device_problem(name: str) -> str | None:
    """What is wrong with torch device `name` on this machine, or None."""
    try:
        device = torch.device(name)
    except RuntimeError:
        return "not a torch device: cpu, cuda, cuda:N or mps"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "torch sees no CUDA device here; use --device cpu"
    if device.type == "cuda" and device.index is not None and device.index >= (n := torch.cuda.device_count()):
        return f"torch sees {n} CUDA device(s) here: cuda:0 to cuda:{n - 1}"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return "torch sees no MPS device here; use --device cpu"
    return None


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="grutune-sample", description=__doc__.splitlines()[0])
    ap.add_argument("--class", dest="cls", metavar="NAME", help="the class to draw (a conditional generator only)")
    ap.add_argument("-n", type=int, default=64, help="how many samples (default 64)")
    ap.add_argument("-o", "--out", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--model", type=Path, help="the generator's checkpoint (default: the gan stage's, per dvc.yaml)")
    ap.add_argument("--seed", type=int, default=0, help="the noise's seed: the same seed draws the same samples")
    ap.add_argument("--nrow", type=int, help="samples per row (default: about the square root of n)")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"-n must be at least 1, got {args.n}")
    if args.nrow is not None and args.nrow < 1:
        ap.error(f"--nrow must be at least 1, got {args.nrow}")
    if args.out.suffix.lower() != ".png":
        ap.error(f"-o {args.out}: the samples are written as a PNG; give a name that ends in .png")
    if problem := device_problem(args.device):
        ap.error(f"--device {args.device}: {problem}")
    path = args.model or gan_checkpoint_path()
    if path is None:
        raise GrutuneError(f"no dvc.yaml here names the gan stage's generator: pass --model PATH, or {TRAIN_FIRST}")
    G, classes = load_sampler(path, args.device)
    if args.cls is not None and not G.conditional:
        raise GrutuneError(f"{path}: {UNCONDITIONAL}")
    cls = None if args.cls is None else class_index(args.cls, classes)
    images = draw(G, args.n, seed=args.seed, cls=cls, device=args.device).cpu().numpy()
    nrow = args.nrow or math.ceil(math.sqrt(args.n))
    write_png(args.out, image_grid(images, nrow))
    what = f" of class {classes[cls]!r}" if cls is not None else ", the classes in turn," if G.conditional else ""
    print(f"{args.n} samples{what} from {path} -> {args.out}")


if __name__ == "__main__":
    main()
