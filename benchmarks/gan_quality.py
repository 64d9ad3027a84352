"""GAN quality per generator kind and per stabiliser, and class-conditional against unconditional, on real
Fashion-MNIST: IS and FID next to the real-data references.

The conditional benchmark (issue 37): params.yaml's full budget, the GAN's config unconditional against the same config
class-conditional (gan_search.space.conditional), 3 seeds each; resumable per seed and by epoch within one
(40-50 minutes a run alone on 2 CPU cores; on the GPU where torch sees one):

    python benchmarks/gan_quality.py --conditional

    python benchmarks/gan_quality.py --conditional --smoke-test   # the same code at a tiny budget, a few minutes
    python benchmarks/gan_quality.py [--budget laptop|long] [--only deconv,...]
    python benchmarks/gan_quality.py --budget laptop --variants   # rows_conv with more steps or faster rates
    python benchmarks/gan_quality.py --budget full   # the final GAN at params.yaml's budget; resumes by epoch
    python benchmarks/gan_quality.py --budget full --set gan.epochs=8 --set gan.lr_schedule=cosine --name NAME

Every run trains one GAN config with `gan.final.train_best` and `score_final` (the final `gan` stage's code, which
keeps the epoch with the best validation FID) and scores it on the test split in the feature space of one classifier,
trained once and cached under benchmarks/.data/. The baseline is the same code on real images: IS of real test images
and FID of real train against real test images. The budgets are the README laptop command's (3 epochs of 20,000
images, 2,000 scored samples) and a longer one (8 epochs of the whole train split, 10,000 scored samples).

--budget full trains only the measured best config (the first of gan_search.points_to_evaluate, class-conditional
where gan_search.space.conditional fixes it so, as the gan stage trains it) with params.yaml's gan section (16
epochs of the whole train split on a cosine, validation FID on gan_search.eval_samples images every epoch, 10,000
test samples), as the `gan` stage does, and like it on the GPU where torch sees one (--device cpu or cuda to
choose). About 2.5 minutes an epoch on 2 cores, so it saves its state after every epoch to
benchmarks/.data/gan_quality_full_state.pt and its history so far to the results file: a rerun resumes after the
last finished epoch. It writes gan_quality_full.json and, at the end, the sample grid and the per-class grid. --set
KEY=VALUE (as `dvc exp run -S`) changes a key of params.yaml for this run only, validated as the stages validate
params.yaml; such a run needs its own --name, used for its results file, samples and saved state.

--conditional trains that same config twice per seed (--seeds, default 0,1,2): unconditional
(gan_search.space.conditional false, the default until this benchmark chose conditional) and class-conditional (a
class embedding in the generator, a projection discriminator, the default since), each with `train_best` and scored
with `evaluate_gan` as the gan and gan_eval stages do: IS over the real test images', FID, precision, recall and,
for the conditional arm, class consistency, with per-class scores. A finished (arm, seed) is appended to
benchmarks/results/gan_quality_conditional.json (with the machine's facts and the device of each run) and a rerun
skips it; a run cut off resumes after its last epoch (its state under benchmarks/.data/). Processes given disjoint
--seeds may run side by side and share the file (each adds its runs under a lock): on a 2-core CPU, one torch thread
each (--threads 1) trains more images a second in all than one process of two threads (measured: 200 img/s at one
thread beside another run's 250 at two, against 286 alone at two). The summary gives each arm's median, mean,
standard deviation and range over the seeds, the paired differences and, at 3 seeds each, the verdict by the rule
declared before the runs (`DECIDED_BY`): conditional becomes the default if its median IS over real's is higher and
its median FID no higher. --set and --name apply as for --budget full; --smoke-test runs 1 epoch of 512 images, 200
scored samples, seeds 0 and 1, with a scoring classifier of 1 epoch on 2,000 images, into
gan_quality_conditional_smoke.json (a check that the code runs; its numbers mean nothing).

Runs, in order: each generator kind with params.yaml's recipe (hinge loss, EMA of G, R1 penalty, a discriminator
learning rate 4x the generator's); then, on the best kind, each stabiliser taken out, one at a time.
With --variants, instead: rows_conv with what might buy quality at a short budget (smaller batches, so more
steps for the same images; higher learning rates; more epochs; learning rates annealed on a cosine), against the
recipe as it is, written to gan_quality_<budget>_variants.json. Writes benchmarks/results/gan_quality_<budget>.json;
real Fashion-MNIST is fetched and prepared on first use (benchmarks/_common.py: from $GRUTUNE_DATA_MIRROR,
by default Debian's dataset-fashion-mnist copy).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, fashion_mnist, save, table  # noqa: E402
from grutune.config import load_params  # noqa: E402
from grutune.errors import Collapsed, ConfigError  # noqa: E402
from grutune.final.ray_train import RunHooks  # noqa: E402
from grutune.gan import GENERATOR_NAMES, Recipe, class_grid, evaluate_gan  # noqa: E402
from grutune.gan.final import FinalGanSettings, score_final, train_best  # noqa: E402
from grutune.io import atomic_path, write_png  # noqa: E402
from grutune.models import build_classifier  # noqa: E402
from grutune.objectives import GanTrialConfig, TrialConfig  # noqa: E402
from grutune.training import Split, evaluate, fit, hardware, new_classifier, pick_device  # noqa: E402

BUDGETS = {
    "laptop": dict(epochs=3, subset=20_000, eval_samples=2_000),
    "long": dict(epochs=8, subset=None, eval_samples=10_000),
    "full": None,  # params.yaml's gan section: see full_budget()
}
ROOT = Path(__file__).resolve().parents[1]
# A config from gan_search's space (the best of a few probes); the recipe is params.yaml's gan section.
CONFIG = dict(hidden_size=256, num_layers=1, backbone="resnet", lr_g=5e-4, lr_d=2e-3)
RECIPE = Recipe(batch_size=64, loss="hinge", ema_decay=0.999, r1_gamma=1.0)
ABLATIONS = {  # name -> (config change, recipe change): each stabiliser of the recipe taken out, one at a time
    "non-saturating loss": ({}, {"loss": "nonsaturating"}),
    "no EMA": ({}, {"ema_decay": 0.0}),
    "no R1 penalty": ({}, {"r1_gamma": 0.0}),
    "equal learning rates (two-timescale off)": ({"lr_d": 5e-4}, {}),
}

VARIANTS = {  # name -> (config change, recipe change, budget change): for a short budget, run in this order
    "as it is": ({}, {}, {}),
    "batch 32": ({}, {"batch_size": 32}, {}),
    "learning rates x2": ({"lr_g": 1e-3, "lr_d": 4e-3}, {}, {}),
    "4 epochs": ({}, {}, {"epochs": 4}),
    "batch 32, learning rates x2": ({"lr_g": 1e-3, "lr_d": 4e-3}, {"batch_size": 32}, {}),
    "5 epochs (the laptop preset)": ({}, {}, {"epochs": 5}),
    "5 epochs, cosine learning rates": ({}, {"lr_schedule": "cosine"}, {"epochs": 5}),
    "5 epochs, R1 gamma 0.1": ({}, {"r1_gamma": 0.1}, {"epochs": 5}),
}


def classifier(data, seed: int, smoke: bool = False):
    """The scoring classifier: a bidirectional row-wise GRU on a conv backbone, 3 epochs; cached by data hash. With
    `smoke`, 1 epoch of 2,000 images (cached apart), for a smoke test only."""
    path = DATA / ("gan_quality_classifier_smoke.pt" if smoke else "gan_quality_classifier.pt")
    if path.is_file():
        ckpt = torch.load(path, weights_only=True)
        if ckpt["data_hash"] == data.content_hash:
            return build_classifier(ckpt["model_kwargs"], ckpt["model"]), ckpt["test_accuracy"]
    hp = TrialConfig(
        cell="gru",
        hidden_size=128,
        num_layers=1,
        bidirectional=True,
        dropout=0.1,
        backbone="conv",
        lr=2e-3,
        weight_decay=1e-4,
        batch_size=128,
    )
    torch.manual_seed(seed)
    model, opt = new_classifier(hp, in_shape=data.image_shape, num_classes=data.num_classes, device=torch.device("cpu"))
    n, epochs = (2_000, 1) if smoke else (len(data.y_train), 3)
    train, val = Split.of(data.x_train[:n], data.y_train[:n], "cpu"), Split.of(data.x_val, data.y_val, "cpu")
    fit(
        model,
        opt,
        train,
        val,
        epochs=epochs,
        batch_size=hp.batch_size,
        seed=seed,
        schedule_epochs=epochs,
        on_epoch=lambda m: print(f"classifier epoch {m['epoch']}: val accuracy {m['val_accuracy']:.3f}", flush=True),
    )
    acc = evaluate(model, Split.of(data.x_test, data.y_test, "cpu"))["accuracy"]
    torch.save(
        {
            "model": model.state_dict(),
            "model_kwargs": model.kwargs,
            "data_hash": data.content_hash,
            "test_accuracy": acc,
        },
        path,
    )
    return model, acc


def scores(m: dict) -> dict:
    """A GAN's test scores (`evaluate_gan`'s metrics) as the tables show them, beside the real-data references."""
    return {
        "IS": m["inception_score"],
        "FID": m["fid"],
        "real IS": m["reference_inception_score_test"],
        "real FID": m["reference_fid_train_vs_test"],
        "IS / real": m["inception_score"] / m["reference_inception_score_test"],
    }


def run(name: str, kind: str, config: dict, recipe: Recipe, data, clf, budget: dict, seed: int, out: Path) -> dict:
    hp = GanTrialConfig(generator=kind, **config)
    t0 = time.perf_counter()
    row = {"run": name, "generator": kind, **config, **dataclasses.asdict(recipe)}
    try:
        settings = FinalGanSettings(
            epochs=budget["epochs"],
            noise_dim=64,
            subset=budget["subset"],
            eval_samples=budget["eval_samples"],
            eval_every=1,
            min_diversity=0.1,
            seed=seed,
        )
        cpu = torch.device("cpu")
        final = score_final(train_best(hp, recipe, clf, data, settings, device=cpu), clf, data, settings, device=cpu)
    except Collapsed as e:
        return {**row, "collapsed": str(e), "minutes": (time.perf_counter() - t0) / 60}
    write_png(out / (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") + ".png"), final.grid)
    m = final.metrics
    return {
        **row,
        **scores(m),
        "FID / real": m["fid"] / m["reference_fid_train_vs_test"],
        "best epoch": m["best_epoch"],
        "minutes": (time.perf_counter() - t0) / 60,
        "history": final.history,
    }


def with_changes(changes: list[str]):
    """params.yaml with `changes` ("section.key=value", the value read as YAML) applied, validated as a whole."""
    if not changes:
        return load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for change in changes:
        key, sep, value = change.partition("=")
        *path, leaf = key.split(".")
        node = raw
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not sep or not isinstance(node, dict) or leaf not in node:
            raise SystemExit(f"--set {change!r}: expected KEY=VALUE with KEY a key of params.yaml, like gan.epochs=8")
        node[leaf] = yaml.safe_load(value)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(raw))
        try:
            return load_params(path)
        except ConfigError as e:
            raise SystemExit(f"--set {' '.join(changes)}: {str(e).replace(str(path), 'params.yaml')}") from None


def train_resumable(hp, recipe, clf, data, settings, device, state_path: Path, key: dict, after_epoch=None):
    """`train_best`, its state saved to `state_path` after every epoch under `key` (what determines the run); a
    rerun with the same key resumes after the last saved epoch. `after_epoch(state)` follows each save."""
    resume = None
    if state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        if saved["key"] == json.loads(json.dumps(key)):
            resume = saved["state"]
            print(f"resuming after epoch {resume['epoch']} of {settings.epochs} ({state_path})", flush=True)
    t0 = time.perf_counter()

    def checkpoint(state: dict) -> None:
        with atomic_path(state_path) as tmp:
            torch.save({"key": key, "state": state}, tmp)
        done = state["history"]
        print(
            f"epoch {state['epoch']:3d}/{settings.epochs}  val FID {done[-1].get('val_fid', float('nan')):8.3f}  "
            f"diversity {done[-1].get('diversity', float('nan')):.3f}  {done[-1]['images_per_s']:.0f} img/s  "
            f"({(time.perf_counter() - t0) / 60:.1f} min this run)",
            flush=True,
        )
        if after_epoch is not None:
            after_epoch(state)

    hooks = RunHooks(resume=resume, checkpoint=checkpoint)
    return train_best(hp, recipe, clf, data, settings, device=device, hooks=hooks)


def full_budget(data, clf, clf_acc: float, seed: int, changes: list[str], name: str, device: torch.device) -> None:
    """The final GAN at params.yaml's budget (with `changes`), resumable by epoch; see the module's docstring."""
    params = with_changes(changes)
    p, sweep = params.gan, params.gan_search
    config = dict(sweep.points_to_evaluate[0]) if sweep.points_to_evaluate else {"generator": "rows_conv", **CONFIG}
    if isinstance(sweep.space.get("conditional"), bool):  # fixed in the space: every trial, and the gan stage, has it
        config.setdefault("conditional", sweep.space["conditional"])
    hp, recipe = GanTrialConfig(**config), Recipe.of(p)
    settings = dataclasses.replace(FinalGanSettings.of(params), seed=seed)
    key = {
        "config": hp.model_dump(),
        "recipe": dataclasses.asdict(recipe),
        **dataclasses.asdict(settings),
        "data": data.content_hash,
    }
    state_path = DATA / f"{name}_state.pt"
    head = {
        "command": " ".join(["python", "benchmarks/gan_quality.py", *sys.argv[1:]]),
        "changes": changes,
        "budget": {**dataclasses.asdict(settings), "test_samples": p.eval_samples, "batch_size": p.batch_size},
        "classifier_test_accuracy": clf_acc,
        "device": hardware(device),
        "config": hp.model_dump(),
        "recipe": dataclasses.asdict(recipe),
    }

    def saved(state: dict) -> None:
        save(
            name,
            {
                **head,
                "finished": False,
                "epochs_done": state["epoch"],
                "best_epoch_so_far": state["best"].get("epoch"),
                "history": state["history"],
            },
        )

    clf = clf.to(device)
    try:
        trained = train_resumable(hp, recipe, clf, data, settings, device, state_path, key, after_epoch=saved)
    except Collapsed as e:
        raise SystemExit(f"{name}: {e}") from None
    metrics, grid = evaluate_gan(trained.G, clf, data, eval_samples=p.eval_samples, seed=seed, device=device)
    by_class = class_grid(trained.G, clf, Split.of(data.x_test, data.y_test, device), seed=seed)
    out = RESULTS / f"{name}_samples"
    write_png(out / "samples.png", grid)
    write_png(out / "by_class.png", by_class)
    row = {
        **scores(metrics),
        "best epoch": trained.best_epoch,
        "val FID": trained.val_fid,
    }
    print(table([row], list(row)))
    path = save(
        name,
        {
            **head,
            "finished": True,
            **row,
            "metrics": metrics,
            "samples": str(out.relative_to(RESULTS.parent.parent)),
            "history": trained.history,
        },
    )
    print(f"-> {path}")


# --------------------------------------------------------------------------- conditional against unconditional

ARMS = {"unconditional": False, "conditional": True}  # arm -> gan_search.space.conditional; the first was the default
SMOKE = ["gan.epochs=1", "gan.train_subset=512", "gan_search.eval_samples=200", "gan.eval_samples=200"]
COMPARED = ("IS / real", "FID", "precision", "recall", "class consistency")  # what the summary spreads
# Declared on 2026-12-06, with 1 of the 6 runs finished (unconditional seed 0): which arm becomes the default. At 3
# seeds each, conditional replaces the unconditional default if its median IS over real's is higher AND its median
# FID is no higher: both of issue 37's headline measures agree. Where they disagree, or fewer than 3 seeds of an arm
# finished (a collapse counts against it), the default stays unconditional.
DECIDED_BY = {"IS / real": "max", "FID": "min"}
SEEDS_TO_DECIDE = 3


def spread(values: list[float]) -> dict:
    """Median, mean, standard deviation (n - 1; 0 for one value) and range of one score over seeds."""
    v = np.asarray(values, dtype=float)
    if not len(v):
        return {"n": 0}
    return {
        "n": len(v),
        "median": float(np.median(v)),
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def summarise(runs: list[dict]) -> dict:
    """Each arm's spread of each score over its finished seeds, the paired differences (conditional - unconditional)
    of the seeds both arms finished, and the declared verdict (`verdict`) once it is due."""
    collapsed = {arm: sum(1 for r in runs if r["arm"] == arm and "collapsed" in r) for arm in ARMS}
    runs = [r for r in runs if "FID" in r]
    arms = {
        arm: {k: spread([r[k] for r in runs if r["arm"] == arm and r.get(k) is not None]) for k in COMPARED}
        for arm in ARMS
    }
    arms = {arm: {k: v for k, v in by.items() if v["n"]} for arm, by in arms.items()}
    done = {(r["arm"], r["seed"]): r for r in runs}
    seeds = sorted({s for a, s in done if a == "conditional"} & {s for a, s in done if a == "unconditional"})
    paired = {
        k: spread([done["conditional", s][k] - done["unconditional", s][k] for s in seeds])
        for k in ("IS / real", "FID", "precision", "recall")
        if seeds
    }
    return {
        "arms": arms,
        "paired_seeds": seeds,
        "paired_difference_conditional_minus_unconditional": paired,
        "verdict": verdict(arms, collapsed),
    }


def verdict(arms: dict, collapsed: dict[str, int]) -> dict | None:
    """The declared rule (DECIDED_BY): the default arm once each arm has run SEEDS_TO_DECIDE seeds, else None. An arm
    with a collapsed seed loses; where both have one, the default stays."""
    ran = {arm: arms.get(arm, {}).get("IS / real", {}).get("n", 0) + collapsed.get(arm, 0) for arm in ARMS}
    if min(ran.values()) < SEEDS_TO_DECIDE:
        return None
    rule = "conditional if its median IS / real is higher and its median FID no higher, at 3 seeds each"
    if collapsed.get("conditional") or collapsed.get("unconditional"):
        wins = not collapsed.get("conditional")
        return {"default": "conditional" if wins else "unconditional", "rule": rule, "collapsed": collapsed}
    challenger, default = arms["conditional"], arms["unconditional"]
    better = {
        k: challenger[k]["median"] > default[k]["median"]
        if goal == "max"
        else challenger[k]["median"] <= default[k]["median"]
        for k, goal in DECIDED_BY.items()
    }
    return {
        "default": "conditional" if all(better.values()) else "unconditional",
        "rule": rule,
        "conditional_better_on": [k for k, b in better.items() if b],
    }


def compare_conditional(
    data, clf, clf_acc: float, seeds: list[int], changes: list[str], name: str, device: torch.device
) -> Path:
    """Class-conditional against unconditional at params.yaml's budget (with `changes`), each of `seeds`; see the
    module's docstring. Returns the results file."""
    params = with_changes(changes)
    p, sweep = params.gan, params.gan_search
    config = dict(sweep.points_to_evaluate[0]) if sweep.points_to_evaluate else {"generator": "rows_conv", **CONFIG}
    config.pop("conditional", None)
    recipe = Recipe.of(p)
    budget = dataclasses.asdict(dataclasses.replace(FinalGanSettings.of(params), seed=0))
    budget.pop("seed")
    head = {
        "command": " ".join(["python", "benchmarks/gan_quality.py", *sys.argv[1:]]),
        "changes": changes,
        "budget": {**budget, "test_samples": p.eval_samples, "batch_size": p.batch_size},
        "config": config,
        "recipe": dataclasses.asdict(recipe),
        "default_arm": "conditional" if sweep.space.get("conditional") is True else "unconditional",
        "classifier_test_accuracy": clf_acc,
        "data": data.content_hash,
    }
    path = RESULTS / f"{name}.json"

    def finished() -> list[dict]:
        """The runs in the results file now: another process (other --seeds) may have added some since."""
        if not path.is_file():
            return []
        before = json.loads(path.read_text())
        same = ("changes", "budget", "config", "recipe", "classifier_test_accuracy", "data")
        if all(before.get(k) == json.loads(json.dumps(head[k])) for k in same):
            return before["runs"]
        raise SystemExit(
            f"{path} holds runs of another budget, config, recipe, classifier or data: give this run its own "
            f"--name, or move that file away"
        )

    runs = finished()
    columns = ["arm", "seed", "IS / real", "FID", "precision", "recall", "class consistency", "best epoch", "minutes"]
    clf = clf.to(device)
    for seed in seeds:
        for arm, conditional in ARMS.items():
            if any(r["arm"] == arm and r["seed"] == seed for r in finished()):
                print(f"{arm} seed {seed}: done, in {path.name}", flush=True)
                continue
            print(f"{arm} seed {seed}: training on {hardware(device)}", flush=True)
            hp = GanTrialConfig(**config, conditional=conditional)
            settings = dataclasses.replace(FinalGanSettings.of(params), seed=seed)
            key = {"config": hp.model_dump(), "recipe": dataclasses.asdict(recipe), **dataclasses.asdict(settings)}
            key["data"] = data.content_hash
            state_path = DATA / f"{name}_{arm}_seed{seed}_state.pt"
            t0 = time.perf_counter()
            try:
                trained = train_resumable(hp, recipe, clf, data, settings, device, state_path, key)
            except Collapsed as e:
                row = {"arm": arm, "seed": seed, "collapsed": str(e), "device": hardware(device)}
            else:
                metrics, grid = evaluate_gan(
                    trained.G, clf, data, eval_samples=p.eval_samples, seed=seed, device=device
                )
                by_class = class_grid(trained.G, clf, Split.of(data.x_test, data.y_test, device), seed=seed)
                out = RESULTS / f"{name}_samples"
                write_png(out / f"{arm}_seed{seed}.png", grid)
                write_png(out / f"{arm}_seed{seed}_by_class.png", by_class)
                row = {
                    "arm": arm,
                    "seed": seed,
                    **scores(metrics),
                    "precision": metrics["precision"],
                    "recall": metrics["recall"],
                    "class consistency": metrics.get("class_consistency"),
                    "best epoch": trained.best_epoch,
                    "val FID": trained.val_fid,
                    "minutes": (time.perf_counter() - t0) / 60,  # this session's part, where it resumed
                    "device": hardware(device),
                    "metrics": metrics,
                    "history": trained.history,
                }
            print(table([row], columns), flush=True)
            with open(DATA / f".{name}.lock", "w") as lock:  # processes with other --seeds append beside this one
                fcntl.flock(lock, fcntl.LOCK_EX)
                runs = [r for r in finished() if (r["arm"], r["seed"]) != (arm, seed)] + [row]
                save(name, {**head, "runs": runs, "summary": summarise(runs)})
            state_path.unlink(missing_ok=True)  # finished: the run is in the results file
    runs = finished()
    summary = summarise(runs)
    print(table([r for r in runs if "FID" in r], columns))
    for arm, by in summary["arms"].items():
        print(
            arm
            + ": "
            + ", ".join(f"{k} {v['median']:.3f} (median; {v['min']:.3f}-{v['max']:.3f})" for k, v in by.items())
        )
    v = summary["verdict"]
    print(f"default by the declared rule: {v['default']} ({v['rule']})" if v else "no verdict before 3 seeds each")
    return save(name, {**head, "runs": runs, "summary": summary})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", choices=BUDGETS, default="laptop")
    ap.add_argument("--only", default="", help="comma-separated generator kinds (default: all); no ablations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", action="store_true", help="rows_conv's short-budget variants instead")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s, the laptop's cores)")
    ap.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="with --budget full: a params.yaml change"
    )
    ap.add_argument("--name", help="with --budget full or --conditional: the results' name (gan_quality_full, ...)")
    ap.add_argument("--conditional", action="store_true", help="class-conditional against unconditional, full budget")
    ap.add_argument("--seeds", default="0,1,2", help="with --conditional: comma-separated seeds (%(default)s)")
    ap.add_argument("--smoke-test", action="store_true", help="with --conditional: a tiny budget, to see that it runs")
    ap.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        help="with --budget full: where to train (default: the GPU where torch sees one, as the gan stage does)",
    )
    args = ap.parse_args()
    full = args.budget == "full" or args.conditional
    if args.smoke_test and not args.conditional:
        ap.error("--smoke-test goes with --conditional")
    if args.conditional and args.smoke_test:
        args.set = [*SMOKE, *args.set]
        args.seeds = "0,1" if args.seeds == "0,1,2" else args.seeds
    default_name = (
        ("gan_quality_conditional_smoke" if args.smoke_test else "gan_quality_conditional")
        if args.conditional
        else "gan_quality_full"
    )
    if (args.set or args.name) and not full:
        ap.error("--set and --name go with --budget full or --conditional")
    if args.name is None:
        if args.set and not args.smoke_test:
            ap.error("--set changes params.yaml's budget: give the run a --name of its own")
        args.name = default_name
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.name):
        ap.error(f"--name {args.name!r}: letters, digits, _ and - only (it names files under benchmarks/results/)")
    if args.device and not full:
        ap.error("--device goes with --budget full or --conditional (the other budgets were measured on the CPU)")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device here")
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--seeds {args.seeds!r}: comma-separated integers, like 0,1,2")
    with_changes(args.set)  # bad keys or values fail before the data and the classifier load
    torch.set_num_threads(args.threads)
    data = fashion_mnist(verify=False)
    clf, clf_acc = classifier(data, args.seed, smoke=args.smoke_test)
    print(f"scoring classifier: test accuracy {clf_acc:.3f}")
    if args.conditional:
        device = torch.device(args.device) if args.device else pick_device()
        path = compare_conditional(data, clf, clf_acc, seeds, args.set, args.name, device)
        print(f"-> {path}")
        return
    if args.budget == "full":
        device = torch.device(args.device) if args.device else pick_device()
        return full_budget(data, clf, clf_acc, args.seed, args.set, args.name, device)
    budget, out = BUDGETS[args.budget], RESULTS / f"gan_quality_{args.budget}_samples"
    out.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in args.only.split(",") if k] or list(GENERATOR_NAMES)
    rows = []
    name = f"gan_quality_{args.budget}"
    if args.variants:  # resumable: each variant is saved as it finishes, and a rerun skips those done
        kinds, name = [], f"{name}_variants"
        done = RESULTS / f"{name}.json"
        rows = [r for r in json.loads(done.read_text())["runs"] if r.get("seed") == args.seed] if done.is_file() else []
        for label, (cfg, rec, bud) in VARIANTS.items():
            if any(r["run"] == f"rows_conv: {label}" for r in rows):
                continue
            recipe = dataclasses.replace(RECIPE, **rec)
            row = run(
                f"rows_conv: {label}",
                "rows_conv",
                {**CONFIG, **cfg},
                recipe,
                data,
                clf,
                {**budget, **bud},
                args.seed,
                out,
            )
            row["epochs"] = {**budget, **bud}["epochs"]
            rows.append({**row, "seed": args.seed})
            print(table(rows[-1:], ["run", "IS", "FID", "IS / real", "best epoch", "minutes"]), flush=True)
            save(name, {"command": " ".join(["python", "benchmarks/gan_quality.py", *sys.argv[1:]]), "runs": rows})
    for kind in kinds:
        rows.append(run(kind, kind, CONFIG, RECIPE, data, clf, budget, args.seed, out))
        print(table(rows[-1:], ["run", "IS", "FID", "real IS", "real FID", "best epoch", "minutes"]), flush=True)
    if not args.only and not args.variants:
        scored = [r for r in rows if "FID" in r]
        best = min(scored, key=lambda r: r["FID"])["generator"] if scored else kinds[0]
        for name, (cfg, rec) in ABLATIONS.items():
            rows.append(
                run(
                    f"{best}: {name}",
                    best,
                    {**CONFIG, **cfg},
                    dataclasses.replace(RECIPE, **rec),
                    data,
                    clf,
                    budget,
                    args.seed,
                    out,
                )
            )
            print(table(rows[-1:], ["run", "IS", "FID", "best epoch", "minutes"]), flush=True)
    columns = ["run", "IS", "FID", "IS / real", "FID / real", "best epoch", "minutes"]
    print(table(rows, columns))
    print("real data:", {k: rows[0].get(k) for k in ("real IS", "real FID")})
    path = save(
        name,
        {
            "command": " ".join(["python", "benchmarks/gan_quality.py", *sys.argv[1:]]),
            "budget": budget,
            "classifier_test_accuracy": clf_acc,
            "config": CONFIG,
            "recipe": dataclasses.asdict(RECIPE),
            "samples": str(out.relative_to(RESULTS.parent.parent)),
            "runs": rows,
            "table": table(rows, columns),
        },
    )
    print(f"-> {path}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
