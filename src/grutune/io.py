"""File outputs, written atomically: an interrupted stage never leaves half a file where a later stage would trust
it."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from grutune.errors import full_reason, storage_full_cause

__all__ = [
    "is_uri",
    "DVC_TEMP_WORKSPACES",
    "METRICS",
    "SWEEP_OUTPUTS",
    "TRAIN_LOG_COLUMNS",
    "add_output_options",
    "add_sweep_arguments",
    "atomic_path",
    "not_a_directory",
    "workspace_root",
    "write_classifier_outputs",
    "write_csv",
    "write_json",
    "write_metrics",
    "write_png",
    "write_sweep_outputs",
    "write_text",
    "write_yaml",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path`, on error removed. A
    write that failed for want of room names `path` (torch.save, for one, raises it without a file name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should look like any other file written here
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        full = storage_full_cause(e)
        if full is None or getattr(full, "filename", None):
            raise
        raise OSError(getattr(full, "errno", None) or errno.ENOSPC, full_reason(full), str(path)) from e
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path: str | os.PathLike, rows: Iterable[dict], fieldnames: list[str]) -> None:
    """A CSV written atomically (DVC plots and people read these)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def write_png(path: str | os.PathLike, image) -> None:
    """An (H, W, C) float image in [0, 1] as a PNG (grey when C is 1)."""
    import matplotlib.image

    with atomic_path(path) as tmp:
        matplotlib.image.imsave(
            tmp, image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1, format="png"
        )


# What each stage's DVC metrics file holds: the few figures compared across experiments, so that `dvc exp show
# --only-changed` of two one-dataset experiments fits 160 columns. The rest of what a stage measured goes to a details
# JSON beside it, which DVC does not read as metrics (the report shows both). No key is in two of these files: DVC
# would name both columns by their file's path (`metrics/gan_search.json:trials`), too wide to read.
METRICS = {
    # the sweep's best; with several objectives the picked point's value; its trials; with prices, what it cost
    "search": ("best_val_accuracy", "picked_val_accuracy", "trials", "cost_usd"),
    "classifier": ("test_accuracy", "params"),  # the retrained pick's test accuracy and size
    "gan_search": ("best_fid",),
    # Both in the classifier's features: FID, and the Inception Score over the real test images' (raw IS depends on
    # the classifier, which each experiment trains anew)
    "gan": ("fid", "inception_score_ratio"),
}


def write_metrics(values: dict[str, Any], keys: tuple[str, ...], *, metrics, details) -> None:
    """`values` in two JSON files: those of `keys` it has in the DVC metrics file, the rest in the details file."""
    write_json(metrics, {k: values[k] for k in keys if k in values})
    write_json(details, {k: v for k, v in values.items() if k not in keys})


def write_sweep_outputs(result, args, metrics: tuple[str, ...]) -> None:
    """A sweep's stage outputs, each at the path its stage names (`add_sweep_arguments`): best.yaml, trials.csv,
    its summary (`metrics` of it for DVC, the rest beside), and the best-so-far files for `dvc plots`."""
    write_yaml(args.best, result.best)
    write_csv(args.trials, result.trials, fieldnames=list(result.trials[0]))
    write_metrics(result.summary, metrics, metrics=args.metrics, details=args.details)
    write_csv(args.progress, result.progress, fieldnames=list(result.progress[0]))
    write_csv(args.progress_time, result.progress_time, fieldnames=list(result.progress_time[0]))


SWEEP_OUTPUTS = {
    "best": "the best config (YAML)",
    "trials": "one row per trial (CSV)",
    "metrics": "the sweep's figures compared across experiments, for DVC (JSON)",
    "details": "the rest of the sweep's summary: counts by status, epochs, wall time, trial- and GPU-hours (JSON)",
    "progress": "best so far by trial, for DVC plots (CSV)",
    "progress_time": "best so far by wall time, for DVC plots (CSV)",
}


DVC_TEMP_WORKSPACES = (".dvc", "tmp", "exps")  # dvc exp run --temp/--queue: <repo>/.dvc/tmp/exps/<tmp dir>/


def workspace_root(cwd: str | os.PathLike | None = None) -> Path:
    """The workspace the user runs DVC in: the current directory, or, for an experiment DVC runs in a temporary
    copy (`dvc exp run --temp` and `--queue` run stages in `<repo>/.dvc/tmp/exps/<tmp>/`, deleted afterwards), the
    workspace it was copied from. State that must outlive a stage run (sweeps, offline W&B runs) goes there."""
    here = Path.cwd() if cwd is None else Path(cwd)
    parts = here.absolute().parts
    n = len(DVC_TEMP_WORKSPACES)
    for i in range(len(parts) - n - 1, 0, -1):  # the innermost match: the temp copy's own parent repo
        if parts[i : i + n] == DVC_TEMP_WORKSPACES:
            return Path(*parts[:i])
    return here


def not_a_directory(path: str | os.PathLike) -> Path | None:
    """The nearest existing part of `path` when it is a file (so `path` can never be a directory), else None."""
    for p in (Path(path), *Path(path).parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def add_output_options(ap, outputs: dict[str, str]) -> None:
    """A stage script's options: one required `--NAME PATH` per output (its path is written in the stage's cmd in
    dvc.yaml, and nowhere else), and where W&B writes its runs."""
    for name, what in outputs.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=Path, required=True, metavar="PATH", help=what)
    ap.add_argument(
        "--wandb-dir",
        type=Path,
        default=workspace_root(),
        help="W&B writes its runs under DIR/wandb (default: the DVC workspace, also for a queued or "
        "--temp experiment: %(default)s)",
    )


def add_sweep_arguments(ap, more_outputs: dict[str, str] | None = None) -> None:
    """A sweep stage's options: where each output goes, and where the sweep's state lives."""
    add_output_options(ap, {**SWEEP_OUTPUTS, **(more_outputs or {})})
    ap.add_argument(
        "--state-dir",
        type=Path,
        default=workspace_root() / ".grutune/sweeps",
        help="where Tune keeps the sweep's state unless its `storage` param is set (default: the DVC "
        "workspace's, also for a queued or --temp experiment: %(default)s)",
    )


TRAIN_LOG_COLUMNS = ["epoch", "train_loss", "train_accuracy", "lr", "images_per_s"]


def write_classifier_outputs(metrics: dict, final, data, *, metrics_path, details, confusion, log) -> None:
    """The train stage's files: test metrics (JSON: METRICS["classifier"] for DVC, the rest in `details`), (actual,
    predicted) per test image and per-epoch curves (CSV)."""
    write_metrics(metrics, METRICS["classifier"], metrics=metrics_path, details=details)
    write_csv(
        confusion,
        (
            {"actual": data.classes[t], "predicted": data.classes[p]}
            for t, p in zip(data.y_test, final.test["pred"].numpy())
        ),
        fieldnames=["actual", "predicted"],
    )
    write_csv(log, final.history, fieldnames=TRAIN_LOG_COLUMNS)


def is_uri(path: str) -> bool:
    return "://" in path
