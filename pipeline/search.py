"""Stage `search@<dataset>`: a Ray Tune + Optuna (TPE) + ASHA sweep over GRU classifiers.

    python pipeline/search.py mnist data/prepared/mnist.npz search/mnist metrics/mnist/search.json

Joins the Ray cluster in RAY_ADDRESS, or starts a local Ray. Writes best.yaml and trials.csv into the output
directory, and the sweep's counts to the metrics file. Tune's own state lives in .grutune/ (git-ignored), outside
the stage's outputs, which DVC deletes before a stage runs.
"""

import argparse
from pathlib import Path

from grutune.config import load_params
from grutune.data import load_prepared
from grutune.errors import cli
from grutune.search import init_ray, run_search, sweep_id
from grutune.tracking import WandbTrialLogger, log_sweep_summary, wandb_mode, write_sweep_outputs


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("prepared", type=Path, help="the prepare stage's .npz")
    ap.add_argument("out_dir", type=Path, help="receives best.yaml and trials.csv")
    ap.add_argument("metrics", type=Path, help="search metrics JSON, for DVC")
    ap.add_argument("--state-dir", type=Path, default=Path(".grutune/sweeps"),
                    help="where Tune keeps the sweep's state (default: %(default)s)")
    ap.add_argument("--wandb-dir", type=Path, default=Path("."), help="W&B writes its runs under DIR/wandb")
    args = ap.parse_args()
    params = load_params()
    data = load_prepared(args.prepared)
    remote = init_ray()
    sid = sweep_id(params, data.name, data.content_hash)
    callbacks = []
    if params.tracking.wandb:
        callbacks.append(WandbTrialLogger(project=params.tracking.project, group=sid, directory=args.wandb_dir.resolve(),
                                          extra_config={"dataset": data.name, "data_hash": data.content_hash,
                                                        "sweep_id": sid}))
        print(f"W&B ({wandb_mode()}): one run per trial in group {sid}")
    result = run_search(params, data, state_dir=args.state_dir, callbacks=callbacks, remote=remote)

    write_sweep_outputs(result, args.out_dir, args.metrics)
    log_sweep_summary(params.tracking.wandb, project=params.tracking.project, sweep_id=sid,
                      directory=args.wandb_dir.resolve(), trials=result.trials, summary=result.summary, best=result.best,
                      config={"dataset": data.name, "data_hash": data.content_hash, "sweep_id": sid,
                              **params.search.model_dump(exclude={"space"}), "space": str(params.search.space)})
    b = result.best
    cfg = ", ".join(f"{k}={v}" for k, v in b["config"].items())
    print(f"best of {result.summary['trials']} trials ({result.summary['completed']} completed, "
          f"{result.summary['pruned']} pruned, {result.summary['failed']} failed, {result.summary['errored']} errored): "
          f"{b['trial_id']} val_accuracy={b['val_accuracy']:.4f} after {b['epochs']} epochs ({cfg})")
    print(f"wrote {args.out_dir / 'best.yaml'}, {args.out_dir / 'trials.csv'}, {args.metrics} and its _progress files")


if __name__ == "__main__":
    main()
