"""The one training loop: a Tune trial and the final `train` stage (grutune.final.classifier) both call `fit()`.

Also what the loop needs (the splits on the device, augmentation, batches, the cosine schedule), a fresh classifier
and its optimiser, and what a trained model costs to deploy. Callers add reporting and checkpoints through the
`on_epoch` callback; nothing here knows about Ray or W&B.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from grutune.errors import NonFiniteLoss
from grutune.models import RecurrentClassifier, to_float

__all__ = [
    "Augment",
    "EVAL_BATCH",
    "LATENCY_BATCH",
    "Split",
    "as_tensor",
    "batches",
    "cosine",
    "evaluate",
    "fit",
    "hardware",
    "inference_cost",
    "new_classifier",
    "pick_device",
    "train_epoch",
]

EVAL_BATCH = 1024  # images per evaluation step: memory only, results do not depend on it


def pick_device() -> torch.device:
    """The GPU when one is visible to this process, else the CPU: for a plain process (a stage on a laptop, a
    benchmark). Inside Ray, the device is the one Ray assigned (`cluster.assigned_device`)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """Zero-copy view of a numpy array (arrays from Ray's object store are read-only; we never write them).

    On a GPU the whole array is copied to the device once, so batches never cross the bus.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.from_numpy(a)
    return t.to(device)


@dataclass(frozen=True)
class Split:
    """Images (N, H, W, C) uint8 and labels (N,) int64, as tensors on the training device."""

    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, device: torch.device) -> Split:
        return cls(as_tensor(x, device), as_tensor(y, device))

    def __len__(self) -> int:
        return len(self.y)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Split) -> dict:
    """Mean loss, accuracy and the predictions over a split."""
    model.eval()
    loss_sum, preds = 0.0, []
    for i in range(0, len(data), EVAL_BATCH):
        logits = model(to_float(data.x[i : i + EVAL_BATCH]))
        loss_sum += F.cross_entropy(logits, data.y[i : i + EVAL_BATCH], reduction="sum").item()
        preds.append(logits.argmax(1))
    pred = torch.cat(preds)
    return {"loss": loss_sum / len(data), "accuracy": (pred == data.y).float().mean().item(), "pred": pred.cpu()}


@dataclass(frozen=True)
class Augment:
    """Light augmentation of uint8 (B, H, W, C) batches, on the batch's own device (the GPU on a GPU machine):
    a random shift of up to `pad` pixels each way (a zero-padded random crop, as torchvision's
    RandomCrop(size, padding)) and, with `flip`, a left-right mirror of half the images.

    The randomness comes from the epoch's seeded generator, so a resumed run continues exactly.
    """

    pad: int
    flip: bool

    @classmethod
    def for_images(cls, image_shape, flip: bool) -> Augment:
        """The shift of the usual recipes, an eighth of the side (4 px for CIFAR-10's 32, 3 for 28), and a flip
        where the dataset's classes allow one."""
        return cls(pad=int(image_shape[0]) // 8, flip=flip)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, h, w, _ = x.shape
        p = self.pad
        if p:
            dy = torch.randint(0, 2 * p + 1, (b, 1, 1), generator=generator).to(x.device)
            dx = torch.randint(0, 2 * p + 1, (b, 1, 1), generator=generator).to(x.device)
            padded = F.pad(x, (0, 0, p, p, p, p))  # (B, H + 2p, W + 2p, C), zeros outside
            rows = dy + torch.arange(h, device=x.device).view(1, h, 1)  # (B, H, 1)
            cols = dx + torch.arange(w, device=x.device).view(1, 1, w)  # (B, 1, W)
            x = padded[torch.arange(b, device=x.device).view(b, 1, 1), rows, cols]  # (B, H, W, C)
        if self.flip:
            mirror = (torch.rand(b, generator=generator) < 0.5).to(x.device).view(b, 1, 1, 1)
            x = torch.where(mirror, x.flip(2), x)
        return x


def cosine(progress: float) -> float:
    """The cosine schedule's factor on the learning rate: 1 at the start of training, 0 at its end."""
    return 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def batches(n: int, batch_size: int, progress: str | None = None) -> Iterable[int]:
    """The start of each batch of an epoch of n images. With a `progress` label, a tqdm bar on a terminal; in a log
    (stderr not a terminal) nothing, so a log has one line per epoch and none per batch."""
    starts = range(0, n, batch_size)
    return (
        starts
        if progress is None
        else tqdm(starts, desc=progress, unit="batch", leave=False, disable=None, dynamic_ncols=True)
    )


def train_epoch(
    model,
    opt,
    data: Split,
    *,
    batch_size: int,
    generator: torch.Generator,
    subset: int | None = None,
    clip: float = 1.0,
    lr_at: Callable[[float], float] | None = None,
    progress: str | None = None,
    augment: Augment | None = None,
    shard: tuple[int, int] | None = None,
) -> dict:
    """One pass over (a seeded random subset of) the training split; raises NonFiniteLoss on divergence.

    With `shard` (rank, world size), data-parallel: this process takes every world-th image of each batch (the same
    batches in every process, from the same seeded order), the model is a DistributedDataParallel that averages the
    gradients, and the reported loss and accuracy are summed over every process's images.

    With `lr_at`, each step's learning rate is each group's `initial_lr` times lr_at(fraction of the epoch done).
    With `augment`, every batch is augmented first (the reported train accuracy is on the augmented images).
    """
    model.train()
    n = len(data) if subset is None else min(subset, len(data))
    if shard is not None:
        n -= n % shard[1]  # every batch, the last too, has at least one image for each process
    order = torch.randperm(len(data), generator=generator)[:n].to(data.x.device)
    loss_sum, correct = torch.zeros((), device=data.x.device), torch.zeros((), device=data.x.device)
    for i in batches(n, batch_size, progress):
        if lr_at is not None:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lr_at(i / n)
        idx = order[i : i + batch_size]
        if shard is not None:
            idx = idx[shard[0] :: shard[1]]  # (batch / world,) this process's part of the batch
        x, y = data.x[idx], data.y[idx]
        x = to_float(x if augment is None else augment(x, generator))
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Recurrent nets have occasional exploding gradients; clipping keeps one bad batch from ruining a trial.
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y).sum()
    if shard is not None:
        totals = torch.stack([loss_sum, correct.to(loss_sum.dtype)])
        torch.distributed.all_reduce(totals)
        loss_sum, correct = totals[0], totals[1]
    loss = loss_sum.item() / n
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"training loss is {loss}")
    return {"loss": loss, "accuracy": round(correct.item()) / n}


def fit(
    model,
    opt,
    train: Split,
    val: Split | None,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    start_epoch: int = 0,
    subset: int | None = None,
    schedule_epochs: int | None = None,
    on_epoch: Callable[[dict], None] = lambda m: None,
    progress: bool = False,
    augment: Augment | None = None,
    shard: tuple[int, int] | None = None,
) -> list[dict]:
    """Train from `start_epoch` up to `epochs`, calling `on_epoch(metrics)` after each epoch (and, with `progress`,
    showing a progress bar within each epoch on a terminal). With `augment`, training batches are augmented.

    With `schedule_epochs`, the learning rate follows a cosine from the optimiser's rate down to 0 over that many
    epochs (a trial stopped early by ASHA has seen the same rates as every other trial up to then). The data order
    and the learning rate of epoch e depend only on (seed, e), so a run resumed from a checkpoint continues exactly.
    """
    history = []
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])  # kept in the optimiser's state_dict, so a resume has it
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        lr_at = None if schedule_epochs is None else (lambda f, e=epoch: cosine((e + f) / schedule_epochs))
        tr = train_epoch(
            model,
            opt,
            train,
            batch_size=batch_size,
            generator=g,
            subset=subset,
            lr_at=lr_at,
            progress=f"epoch {epoch + 1}/{epochs}" if progress else None,
            augment=augment,
            shard=shard,
        )
        dt = time.perf_counter() - t0
        m = {
            "epoch": epoch + 1,
            "train_loss": tr["loss"],
            "train_accuracy": tr["accuracy"],
            "lr": opt.param_groups[0]["lr"],
            "images_per_s": min(subset or len(train), len(train)) / dt,
        }
        if val is not None:
            ev = evaluate(model, val)
            m.update(val_loss=ev["loss"], val_accuracy=ev["accuracy"])
        history.append(m)
        on_epoch(m)
    return history


# --------------------------------------------------------------------------- size and speed

LATENCY_BATCH = 256  # the "large batch" of the throughput latency


@torch.no_grad()
def inference_cost(model: torch.nn.Module, in_shape, device: torch.device, *, repeats: int = 20) -> dict:
    """What the model costs to deploy, measured here on `device` with the current torch threads: its parameter
    count, and the median time per image at batch 1 (latency) and at batch 256 (throughput), in milliseconds."""
    was_training = model.training
    model.eval()
    times = {}
    for batch, reps in ((1, repeats), (LATENCY_BATCH, max(2, repeats // 10))):
        x = torch.rand(batch, *in_shape, device=device)
        model(x)  # warm-up: allocations, kernel selection
        runs = []
        for _ in range(reps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            runs.append((time.perf_counter() - t0) * 1000 / batch)
        times[batch] = float(np.median(runs))
    model.train(was_training)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "latency_ms": times[1],
        "latency_batch_ms": times[LATENCY_BATCH],
    }


def hardware(device: torch.device) -> str:
    """The device a latency was measured on, in words: the GPU's name, or the CPU model and torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} torch thread(s)"


# --------------------------------------------------------------------------- construction


def new_classifier(
    hp, *, in_shape, num_classes: int, device: torch.device
) -> tuple[RecurrentClassifier, torch.optim.Optimizer]:
    """A fresh classifier for one point of the search space (a TrialConfig) and its AdamW optimiser (decoupled
    weight decay), on `device`."""
    model = RecurrentClassifier(
        in_shape=tuple(int(d) for d in in_shape), num_classes=num_classes, **hp.model_kwargs()
    ).to(device)
    return model, torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
