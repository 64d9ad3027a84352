"""Stage `gan_eval`: score the gan stage's generator on the test split, and draw a grid of its samples.

    python pipeline/gan_eval.py data/prepared/mnist.npz models/mnist/classifier.pt models/gan.pt \
        --metrics metrics/gan.json --details metrics/gan_details.json --samples metrics/gan_samples.png \
        --class-samples metrics/gan_samples_by_class.png

FID, Inception Score, precision and recall (Kynkaanniemi et al., 2019) and class shares of gan.eval_samples
generated images, in the features and class probabilities of the classifier the `train` stage trained on gan.dataset
(nothing is downloaded), next to the same scores for real images: FID and the Inception Score over the real images'
for DVC, the rest beside them. The details also hold the same scores per class (`per_class`: of the samples drawn
for the class by a class-conditional generator, else of those the classifier assigns to it) and, for a conditional
generator, its class consistency (the share of samples drawn for class c that the classifier assigns to c), overall
and per class; the class grid then shows, for each class, the samples drawn for it. A separate stage, so that
changing gan.eval_samples scores the GAN again without training it again. On a Ray cluster (RAY_ADDRESS, or `ray
start` on this node) the scoring runs there, on a worker with gan.resources.
"""

import argparse
from pathlib import Path

from grutune.config import load_params
from grutune.data import load_prepared
from grutune.errors import cli
from grutune.final.checkpoints import load_classifier
from grutune.final.runner import runner_for
from grutune.gan.final import GanEvalJob, load_generator, portable
from grutune.io import METRICS, add_output_options, write_metrics, write_png
from grutune.tracking import init_wandb, log_gan_run


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prepared", type=Path, help="the prepare stage's .npz for gan.dataset")
    ap.add_argument("classifier", type=Path, help="the train stage's classifier for gan.dataset")
    ap.add_argument("generator", type=Path, help="the gan stage's checkpoint")
    add_output_options(
        ap,
        {
            "metrics": "test FID and Inception Score over the real images', for DVC (JSON)",
            "details": "the rest of the scores: Inception Score, precision, recall, class shares, references (JSON)",
            "samples": "a grid of samples (PNG)",
            "class_samples": "per class, real test images beside the samples drawn for it (a conditional generator) "
            "or that the classifier assigns to it (PNG)",
        },
    )
    args = ap.parse_args()
    params = load_params()
    p = params.gan
    data = load_prepared(args.prepared, name=p.dataset)
    runner = runner_for(p, key="gan", storage=params.gan_search.storage)
    clf, _ = load_classifier(args.classifier, data.content_hash)  # on the CPU: the job takes them where it runs
    G, ckpt = load_generator(args.generator, data.content_hash)
    job = GanEvalJob(portable(G), portable(clf), data, eval_samples=p.eval_samples, seed=params.seed)
    scores = runner.run(job)
    is_ratio = scores.metrics["inception_score"] / scores.metrics["reference_inception_score_test"]
    metrics = {
        **scores.metrics,
        "inception_score_ratio": is_ratio,
        "best_epoch": ckpt["epoch"],
        "val_fid": ckpt["val_fid"],
    }
    write_metrics(metrics, METRICS["gan"], metrics=args.metrics, details=args.details)
    write_png(args.samples, scores.grid)
    write_png(args.class_samples, scores.by_class)
    run = init_wandb(
        params.tracking.wandb,
        project=params.tracking.project,
        group=ckpt.get("sweep_id", f"gan-{data.name}"),
        job_type="gan_eval",
        name=f"gan-eval-{data.name}",
        directory=args.wandb_dir,
        config={"eval_samples": p.eval_samples, "generator": G.kwargs, "data_hash": data.content_hash},
    )
    log_gan_run(
        run, metrics, scores.grid, scores.by_class, data, model=args.generator, log_models=params.tracking.log_models
    )
    print(
        f"fid {metrics['fid']:.3f} (real train vs test: {metrics['reference_fid_train_vs_test']:.3f})  "
        f"inception_score {metrics['inception_score']:.3f} "
        f"(real test: {metrics['reference_inception_score_test']:.3f})  precision {metrics['precision']:.3f} "
        f"recall {metrics['recall']:.3f} (real: {metrics['reference_precision_train_vs_test']:.3f}, "
        f"{metrics['reference_recall_train_vs_test']:.3f})"
        + (f"  class consistency {metrics['class_consistency']:.3f}" if "class_consistency" in metrics else "")
        + f"  -> {args.metrics}, {args.details}, {args.samples}"
    )


if __name__ == "__main__":
    main()
