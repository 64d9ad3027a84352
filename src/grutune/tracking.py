"""Tracking at the edges: Weights & Biases runs, and nothing else (DVC's metrics and plots are files: see io.py).

Models, data and the training loop never import wandb; the pipeline scripts and the search driver call these helpers.
"""

from __future__ import annotations

import logging
import netrc
import os
import queue
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

from ray import tune

from grutune.io import workspace_root

__all__ = [
    "GAN_TRIAL_METRICS",
    "TRIAL_METRICS",
    "WandbTrialLogger",
    "epoch_logger",
    "init_wandb",
    "log_classifier_eval",
    "log_classifier_run",
    "log_gan_run",
    "log_model",
    "log_sweep_summary",
    "run_context",
    "trial_loggers",
    "trial_run_id",
    "wandb_mode",
]

log = logging.getLogger(__name__)

TRIAL_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_s")
GAN_TRIAL_METRICS = ("fid", "diversity", "d_loss", "g_loss", "d_real", "d_fake", "images_per_s")


def wandb_mode() -> str:
    """`online` when an API key is configured (WANDB_API_KEY or `wandb login`), else `offline`; WANDB_MODE wins."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
        if netrc.netrc().authenticators(host):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    return "offline"


def run_context() -> dict[str, Any]:
    """What links a result to its code: the git commit and, inside `dvc exp run`, the experiment's name."""
    ctx: dict[str, Any] = {}
    try:
        ctx["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    if os.environ.get("DVC_EXP_NAME"):
        ctx["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    return ctx


def init_wandb(
    enabled: bool,
    *,
    project: str,
    group: str,
    job_type: str,
    name: str,
    config: dict,
    directory: str | os.PathLike,
    silent: bool = False,
    run_id: str | None = None,
):
    """Start one W&B run (several may be open at once), or return None when tracking is off. With `run_id`, a run
    of that id is resumed if it exists (W&B's resume="allow"), so a restarted process continues the same run."""
    if not enabled:
        return None
    import wandb

    Path(directory).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=project,
        group=group,
        job_type=job_type,
        name=name,
        config={**config, **run_context()},
        mode=wandb_mode(),
        dir=str(directory),
        reinit="create_new",
        settings=wandb.Settings(silent=silent, console="off"),
        **({"id": run_id, "resume": "allow"} if run_id else {}),
    )


def trial_run_id(group: str, trial_id: str) -> str:
    """A trial's W&B run id: stable across restarts of the sweep, unique across sweeps (W&B ids allow letters,
    digits, '-' and '_')."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{group}-{trial_id}")


class WandbTrialLogger(tune.Callback):
    """One W&B run per Tune trial, grouped by sweep, logged from the driver.

    Logging from the driver (not from trial actors) means a trial stopped early by ASHA, or lost with its node,
    still gets its run finished cleanly, and no API key is needed for offline runs. W&B calls (a run's start
    takes about a second) happen on a background thread, so they never stall Tune's event loop.
    """

    def __init__(
        self,
        *,
        project: str,
        group: str,
        directory: str | os.PathLike,
        extra_config: dict,
        metrics: tuple[str, ...] = TRIAL_METRICS,
        best: tuple[str, str] = ("val_accuracy", "max"),
    ):
        self.project, self.group, self.directory, self.extra = project, group, directory, extra_config
        self.metrics, self.best = metrics, best
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment: no thread, and no absolute path, so that a project copied
        # or moved elsewhere logs a resumed sweep into its own workspace (the stage's default --wandb-dir).
        return {**self.__dict__, "_queue": None, "_thread": None, "directory": None}

    def _submit(self, *op) -> None:
        if self._thread is None:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._work, name="wandb-trial-logger", daemon=True)
            self._thread.start()
        self._queue.put(op)

    def _work(self) -> None:
        runs: dict[str, Any] = {}
        while (op := self._queue.get()) is not None:
            kind, trial_id, payload = op
            try:
                if kind == "log":
                    if trial_id not in runs:
                        run = runs[trial_id] = init_wandb(
                            True,
                            project=self.project,
                            group=self.group,
                            job_type="trial",
                            name=trial_id,
                            config={**payload["config"], **self.extra},
                            directory=self.directory or workspace_root(),
                            silent=True,
                            run_id=trial_run_id(self.group, trial_id),
                        )
                        # The summary holds the trial's best value, not its last (W&B's sweep panels read it).
                        run.define_metric(self.best[0], summary=self.best[1])
                    runs[trial_id].log(payload["metrics"], step=payload["step"])
                elif kind == "finish" and trial_id in runs:
                    runs.pop(trial_id).finish(exit_code=payload)
            except Exception as e:  # tracking must never take a sweep down
                log.warning("W&B logging for trial %s failed: %s", trial_id, e)
        for run in runs.values():
            run.finish()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._submit(
            "log",
            trial.trial_id,
            {
                "config": dict(trial.config),
                "step": int(result["epoch"]),
                "metrics": {k: result[k] for k in self.metrics if k in result},
            },
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._submit("finish", trial.trial_id, 0)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._submit("finish", trial.trial_id, 1)

    def on_experiment_end(self, trials, **info):
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


def trial_loggers(
    tracking,
    *,
    group: str,
    directory: Path,
    extra_config: dict,
    metrics: tuple[str, ...] = TRIAL_METRICS,
    best: tuple[str, str] = ("val_accuracy", "max"),
) -> list:
    """The sweep's Tune callbacks for W&B: one `WandbTrialLogger`, or none when tracking.wandb is off."""
    if not tracking.wandb:
        return []
    log.info("W&B (%s): one run per trial in group %s", wandb_mode(), group)
    return [
        WandbTrialLogger(
            project=tracking.project,
            group=group,
            directory=Path(directory).resolve(),
            extra_config=extra_config,
            metrics=metrics,
            best=best,
        )
    ]


def epoch_logger(run, epochs: int, shown: tuple[str, ...]):
    """An `on_epoch` callback for a final training: one line per epoch, and the epoch's metrics on the W&B run."""

    def on_epoch(m: dict) -> None:
        values = "  ".join(f"{k} {m[k]:.4f}" for k in shown if k in m)  # some are only on some epochs
        log.info("epoch %3d/%d  %s  %.0f img/s", m["epoch"], epochs, values, m["images_per_s"])
        if run is not None:
            run.log({k: v for k, v in m.items() if k != "epoch"}, step=m["epoch"])

    return on_epoch


def log_classifier_run(run, metrics: dict, test: dict, data, *, model, log_models: bool) -> None:
    """Close the train stage's W&B run: test metrics, the confusion matrix and, if asked, the model artifact."""
    if run is None:
        return
    from grutune.metrics import confusion_matrix

    log_classifier_eval(
        run, metrics, confusion_matrix(data.y_test, test["pred"].numpy(), len(data.classes)), data.classes
    )
    if log_models:
        log_model(run, model, name=f"classifier-{data.name}", metadata={"data_hash": data.content_hash, **metrics})
    run.finish()


GAN_CLASS_COLUMNS = ("samples", "fid", "inception_score_ratio", "precision", "recall", "class_consistency")


def log_gan_run(run, metrics: dict, grid, by_class, data, *, model, log_models: bool) -> None:
    """Close the gan_eval stage's W&B run: the test scores, the sample grid, the grid by class (real images beside
    the samples of each class) with the per-class scores as a table and, if asked, the model artifact."""
    if run is None:
        return
    import wandb

    def image(a, caption=None):
        return wandb.Image(a.squeeze(-1) if a.shape[-1] == 1 else a, caption=caption)

    run.summary.update(metrics)
    logged = {"samples": image(grid)}
    if by_class is not None:
        drawn = "drawn for" if metrics.get("per_class_by") == "requested" else "the classifier assigns to"
        logged["samples_by_class"] = image(by_class, f"per class: real test images, then samples {drawn} it")
    if per_class := metrics.get("per_class"):
        columns = [c for c in GAN_CLASS_COLUMNS if any(c in row for row in per_class.values())]
        rows = [[name, *(row.get(c) for c in columns)] for name, row in per_class.items()]
        logged["per_class"] = wandb.Table(columns=["class", *columns], data=rows)
    run.log(logged)
    if log_models:
        log_model(run, model, name=f"gan-{data.name}", metadata={"data_hash": data.content_hash, **metrics})
    run.finish()


def log_classifier_eval(run, metrics: dict, confusion, classes) -> None:
    """Final classifier results on W&B: test metrics in the summary, the confusion matrix as a table."""
    import wandb

    run.summary.update({k: v for k, v in metrics.items() if not isinstance(v, dict)})
    run.summary.update({f"test_accuracy/{c}": a for c, a in metrics["per_class_accuracy"].items()})
    rows = [[classes[i], classes[j], int(confusion[i][j])] for i in range(len(classes)) for j in range(len(classes))]
    run.log({"confusion_matrix": wandb.Table(columns=["actual", "predicted", "count"], data=rows)})


def log_sweep_summary(
    enabled: bool,
    *,
    project: str,
    sweep_id: str,
    directory,
    config: dict,
    trials: list[dict],
    summary: dict,
    best: dict,
) -> None:
    """One run per sweep holding the table of all its trials, its counts and its best config."""
    run = init_wandb(
        enabled,
        project=project,
        group=sweep_id,
        job_type="sweep",
        name=f"sweep-{sweep_id}",
        config=config,
        directory=directory,
        silent=True,
    )
    if run is None:
        return
    import wandb

    columns = list(trials[0])
    run.log({"trials_table": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in trials])})
    run.summary.update(
        {**summary, "best_trial": best["trial_id"], **{f"best/{k}": v for k, v in best["config"].items()}}
    )
    run.finish()


def log_model(run, path, *, name: str, metadata: dict) -> None:
    """The checkpoint as a W&B model artifact (only with tracking.log_models: uploads can be large)."""
    import wandb

    artifact = wandb.Artifact(name, type="model", metadata=metadata)
    artifact.add_file(str(path))
    run.log_artifact(artifact)
