"""Learning curves of the default search space on real Fashion-MNIST: the table that fidelity and replay studies use.

    GRUTUNE_DATA_MIRROR=/usr/share/datasets/fashion-mnist python benchmarks/learning_curves.py --workers 2
    # 400 configs at seed 0, the first 50 also at seeds 1 and 2; hours on 2 cores, minutes on a GPU (--workers 12).
    # Resumable: each (config, seed) is appended to the table as it finishes, and a rerun skips what is done.
    python benchmarks/learning_curves.py --report   # rank correlations of each rung with the last epoch

Each unit (config, training seed) trains one config drawn from conf/config.yaml's search space twice, at a sweep's
per-trial settings (--epochs epochs of --subset training images, grutune's own `train_epoch`), recording every epoch:
- `cosine`: the trial schedule of today, a cosine from the peak rate to 0 over all epochs (raw weights), and
  `cosine_ema`: an exponential moving average of its weights (half-life --ema-images training images);
- `const`: a constant rate at the peak (raw weights), and `wsd`: a copy of it cooled down from there (the rate falls
  linearly to 0 over --cool times the images seen so far) and scored, while the constant run goes on.
Each is scored on two disjoint halves of the validation split (`acc_a`, `acc_b`) with its loss; the run's training
wall time (evaluation excluded), optimizer steps and the model's parameter count are kept too. A run whose loss
becomes NaN or inf stops there (`diverged`).

The table is benchmarks/results/learning_curves.jsonl.gz, one JSON object per unit; a working copy
(learning_curves.jsonl, git-ignored) is appended to and the compressed one rewritten after every unit.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import gzip
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, fashion_mnist_file, machine, save  # noqa: E402
from grutune.data import load_prepared  # noqa: E402
from grutune.errors import NonFiniteLoss  # noqa: E402
from grutune.models import RecurrentClassifier  # noqa: E402
from grutune.training import Split, cosine, evaluate, pick_device, train_epoch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLE = RESULTS / "learning_curves.jsonl.gz"
WORKING = RESULTS / "learning_curves.jsonl"
OPTIM_KEYS = ("lr", "weight_decay", "batch_size")


# --------------------------------------------------------------------------- configs


def default_space() -> dict:
    """The search space of conf/config.yaml (the one source of the default space)."""
    return yaml.safe_load((ROOT / "conf/config.yaml").read_text())["search"]["space"]


def draw(space: dict, index: int, table_seed: int = 0) -> dict:
    """Config `index` of the table: each dimension drawn uniformly (log-uniformly for loguniform), seeded by
    (table_seed, index) alone, so a rerun draws the same configs."""
    rng = np.random.default_rng([table_seed, index])
    out = {}
    for key, dim in space.items():
        if not isinstance(dim, dict):
            out[key] = dim
            continue
        ((kind, arg),) = dim.items()
        if kind == "choice":
            v = arg[int(rng.integers(len(arg)))]
        elif kind == "uniform":
            v = float(rng.uniform(*arg))
        elif kind == "loguniform":
            v = float(math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]))))
        elif kind == "int":
            v = int(rng.integers(arg[0], arg[1] + 1))
        else:
            raise ValueError(f"search.space.{key}: unknown kind {kind!r}")
        out[key] = v.item() if hasattr(v, "item") else v
    return out


def units(n_configs: int, n_noise: int, noise_seeds: int) -> list[tuple[int, int]]:
    """(config index, training seed) in the order they run: each config's seeds together, so a partial table is
    usable for both questions."""
    return [(i, s) for i in range(n_configs) for s in range(noise_seeds if i < n_noise else 1)]


# --------------------------------------------------------------------------- one unit


@dataclasses.dataclass(frozen=True)
class Budget:
    epochs: int
    subset: int
    cool: float  # cool-down length, as a share of the images seen so far
    ema_images: float  # EMA half-life, in training images


_DATA: dict = {}


def _load(npz: str, device: str) -> None:
    torch.set_num_threads(1)
    d = load_prepared(npz, verify=False)
    dev = torch.device(device)
    half = len(d.y_val) // 2
    _DATA.update(
        train=Split.of(d.x_train, d.y_train, dev),
        a=Split.of(d.x_val[:half], d.y_val[:half], dev),
        b=Split.of(d.x_val[half : 2 * half], d.y_val[half : 2 * half], dev),
        shape=d.image_shape,
        classes=len(d.classes),
        device=dev,
    )


def _score(model) -> dict:
    ea, eb = evaluate(model, _DATA["a"]), evaluate(model, _DATA["b"])
    return {"acc_a": ea["accuracy"], "acc_b": eb["accuracy"], "loss": (ea["loss"] + eb["loss"]) / 2}


def _new(config: dict, seed: int, state: tuple | None = None):
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in config.items() if k not in OPTIM_KEYS}
    model = RecurrentClassifier(in_shape=_DATA["shape"], num_classes=_DATA["classes"], **kwargs).to(_DATA["device"])
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    if state is not None:
        model.load_state_dict(state[0])
        opt.load_state_dict(state[1])
    for g in opt.param_groups:
        g["initial_lr"] = config["lr"]
    return model, opt


def _sync():
    if _DATA["device"].type == "cuda":
        torch.cuda.synchronize()


def run_unit(index: int, config: dict, seed: int, budget: Budget) -> dict:
    """Train `config` under both schedules; return the unit's row of the table."""
    bs, n, E = config["batch_size"], budget.subset, budget.epochs
    gen = lambda e, k=0: torch.Generator().manual_seed(seed * 100_003 + e + 7_919 * k)  # noqa: E731  fit()'s order
    row = {
        "index": index,
        "seed": seed,
        "config": config,
        "epochs": E,
        "subset": n,
        "steps_per_epoch": math.ceil(n / bs),
        "runs": {},
    }

    # cosine over all epochs (today's trials), with an EMA of the weights
    model, opt = _new(config, seed)
    row["params"] = sum(p.numel() for p in model.parameters())
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    decay = 0.5 ** (bs / budget.ema_images)

    def ema_step(*_):
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    ema[k].copy_(v)

    opt.register_step_post_hook(ema_step)
    shadow, _ = _new(config, seed)
    curves = {"cosine": [], "cosine_ema": []}
    wall = 0.0
    try:
        for e in range(E):
            _sync()
            t0 = time.perf_counter()
            tr = train_epoch(
                model,
                opt,
                _DATA["train"],
                batch_size=bs,
                generator=gen(e),
                subset=n,
                lr_at=lambda f, e=e: cosine((e + f) / E),
            )
            _sync()
            wall += time.perf_counter() - t0
            curves["cosine"].append({**_score(model), "train_loss": tr["loss"], "wall_s": round(wall, 3)})
            shadow.load_state_dict(ema)
            curves["cosine_ema"].append(_score(shadow))
    except NonFiniteLoss:
        row["runs"]["cosine_diverged"] = len(curves["cosine"]) + 1
    row["runs"].update(curves)

    # constant rate, and at every epoch a copy cooled down to 0 (warmup-stable-decay)
    model, opt = _new(config, seed)
    curves = {"const": [], "wsd": []}
    wall = 0.0
    try:
        for e in range(E):
            _sync()
            t0 = time.perf_counter()
            tr = train_epoch(model, opt, _DATA["train"], batch_size=bs, generator=gen(e), subset=n)
            _sync()
            wall += time.perf_counter() - t0
            curves["const"].append({**_score(model), "train_loss": tr["loss"], "wall_s": round(wall, 3)})
            cool = max(bs, round(budget.cool * n * (e + 1)))
            copy, copt = _new(config, seed, (model.state_dict(), opt.state_dict()))
            _sync()
            t0 = time.perf_counter()
            try:
                train_epoch(
                    copy, copt, _DATA["train"], batch_size=bs, generator=gen(e, 1), subset=cool, lr_at=lambda f: 1.0 - f
                )
                _sync()
                curves["wsd"].append(
                    {**_score(copy), "cool_images": cool, "cool_wall_s": round(time.perf_counter() - t0, 3)}
                )
            except NonFiniteLoss:
                curves["wsd"].append(
                    {"acc_a": 0.0, "acc_b": 0.0, "loss": math.inf, "cool_images": cool, "diverged": True}
                )
    except NonFiniteLoss:
        row["runs"]["const_diverged"] = len(curves["const"]) + 1
    row["runs"].update(curves)
    return row


# --------------------------------------------------------------------------- the table


def read_table() -> list[dict]:
    """Every finished unit: the working copy if there is one, else the committed table. A line cut by a kill is
    dropped (its unit runs again)."""
    rows = []
    src = WORKING if WORKING.exists() else TABLE
    if not src.exists():
        return rows
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def append(rows: list[dict], row: dict) -> None:
    rows.append(row)
    text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    for path, data in ((WORKING, text.encode()), (TABLE, gzip.compress(text.encode(), mtime=0))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def build(args) -> None:
    budget = Budget(args.epochs, args.subset, args.cool, args.ema_images)
    rows = read_table()
    done = {(r["index"], r["seed"]) for r in rows}
    for r in rows:
        if (r["epochs"], r["subset"]) != (budget.epochs, budget.subset):
            sys.exit(
                f"error: {TABLE.name} holds units of {r['epochs']}x{r['subset']}, not "
                f"{budget.epochs}x{budget.subset}: move it away to start another table"
            )
    space = default_space()
    todo = [(i, s) for i, s in units(args.configs, args.noise_configs, args.noise_seeds) if (i, s) not in done]
    device = args.device or str(pick_device())
    print(f"{len(done)} units done, {len(todo)} to run on {device} with {args.workers} worker(s)", flush=True)
    if not todo:
        return
    npz = str(fashion_mnist_file())  # the workers read the file
    t0 = time.time()
    with cf.ProcessPoolExecutor(
        args.workers,
        mp_context=__import__("multiprocessing").get_context("spawn"),
        initializer=_load,
        initargs=(npz, device),
    ) as pool:
        futures = [pool.submit(run_unit, i, draw(space, i), s, budget) for i, s in todo]
        for k, fut in enumerate(cf.as_completed(futures), 1):
            row = fut.result()
            row["machine"] = {
                "device": device,
                "cpu": machine()["cpu"],
                "gpu": machine()["gpu"],
                "workers": args.workers,
            }
            append(rows, row)
            last = row["runs"].get("cosine") or [{"acc_a": float("nan")}]
            print(
                f"[{k}/{len(todo)}] config {row['index']} seed {row['seed']}: cosine acc {last[-1]['acc_a']:.3f}"
                f" ({(time.time() - t0) / k * (len(todo) - k) / 60:.0f} min left)",
                flush=True,
            )


# --------------------------------------------------------------------------- report


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def value(run: list[dict], epoch: int, half: str) -> float:
    """A run's accuracy at `epoch` (1-based) on one half; 0 for a run that diverged before it."""
    return run[epoch - 1][f"acc_{half}"] if len(run) >= epoch else 0.0


def report(args) -> dict:
    """Rank correlation (Spearman) of each fidelity's reading at each epoch, on half a, with where the trial ends
    under today's schedule, on half b (disjoint images, so shared evaluation noise does not inflate it); and the
    noise of a reading, from the configs trained at several seeds."""
    rows = [r for r in read_table() if r["seed"] == 0]
    E = rows[0]["epochs"]
    final = [value(r["runs"]["cosine"], E, "b") for r in rows]
    fidelities = ("cosine", "cosine_ema", "const", "wsd")
    rho = {
        f: [round(spearman([value(r["runs"][f], e, "a") for r in rows], final), 4) for e in range(1, E + 1)]
        for f in fidelities
    }
    # each fidelity against its own end: how well it ranks for a search that uses it throughout
    own = {
        f: [
            round(spearman([value(r["runs"][f], e, "a") for r in rows], [value(r["runs"][f], E, "b") for r in rows]), 4)
            for e in range(1, E + 1)
        ]
        for f in fidelities
    }
    # among the better half of configs (by their own final, on half b), where ASHA's choices matter
    top = {}
    for f in fidelities:
        ends = np.array([value(r["runs"][f], E, "b") for r in rows])
        keep = [r for r, end in zip(rows, ends) if end >= np.median(ends)]
        top[f] = [
            round(spearman([value(r["runs"][f], e, "a") for r in keep], [value(r["runs"][f], E, "b") for r in keep]), 4)
            for e in range(1, E + 1)
        ]
    by_config: dict[int, list] = {}
    for r in read_table():
        by_config.setdefault(r["index"], []).append(value(r["runs"]["cosine"], E, "a"))
    reps = [v for v in by_config.values() if len(v) > 1]
    seed_sd = float(np.mean([np.std(v, ddof=1) for v in reps])) if reps else math.nan
    half_diff = [value(r["runs"]["cosine"], E, "a") - value(r["runs"]["cosine"], E, "b") for r in rows]
    out = {
        "units": len(read_table()),
        "configs": len(rows),
        "epochs": E,
        "subset": rows[0]["subset"],
        "spearman_vs_cosine_final": rho,
        "spearman_vs_own_final": own,
        "spearman_top_half_vs_own_final": top,
        "final": {
            f: {
                "median": float(np.median([value(r["runs"][f], E, "b") for r in rows])),
                "top10_mean": float(np.mean(sorted(value(r["runs"][f], E, "b") for r in rows)[-10:])),
            }
            for f in fidelities
        },
        "table_machine": rows[0].get("machine"),
        "final_cosine": {
            "median": float(np.median(final)),
            "p90": float(np.percentile(final, 90)),
            "max": float(np.max(final)),
        },
        "noise": {
            "seed_sd_final": seed_sd,
            "configs_repeated": len(reps),
            "half_sd_final": float(np.std(half_diff, ddof=1) / math.sqrt(2)),
        },
    }
    print(json.dumps(out, indent=1))
    save("learning_curves", out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", type=int, default=400)
    ap.add_argument("--noise-configs", type=int, default=50, help="configs also trained at --noise-seeds seeds")
    ap.add_argument("--noise-seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--subset", type=int, default=2000, help="training images per epoch")
    ap.add_argument("--cool", type=float, default=0.2, help="cool-down length, a share of the images seen so far")
    ap.add_argument("--ema-images", type=float, default=1000.0, help="EMA half-life, in training images")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda where there is one)")
    ap.add_argument("--report", action="store_true", help="only summarise the table")
    args = ap.parse_args()
    report(args) if args.report else build(args)


if __name__ == "__main__":
    main()
