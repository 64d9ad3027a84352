"""Stage `train@<dataset>`: retrain the sweep's best config on train+val, then evaluate it on the test split.

    python pipeline/train.py mnist data/prepared/mnist.npz search/mnist/best.yaml models/mnist/classifier.pt \
        --metrics metrics/mnist/classifier.json --details metrics/mnist/classifier_details.json \
        --confusion metrics/mnist/confusion.csv --log metrics/train_log/mnist.csv

Writes the checkpoint (a dict loaded with weights_only=True), the test metrics (accuracy and the model's parameter
count for DVC; beside them the loss, per-class accuracy, its latency measured where it trained, and which point of the
sweep's Pareto front it is and why), the confusion pairs (one row per test image, for `dvc plots`) and the per-epoch
curves. On a Ray cluster (RAY_ADDRESS, or `ray start` on this node) the training runs there, on a worker with
train.resources (a GPU node the autoscaler adds), restarting from its last epoch after a lost node; the outputs are
written here all the same. Without one, it trains in this process.
"""

import argparse
from pathlib import Path

from grutune.config import load_params, read_best
from grutune.data import DATASETS, load_prepared
from grutune.errors import cli
from grutune.final.checkpoints import save_checkpoint
from grutune.final.classifier import ClassifierJob, test_metrics
from grutune.final.runner import runner_for
from grutune.io import add_output_options, write_classifier_outputs
from grutune.tracking import epoch_logger, init_wandb, log_classifier_run


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=list(DATASETS), help="the dataset the prepared file must hold")
    ap.add_argument("prepared", type=Path)
    ap.add_argument("best", type=Path, help="the search stage's best.yaml")
    ap.add_argument("model_out", type=Path)
    add_output_options(
        ap,
        {
            "metrics": "test accuracy and parameter count, for DVC (JSON)",
            "details": "the rest of the test metrics: loss, per-class accuracy, latencies, the pick (JSON)",
            "confusion": "(actual, predicted) per test image (CSV)",
            "log": "per-epoch training curves (CSV)",
        },
    )
    args = ap.parse_args()
    params = load_params()
    data = load_prepared(args.prepared, name=args.dataset)
    best, hp = read_best(args.best)
    epochs = params.train.epochs
    runner = runner_for(params.train, key="train", storage=params.search.storage)
    run = init_wandb(
        params.tracking.wandb,
        project=params.tracking.project,
        group=best.get("sweep_id", data.name),
        job_type="train",
        name=f"train-{data.name}",
        directory=args.wandb_dir,
        config={
            **hp.model_dump(),
            "epochs": epochs,
            "augment": params.train.augment,
            "dataset": data.name,
            "data_hash": data.content_hash,
        },
    )
    print(
        f"training {hp.model_dump()} on {len(data.y_train) + len(data.y_val)} images of {data.name} for {epochs} "
        f"epochs on {runner}{' with augmentation' if params.train.augment else ''}"
    )
    job = ClassifierJob(hp, data, epochs=epochs, seed=params.seed, augment=params.train.augment)
    trained = runner.run(job, on_epoch=epoch_logger(run, epochs, job.shown))
    final, cost = trained.final, trained.cost  # the deployed model's size and speed, where it trained
    metrics = {
        **test_metrics(final.test, data),
        **cost,
        "latency_hardware": trained.hardware,
        "picked": {
            "trial_id": best["trial_id"],
            "rule": best.get("pick", "most_accurate"),
            "reason": best.get("reason", "the sweep's best trial (search.objectives: val_accuracy)"),
        },
    }
    save_checkpoint(
        args.model_out,
        final.model,
        config=hp.model_dump(),
        epoch=epochs,
        dataset=data.name,
        data_hash=data.content_hash,
        classes=list(data.classes),
    )
    write_classifier_outputs(
        metrics, final, data, metrics_path=args.metrics, details=args.details, confusion=args.confusion, log=args.log
    )
    log_classifier_run(run, metrics, final.test, data, model=args.model_out, log_models=params.tracking.log_models)
    print(
        f"test_accuracy {metrics['test_accuracy']:.4f}  test_loss {metrics['test_loss']:.4f}  "
        f"params {cost['params']:,}  "
        f"latency {cost['latency_ms']:.3f} ms/image at batch 1, {cost['latency_batch_ms']:.3f} at batch 256 "
        f"({metrics['latency_hardware']})  -> {args.model_out}, {args.metrics}, {args.details}"
    )


if __name__ == "__main__":
    main()
