"""Stage `gan_search`: a Ray Tune + Optuna (TPE) + ASHA sweep over GANs on `gan.dataset`, minimising FID.

    python pipeline/gan_search.py data/prepared/mnist.npz models/mnist/classifier.pt search/gan metrics/gan_search.json

Searches the generator's GRU size and layers, the discriminator backbone and both learning rates (`gan_search.*`).
The FID is computed after every epoch in the feature space of the classifier the `train` stage trained on the same
dataset. A collapsed or diverged trial is stopped and counted as failed. Writes best.yaml and trials.csv into the
output directory, and the sweep's counts and best-so-far files beside the metrics file.
"""

import argparse
import hashlib
from pathlib import Path

from grutune.config import load_params
from grutune.data import load_prepared
from grutune.errors import GrutuneError, cli
from grutune.search import gan_sweep, init_ray, run_gan_search
from grutune.tracking import GAN_TRIAL_METRICS, WandbTrialLogger, log_sweep_summary, write_sweep_outputs
from grutune.training import load_checkpoint


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prepared", type=Path, help="the prepare stage's .npz for gan.dataset")
    ap.add_argument("classifier", type=Path, help="the train stage's classifier for gan.dataset")
    ap.add_argument("out_dir", type=Path, help="receives best.yaml and trials.csv")
    ap.add_argument("metrics", type=Path, help="sweep metrics JSON, for DVC")
    ap.add_argument("--state-dir", type=Path, default=Path(".grutune/sweeps"),
                    help="where Tune keeps the sweep's state unless gan_search.storage is set (default: %(default)s)")
    ap.add_argument("--wandb-dir", type=Path, default=Path("."), help="W&B writes its runs under DIR/wandb")
    args = ap.parse_args()
    params = load_params()
    data = load_prepared(args.prepared)
    if data.name != params.gan.dataset:
        raise GrutuneError(f"{args.prepared} holds {data.name!r} but gan.dataset is {params.gan.dataset!r}")
    classifier = load_checkpoint(args.classifier)
    if classifier.get("data_hash") != data.content_hash:
        raise GrutuneError(f"{args.classifier} was trained on other data than {args.prepared}: rerun the train stage")
    classifier_hash = "sha256:" + hashlib.sha256(args.classifier.read_bytes()).hexdigest()
    remote = init_ray()
    callbacks = []
    if params.tracking.wandb:
        callbacks.append(WandbTrialLogger(project=params.tracking.project,
                                          group=gan_sweep(params, data, classifier_hash).sweep_id,
                                          directory=args.wandb_dir.resolve(), metrics=GAN_TRIAL_METRICS,
                                          extra_config={"dataset": data.name, "data_hash": data.content_hash,
                                                        "classifier_hash": classifier_hash}))
    result = run_gan_search(params, data, classifier, classifier_hash, state_dir=args.state_dir,
                            callbacks=callbacks, remote=remote)
    write_sweep_outputs(result, args.out_dir, args.metrics)
    log_sweep_summary(params.tracking.wandb, project=params.tracking.project, sweep_id=result.sweep_id,
                      directory=args.wandb_dir.resolve(), trials=result.trials, summary=result.summary,
                      best=result.best, config={"dataset": data.name, "data_hash": data.content_hash,
                                                "sweep_id": result.sweep_id, "classifier_hash": classifier_hash})
    s, b = result.summary, result.best
    cfg = ", ".join(f"{k}={v}" for k, v in b["config"].items())
    print(f"best of {s['trials']} GAN trials ({s['completed']} completed, {s['pruned']} pruned, {s['failed']} failed, "
          f"{s['errored']} errored): {b['trial_id']} fid={b['fid']:.3f} after {b['epochs']} epochs ({cfg})")


if __name__ == "__main__":
    main()
