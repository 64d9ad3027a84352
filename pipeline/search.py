"""Stage `search@<dataset>`: a Ray Tune + Optuna (TPE) + ASHA sweep over recurrent classifiers.

    python pipeline/search.py mnist data/prepared/mnist.npz --best search/mnist/best.yaml ... (see dvc.yaml)

Joins the Ray cluster in RAY_ADDRESS (or one running on this machine), else starts a local Ray. Writes the best
config (with several objectives: the Pareto front's point that search.pick picks), the Pareto front, the trials
table, the sweep's figures (a few for DVC's metrics, the rest beside them) and its best-so-far curves where dvc.yaml
says. Tune's own state lives in .grutune/ (git-ignored), outside the stage's outputs, which DVC deletes before a stage
runs.
"""

import argparse
from pathlib import Path

from grutune.cluster import init_ray
from grutune.config import load_params
from grutune.data import DATASETS, load_prepared
from grutune.errors import cli
from grutune.io import METRICS, add_sweep_arguments, write_csv, write_sweep_outputs
from grutune.sweep.results import describe
from grutune.tracking import log_sweep_summary, trial_loggers
from grutune.trials.classifier import classifier_sweep, run_classifier_sweep


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=list(DATASETS), help="the dataset the prepared file must hold")
    ap.add_argument("prepared", type=Path, help="the prepare stage's .npz")
    add_sweep_arguments(ap, {"pareto": "the Pareto front of search.objectives, the picked point marked (CSV)"})
    args = ap.parse_args()
    params = load_params()
    data = load_prepared(args.prepared, name=args.dataset)
    remote = init_ray()
    sid = classifier_sweep(params, data).sweep_id
    lineage = {"dataset": data.name, "data_hash": data.content_hash, "sweep_id": sid}
    callbacks = trial_loggers(params.tracking, group=sid, directory=args.wandb_dir, extra_config=lineage)
    result = run_classifier_sweep(params, data, state_dir=args.state_dir, callbacks=callbacks, remote=remote)
    write_sweep_outputs(result, args, METRICS["search"])
    write_csv(args.pareto, result.front, fieldnames=list(result.front[0]))
    log_sweep_summary(
        params.tracking.wandb,
        project=params.tracking.project,
        sweep_id=sid,
        directory=args.wandb_dir.resolve(),
        trials=result.trials,
        summary=result.summary,
        best=result.best,
        config={**lineage, **params.search.model_dump(exclude={"space"}), "space": str(params.search.space)},
    )
    print(describe(result))
    if len(params.search.objectives) > 1:
        print(
            f"Pareto front of {', '.join(params.search.objectives)}: {len(result.front)} trials; picked "
            f"{result.best['trial_id']} by {result.best['reason']}"
        )
    print(
        f"wrote {args.best}, {args.trials}, {args.pareto}, {args.metrics}, {args.details}, {args.progress} and "
        f"{args.progress_time}"
    )


if __name__ == "__main__":
    main()
