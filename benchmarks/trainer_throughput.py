"""Trainer throughput: grutune's training loop against a plain PyTorch loop, and trial packing on the CPU.

    python benchmarks/trainer_throughput.py            # about 3 minutes on 2 cores

1. For each backbone, the same model, data, batch size and threads are trained by `grutune.training.train_epoch`
   and by the plain loop of pytorch/examples (forward, loss, backward, step). Runs alternate, and the median of
   each is reported; the ratio grutune / plain is the figure (target: at least 0.95).
2. Packing: as many 1-thread trainers as there are cores, side by side, against one trainer with all the cores.
   The figure is the total images per second of each (what a sweep with 1 CPU per trial gains).
Writes benchmarks/results/trainer_throughput.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save, table  # noqa: E402
from grutune.models import to_float  # noqa: E402
from grutune.objectives import TrialConfig  # noqa: E402
from grutune.training import Split, new_classifier, train_epoch  # noqa: E402

BATCH = 128


def data(n: int) -> Split:
    """n random 28x28x1 uint8 images and labels (throughput does not depend on content)."""
    rng = np.random.default_rng(0)
    return Split.of(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, n), torch.device("cpu"))


def model(backbone: str):
    hp = TrialConfig(
        cell="gru",
        hidden_size=128,
        num_layers=1,
        bidirectional=False,
        dropout=0.0,
        backbone=backbone,
        lr=1e-3,
        weight_decay=1e-4,
        batch_size=BATCH,
    )
    torch.manual_seed(0)
    return new_classifier(hp, in_shape=(28, 28, 1), num_classes=10, device=torch.device("cpu"))


def plain_epoch(net, opt, split: Split, generator: torch.Generator) -> None:
    """The loop of pytorch/examples: shuffled batches, forward, loss, backward, step."""
    net.train()
    order = torch.randperm(len(split), generator=generator)
    for i in range(0, len(split), BATCH):
        idx = order[i : i + BATCH]
        loss = F.cross_entropy(net(to_float(split.x[idx])), split.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def images_per_s(kind: str, backbone: str, n: int, threads: int) -> float:
    torch.set_num_threads(threads)
    split = data(n)
    net, opt = model(backbone)
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    if kind == "grutune":
        train_epoch(net, opt, split, batch_size=BATCH, generator=g, lr_at=lambda f: 1.0)
    else:
        plain_epoch(net, opt, split, g)
    return n / (time.perf_counter() - t0)


def _worker(args) -> float:
    return images_per_s(*args)


def packed(backbone: str, n: int, procs: int) -> float:
    """Total images/s of `procs` 1-thread trainers running at once (each its own process, as Ray trials are)."""
    with mp.get_context("spawn").Pool(procs) as pool:
        pool.map(_worker, [("grutune", backbone, 512, 1)] * procs)  # warm up imports in every process
        t0 = time.perf_counter()
        pool.map(_worker, [("grutune", backbone, n, 1)] * procs)
        return procs * n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each loop (default: %(default)s)")
    ap.add_argument("--backbones", nargs="+", default=["none", "conv", "resnet"])
    args = ap.parse_args()
    cores = os.cpu_count()
    sizes = {"none": 8192, "conv": 4096, "resnet": 2048}
    loop_rows, pack_rows = [], []
    for backbone in args.backbones:
        n = sizes.get(backbone, 4096)
        images_per_s("grutune", backbone, 512, cores)  # warm-up
        runs = {"grutune": [], "plain": []}
        for _ in range(args.repeats):
            for kind in ("plain", "grutune"):
                runs[kind].append(images_per_s(kind, backbone, n, cores))
        g, p = statistics.median(runs["grutune"]), statistics.median(runs["plain"])
        loop_rows.append(
            {
                "model": f"gru-128 {backbone}",
                "threads": cores,
                "plain_img_s": round(p),
                "grutune_img_s": round(g),
                "ratio": g / p,
                "runs": runs,
            }
        )
        one = statistics.median(images_per_s("grutune", backbone, n, cores) for _ in range(args.repeats))
        many = statistics.median(packed(backbone, n, cores) for _ in range(args.repeats))
        pack_rows.append(
            {
                "model": f"gru-128 {backbone}",
                "one_trial_all_cores_img_s": round(one),
                f"{cores}_trials_1_thread_img_s": round(many),
                "packing_gain": many / one,
            }
        )
        print(f"{backbone}: done", flush=True)
    print("\nTraining loop: grutune vs a plain PyTorch loop (batch 128, all cores)")
    print(table(loop_rows, ["model", "threads", "plain_img_s", "grutune_img_s", "ratio"]))
    print(f"\nPacking: {cores} trials of 1 thread vs 1 trial of {cores} threads (total images/s)")
    print(table(pack_rows, list(pack_rows[0])))
    path = save("trainer_throughput", {"batch": BATCH, "loop": loop_rows, "packing": pack_rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
