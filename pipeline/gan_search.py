"""Stage `gan_search`: a Ray Tune + Optuna (TPE) + ASHA sweep over GANs on `gan.dataset`, minimising FID.

    python pipeline/gan_search.py data/prepared/mnist.npz models/mnist/classifier.pt --best search/gan/best.yaml ...

Searches the generator's GRU size and layers, the discriminator backbone and both learning rates (`gan_search.*`).
The FID is computed after every epoch in the feature space of the classifier the `train` stage trained on the same
dataset. A collapsed or diverged trial is stopped and counted as failed. Outputs go where dvc.yaml says.
"""

import argparse
import hashlib
from pathlib import Path

from grutune.cluster import init_ray
from grutune.config import load_params
from grutune.data import load_prepared
from grutune.errors import cli
from grutune.final.checkpoints import load_classifier
from grutune.io import METRICS, add_sweep_arguments, write_sweep_outputs
from grutune.sweep.results import describe
from grutune.tracking import GAN_TRIAL_METRICS, log_sweep_summary, trial_loggers
from grutune.trials.gan import gan_sweep, run_gan_sweep


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prepared", type=Path, help="the prepare stage's .npz for gan.dataset")
    ap.add_argument("classifier", type=Path, help="the train stage's classifier for gan.dataset")
    add_sweep_arguments(ap)
    args = ap.parse_args()
    params = load_params()
    data = load_prepared(args.prepared, name=params.gan.dataset)
    _, classifier = load_classifier(args.classifier, data.content_hash)
    classifier_hash = "sha256:" + hashlib.sha256(args.classifier.read_bytes()).hexdigest()
    remote = init_ray()
    sid = gan_sweep(params, data, classifier_hash).sweep_id
    lineage = {"dataset": data.name, "data_hash": data.content_hash, "classifier_hash": classifier_hash}
    callbacks = trial_loggers(
        params.tracking,
        group=sid,
        directory=args.wandb_dir,
        extra_config=lineage,
        metrics=GAN_TRIAL_METRICS,
        best=("fid", "min"),
    )
    result = run_gan_sweep(
        params, data, classifier, classifier_hash, state_dir=args.state_dir, callbacks=callbacks, remote=remote
    )
    write_sweep_outputs(result, args, METRICS["gan_search"])
    log_sweep_summary(
        params.tracking.wandb,
        project=params.tracking.project,
        sweep_id=sid,
        directory=args.wandb_dir.resolve(),
        trials=result.trials,
        summary=result.summary,
        best=result.best,
        config={**lineage, "sweep_id": sid},
    )
    print(describe(result, "GAN trials"))


if __name__ == "__main__":
    main()
