"""Stage `gan`: train the GAN sweep's best config, keep its epoch with the best validation FID, and score it.

    python pipeline/gan.py data/prepared/mnist.npz models/mnist/classifier.pt search/gan/best.yaml models/gan.pt \
        --metrics metrics/gan.json --log metrics/gan_log.csv --samples metrics/gan_samples.png

The dataset is `gan.dataset` in params.yaml; the architecture and learning rates come from gan_search's best.yaml.
FID and Inception Score use the features and class probabilities of the classifier the `train` stage trained on
that dataset (nothing is downloaded). Every gan.eval_every epochs the generator is scored on the validation split;
the epoch with the lowest FID among those not collapsed (diversity at least gan_search.min_diversity) is kept, and
if every one collapsed the stage fails and writes nothing. Writes the generator (EMA weights when gan.ema_decay > 0)
and discriminator checkpoint, the test scores, the per-epoch losses and validation FID, and a grid of samples.
"""

import argparse
from pathlib import Path

from grutune.config import GanTrialConfig, load_params, read_best
from grutune.data import load_prepared
from grutune.errors import cli
from grutune.gan import Recipe, train_and_score
from grutune.io import add_output_options, write_csv, write_json, write_png
from grutune.tracking import epoch_logger, init_wandb, log_gan_run
from grutune.training import load_classifier, pick_device, save_checkpoint


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prepared", type=Path, help="the prepare stage's .npz for gan.dataset")
    ap.add_argument("classifier", type=Path, help="the train stage's classifier for gan.dataset")
    ap.add_argument("best", type=Path, help="the gan_search stage's best.yaml")
    ap.add_argument("model_out", type=Path)
    add_output_options(ap, {"metrics": "FID and Inception Score (JSON)", "log": "per-epoch losses (CSV)",
                            "samples": "a grid of samples (PNG)"})
    args = ap.parse_args()
    params = load_params()
    p = params.gan
    _, hp = read_best(args.best, GanTrialConfig)
    data = load_prepared(args.prepared, name=p.dataset)
    device = pick_device()
    clf, _ = load_classifier(args.classifier, data.content_hash, device)
    run = init_wandb(params.tracking.wandb, project=params.tracking.project, group=f"gan-{data.name}",
                     job_type="gan", name=f"gan-{data.name}", directory=args.wandb_dir,
                     config={**p.model_dump(), **hp.model_dump(), "data_hash": data.content_hash})
    print(f"training the GAN on {min(p.train_subset or len(data.y_train), len(data.y_train))} images/epoch of "
          f"{data.name} for {p.epochs} epochs on {device}")
    final = train_and_score(hp, Recipe.of(p), clf, data, epochs=p.epochs, noise_dim=p.noise_dim,
                            subset=p.train_subset, eval_samples=p.eval_samples, eval_every=p.eval_every,
                            min_diversity=params.gan_search.min_diversity, seed=params.seed, device=device,
                            progress=True,
                            on_epoch=epoch_logger(run, p.epochs, ("d_loss", "g_loss", "val_fid", "diversity")))
    save_checkpoint(args.model_out, final.G, discriminator=final.D.state_dict(),
                    discriminator_kwargs=dict(final.D.kwargs), epoch=final.metrics["best_epoch"], dataset=data.name,
                    data_hash=data.content_hash)
    write_json(args.metrics, final.metrics)
    write_csv(args.log, final.history, fieldnames=list(dict.fromkeys(k for m in final.history for k in m)))
    write_png(args.samples, final.grid)
    log_gan_run(run, final, data, model=args.model_out, log_models=params.tracking.log_models)
    m = final.metrics
    print(f"fid {m['fid']:.3f} (real train vs test: {m['reference_fid_train_vs_test']:.3f})  inception_score "
          f"{m['inception_score']:.3f} (real test: {m['reference_inception_score_test']:.3f})  -> {args.model_out}, "
          f"{args.metrics}")


if __name__ == "__main__":
    main()
