"""Stage `gan`: train the GAN sweep's best config and keep its epoch with the best validation FID.

    python pipeline/gan.py data/prepared/mnist.npz models/mnist/classifier.pt search/gan/best.yaml models/gan.pt \
        --log metrics/gan_log.csv

The dataset is `gan.dataset` in params.yaml; the generator kind, architecture and learning rates come from
gan_search's best.yaml, and the training recipe (loss, EMA, R1) from params.yaml's gan section. Every
gan.eval_every epochs the generator is scored on gan_search.eval_samples validation images, by FID in the features
of the classifier the `train` stage trained on that dataset. The epoch with the lowest FID among those not collapsed
(diversity at least gan_search.min_diversity) is kept; if every one collapsed, the stage fails and writes nothing.
Writes the kept generator (EMA weights when gan.ema_decay > 0) and its discriminator, and the per-epoch losses and
validation FID. The gan_eval stage scores it on the test split. On a Ray cluster (RAY_ADDRESS, or `ray start` on
this node) the training runs there, on a worker with gan.resources, restarting from its last epoch after a lost node.
"""

import argparse
from pathlib import Path

from grutune.config import load_params, read_best
from grutune.data import load_prepared
from grutune.errors import cli
from grutune.final.checkpoints import load_classifier, save_checkpoint
from grutune.final.runner import runner_for
from grutune.gan import Recipe
from grutune.gan.final import FinalGanSettings, GanJob, portable
from grutune.io import add_output_options, write_csv
from grutune.objectives import GanTrialConfig
from grutune.tracking import epoch_logger, init_wandb


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prepared", type=Path, help="the prepare stage's .npz for gan.dataset")
    ap.add_argument("classifier", type=Path, help="the train stage's classifier for gan.dataset")
    ap.add_argument("best", type=Path, help="the gan_search stage's best.yaml")
    ap.add_argument("model_out", type=Path)
    add_output_options(ap, {"log": "per-epoch losses and validation FID (CSV)"})
    args = ap.parse_args()
    params = load_params()
    p = params.gan
    best, hp = read_best(args.best, GanTrialConfig)
    data = load_prepared(args.prepared, name=p.dataset)
    runner = runner_for(p, key="gan", storage=params.gan_search.storage)
    clf, _ = load_classifier(args.classifier, data.content_hash)  # on the CPU: the job takes it where it runs
    group = best.get("sweep_id", f"gan-{data.name}")  # the final GAN's W&B runs sit with its sweep's trials
    run = init_wandb(
        params.tracking.wandb,
        project=params.tracking.project,
        group=group,
        job_type="gan",
        name=f"gan-{data.name}",
        directory=args.wandb_dir,
        config={**p.model_dump(), **hp.model_dump(), "data_hash": data.content_hash},
    )
    kind = f"class-conditional {hp.generator}" if hp.conditional else hp.generator
    print(
        f"training the {kind} GAN on {min(p.train_subset or len(data.y_train), len(data.y_train))} "
        f"images/epoch of {data.name} for {p.epochs} epochs on {runner}"
    )
    job = GanJob(hp, Recipe.of(p), FinalGanSettings.of(params), classifier=portable(clf), data=data)
    trained = runner.run(job, on_epoch=epoch_logger(run, p.epochs, job.shown))
    save_checkpoint(
        args.model_out,
        trained.G,
        discriminator=trained.D.state_dict(),
        discriminator_kwargs=dict(trained.D.kwargs),
        epoch=trained.best_epoch,
        val_fid=trained.val_fid,
        dataset=data.name,
        classes=list(data.classes),  # what `python -m grutune.sample --class NAME` takes
        data_hash=data.content_hash,
        sweep_id=group,
    )
    write_csv(args.log, trained.history, fieldnames=list(dict.fromkeys(k for m in trained.history for k in m)))
    if run is not None:
        run.summary.update({"best_epoch": trained.best_epoch, "best_val_fid": trained.val_fid})
        run.finish()
    print(f"kept epoch {trained.best_epoch} (validation FID {trained.val_fid:.3f}) -> {args.model_out}")


if __name__ == "__main__":
    main()
