"""Stage `train@<dataset>`: retrain the sweep's best config on train+val, then evaluate it on the test split.

    python pipeline/train.py mnist data/prepared/mnist.npz search/mnist/best.yaml models/mnist/classifier.pt metrics/mnist

Writes the checkpoint (a dict loaded with weights_only=True) and, in the metrics directory, classifier.json,
confusion.csv (one row per test image, for `dvc plots`) and train_log.csv (per-epoch curves).
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from grutune.config import load_params, read_best
from grutune.data import load_prepared
from grutune.errors import cli
from grutune.io import write_json
from grutune.metrics import confusion_matrix, per_class_accuracy
from grutune.models import GRUClassifier
from grutune.tracking import init_wandb, log_classifier_eval, log_model, write_csv
from grutune.training import Split, evaluate, fit, pick_device, save_checkpoint


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("prepared", type=Path)
    ap.add_argument("best", type=Path, help="the search stage's best.yaml")
    ap.add_argument("model_out", type=Path)
    ap.add_argument("metrics_dir", type=Path)
    ap.add_argument("--wandb-dir", type=Path, default=Path("."))
    args = ap.parse_args()
    params = load_params()
    data = load_prepared(args.prepared)
    best, hp = read_best(args.best)
    device = pick_device()
    torch.manual_seed(params.seed)
    model = GRUClassifier(in_shape=data.x_train.shape[1:], num_classes=len(data.classes),
                          **hp.model_kwargs()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=hp.lr)
    train = Split.of(np.concatenate([data.x_train, data.x_val]), np.concatenate([data.y_train, data.y_val]), device)
    test = Split.of(data.x_test, data.y_test, device)
    epochs = params.train.epochs
    run = init_wandb(params.tracking.wandb, project=params.tracking.project, group=best.get("sweep_id", data.name),
                     job_type="train", name=f"train-{data.name}", directory=args.wandb_dir,
                     config={**hp.model_dump(), "epochs": epochs, "dataset": data.name,
                             "data_hash": data.content_hash})
    print(f"training {hp.model_dump()} on {len(train)} images of {data.name} for {epochs} epochs on {device}")

    def on_epoch(m: dict) -> None:
        print(f"epoch {m['epoch']:>3}/{epochs}  train_loss {m['train_loss']:.4f}  "
              f"train_accuracy {m['train_accuracy']:.4f}  {m['images_per_s']:.0f} img/s", flush=True)
        if run is not None:
            run.log({k: m[k] for k in ("train_loss", "train_accuracy", "lr", "images_per_s")}, step=m["epoch"])

    history = fit(model, opt, train, None, epochs=epochs, batch_size=hp.batch_size, seed=params.seed,
                  on_epoch=on_epoch)
    ev = evaluate(model, test)
    y_true, y_pred = data.y_test, ev["pred"].numpy()
    k = len(data.classes)
    per_class = per_class_accuracy(y_true, y_pred, k)
    metrics = {"test_accuracy": ev["accuracy"], "test_loss": ev["loss"],
               "per_class_accuracy": {c: float(a) for c, a in zip(data.classes, per_class)}}

    save_checkpoint(args.model_out, model, config=hp.model_dump(), epoch=epochs, dataset=data.name,
                    data_hash=data.content_hash, classes=list(data.classes))
    write_json(args.metrics_dir / "classifier.json", metrics)
    write_csv(args.metrics_dir / "confusion.csv",
              ({"actual": data.classes[t], "predicted": data.classes[p]} for t, p in zip(y_true, y_pred)),
              fieldnames=["actual", "predicted"])
    write_csv(args.metrics_dir / "train_log.csv", history,
              fieldnames=["epoch", "train_loss", "train_accuracy", "lr", "images_per_s"])
    if run is not None:
        log_classifier_eval(run, metrics, confusion_matrix(y_true, y_pred, k), data.classes)
        if params.tracking.log_models:
            log_model(run, args.model_out, name=f"classifier-{data.name}",
                      metadata={"data_hash": data.content_hash, **metrics})
        run.finish()
    print(f"test_accuracy {ev['accuracy']:.4f}  test_loss {ev['loss']:.4f}  -> {args.model_out}, "
          f"{args.metrics_dir / 'classifier.json'}")


if __name__ == "__main__":
    main()
