"""Stage `gan_eval`: score the gan stage's generator on the test split, and draw a grid of its samples.

    python pipeline/gan_eval.py data/prepared/mnist.npz models/mnist/classifier.pt models/gan.pt \
        --metrics metrics/gan.json --samples metrics/gan_samples.png --class-samples metrics/gan_samples_by_class.png

FID, Inception Score, precision and recall (Kynkaanniemi et al., 2019) and class shares of gan.eval_samples
generated images, in the features and class probabilities of the classifier the `train` stage trained on gan.dataset
(nothing is downloaded), next to the same scores for real images. A separate stage, so that changing
gan.eval_samples scores the GAN again without training it again. On a Ray cluster (RAY_ADDRESS, or `ray start` on
this node) the scoring runs there, on a worker with gan.resources.
"""

import argparse
from pathlib import Path

import torch

from grutune.cluster import join_cluster
from grutune.config import load_params
from grutune.data import load_prepared
from grutune.errors import cli
from grutune.gan import class_grid, evaluate_gan, load_generator
from grutune.io import add_output_options, write_json, write_png
from grutune.remote import placement
from grutune.remote_gan import evaluate_gan_on
from grutune.tracking import init_wandb, log_gan_run
from grutune.training import Split, load_classifier, pick_device


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prepared", type=Path, help="the prepare stage's .npz for gan.dataset")
    ap.add_argument("classifier", type=Path, help="the train stage's classifier for gan.dataset")
    ap.add_argument("generator", type=Path, help="the gan stage's checkpoint")
    add_output_options(
        ap,
        {
            "metrics": "test FID, Inception Score, precision and recall (JSON)",
            "samples": "a grid of samples (PNG)",
            "class_samples": "per class, real test images beside the samples the classifier assigns to it (PNG)",
        },
    )
    args = ap.parse_args()
    params = load_params()
    p = params.gan
    data = load_prepared(args.prepared, name=p.dataset)
    on_cluster = join_cluster()
    device = torch.device("cpu") if on_cluster else pick_device()  # on a cluster, the models travel from here
    clf, _ = load_classifier(args.classifier, data.content_hash, device)
    G, ckpt = load_generator(args.generator, data.content_hash, device)
    if on_cluster:
        where = placement(p.resources, key="gan", storage=params.gan_search.storage, max_failures=p.max_failures)
        metrics, grid, by_class = evaluate_gan_on(where, G, clf, data, eval_samples=p.eval_samples, seed=params.seed)
    else:
        metrics, grid = evaluate_gan(G, clf, data, eval_samples=p.eval_samples, seed=params.seed, device=device)
        by_class = class_grid(G, clf, Split.of(data.x_test, data.y_test, device), seed=params.seed)
    metrics = {**metrics, "best_epoch": ckpt["epoch"], "val_fid": ckpt["val_fid"]}
    write_json(args.metrics, metrics)
    write_png(args.samples, grid)
    write_png(args.class_samples, by_class)
    run = init_wandb(
        params.tracking.wandb,
        project=params.tracking.project,
        group=ckpt.get("sweep_id", f"gan-{data.name}"),
        job_type="gan_eval",
        name=f"gan-eval-{data.name}",
        directory=args.wandb_dir,
        config={"eval_samples": p.eval_samples, "generator": G.kwargs, "data_hash": data.content_hash},
    )
    log_gan_run(run, metrics, grid, data, model=args.generator, log_models=params.tracking.log_models)
    print(
        f"fid {metrics['fid']:.3f} (real train vs test: {metrics['reference_fid_train_vs_test']:.3f})  "
        f"inception_score {metrics['inception_score']:.3f} "
        f"(real test: {metrics['reference_inception_score_test']:.3f})  precision {metrics['precision']:.3f} "
        f"recall {metrics['recall']:.3f} (real: {metrics['reference_precision_train_vs_test']:.3f}, "
        f"{metrics['reference_recall_train_vs_test']:.3f})  -> {args.metrics}, {args.samples}"
    )


if __name__ == "__main__":
    main()
