"""How often the full-budget GAN collapses at its start, per initialisation of the generator's output layers.

    python benchmarks/gan_start.py [--seeds 40] [--steps 150]

The config and recipe of `gan_quality.py --budget full` (params.yaml's), trained with `gan.fit_gan` (the stage's
own loop) for the first `--steps` steps of epoch 1 at the peak learning rates, on real Fashion-MNIST. Recorded per
seed: the sample diversity (per-pixel spread of 2,000 samples of the EMA generator over the real validation images'
spread: about 1 for a healthy GAN, 0 for one image whatever the noise) before training and after those steps, and
whether it is below gan_search.min_diversity, the threshold at which the stage calls an epoch collapsed.

Arms, on rows_conv (the full budget's generator): its head (GRU state -> feature rows) and its render convs
initialised with torch's defaults, or variance-preserving (Kaiming normal for the LeakyReLU(0.2) they feed). Both
arms of a seed share everything else: the other weights, the data order and the noise (the random state is set
aside around the re-initialisation). Paired: the difference in diversity after the steps (Wilcoxon), and the
collapses of each arm. The generators start variance-preserving since this benchmark (gan/models.py);
the torch-default arm is how they started before it.

Each (arm, seed) is appended to benchmarks/results/gan_start.json as it finishes; a rerun skips those done. About
40 seconds a run on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, fashion_mnist, save, table  # noqa: E402
from grutune.config import load_params  # noqa: E402
from grutune.gan import Recipe, diversity, fit_gan, generate, new_gan  # noqa: E402
from grutune.models import to_float  # noqa: E402
from grutune.objectives import GanTrialConfig  # noqa: E402
from grutune.training import Split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAME = "gan_start"


def torch_default(m: nn.Module) -> None:
    m.reset_parameters()


def variance_preserving(m: nn.Module) -> None:
    nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
    nn.init.zeros_(m.bias)


ARMS = {"torch default": torch_default, "variance-preserving": variance_preserving}


def run(arm: str, seed: int, steps: int, train: Split, real: torch.Tensor, params) -> dict:
    p = params.gan
    hp = GanTrialConfig(**params.gan_search.points_to_evaluate[0])
    recipe = dataclasses.replace(Recipe.of(p), lr_schedule="constant")  # the first steps of a long run: peak rates
    torch.manual_seed(seed)
    gan = new_gan(
        hp, shape=tuple(train.x.shape[1:]), noise_dim=p.noise_dim, device=torch.device("cpu"), ema_decay=p.ema_decay
    )
    state = torch.get_rng_state()
    for m in (gan.G.head, *gan.G.render):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            ARMS[arm](m)
    torch.set_rng_state(state)  # both arms draw the same noise from here on
    if gan.ema is not None:
        gan.ema.module.load_state_dict(gan.G.state_dict())  # the EMA starts as the re-initialised G, as in new_gan
    before = diversity(generate(gan.sampler, len(real), seed=seed, device=real.device), real)
    t0 = time.perf_counter()
    m = fit_gan(gan, train, recipe, epochs=1, seed=seed, subset=steps * recipe.batch_size)[0]
    after = diversity(generate(gan.sampler, len(real), seed=seed, device=real.device), real)
    return {
        "arm": arm,
        "seed": seed,
        "steps": steps,
        "diversity_before": before,
        "diversity_after": after,
        "collapsed": after < params.gan_search.min_diversity,
        "d_real": m["d_real"],
        "d_fake": m["d_fake"],
        "seconds": time.perf_counter() - t0,
    }


def summary(rows: list[dict], min_diversity: float) -> dict:
    from scipy.stats import binomtest, wilcoxon

    by = {(r["arm"], r["seed"]): r for r in rows}
    seeds = sorted({s for _, s in by if all((a, s) in by for a in ARMS)})
    out = {"paired_seeds": len(seeds), "min_diversity": min_diversity}
    for arm in ARMS:
        after = np.array([by[arm, s]["diversity_after"] for s in seeds])
        before = np.array([by[arm, s]["diversity_before"] for s in seeds])
        out[arm] = {
            "collapsed": int((after < min_diversity).sum()) if len(seeds) else 0,
            "diversity_before_median": float(np.median(before)) if len(seeds) else None,
            "diversity_after_median": float(np.median(after)) if len(seeds) else None,
            "diversity_after_iqr": [float(q) for q in np.percentile(after, [25, 75])] if len(seeds) else None,
        }
    if len(seeds) >= 5:
        d = np.array(
            [by["variance-preserving", s]["diversity_after"] - by["torch default", s]["diversity_after"] for s in seeds]
        )
        out["variance-preserving vs torch default"] = {
            "mean_diff": float(d.mean()),
            "wins": int((d > 0).sum()),
            "ties": int((d == 0).sum()),
            "of": len(d),
            "wilcoxon_p": float(wilcoxon(d).pvalue) if d.any() else None,
        }
        # collapses, paired: seeds where only one arm collapsed (McNemar's exact test on those)
        a, b = ARMS
        only = {x: sum(by[x, s]["collapsed"] and not by[y, s]["collapsed"] for s in seeds) for x, y in ((a, b), (b, a))}
        n = sum(only.values())
        out["collapsed in one arm only"] = {
            **only,
            "exact_p": float(binomtest(only["torch default"], n).pvalue) if n else None,
        }
    return out


def write(rows: list[dict], params) -> None:
    save(
        NAME,
        {
            "command": " ".join(["python", "benchmarks/gan_start.py", *sys.argv[1:]]),
            "config": params.gan_search.points_to_evaluate[0],
            "summary": summary(rows, params.gan_search.min_diversity),
            "runs": rows,
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=40, help="seeds per arm (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=150, help="training steps before diversity is read (%(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s, the laptop's cores)")
    args = ap.parse_args()
    if args.seeds < 1 or args.steps < 1:
        ap.error("--seeds and --steps must be at least 1")
    torch.set_num_threads(args.threads)
    params = load_params(ROOT / "params.yaml")
    data = fashion_mnist(verify=False)
    train = Split.of(data.x_train, data.y_train, "cpu")  # once: every run reads the same tensors
    real = to_float(torch.as_tensor(data.x_val[:2000]))
    path = RESULTS / f"{NAME}.json"
    rows = json.loads(path.read_text())["runs"] if path.is_file() else []
    rows = [r for r in rows if r["steps"] == args.steps]
    for seed in range(args.seeds):
        for arm in ARMS:
            if any(r["arm"] == arm and r["seed"] == seed for r in rows):
                continue
            rows.append(run(arm, seed, args.steps, train, real, params))
            r = rows[-1]
            print(
                f"seed {seed:3d}  {arm:20s} diversity {r['diversity_before']:.3f} -> {r['diversity_after']:.3f}"
                f"{'  collapsed' if r['collapsed'] else ''}",
                flush=True,
            )
            write(rows, params)
    write(rows, params)  # the summary as this version computes it, also when every run was done before
    s = summary(rows, params.gan_search.min_diversity)
    print(
        table(
            [{"arm": a, **s[a]} for a in ARMS],
            ["arm", "collapsed", "diversity_before_median", "diversity_after_median"],
        )
    )
    for key in ("variance-preserving vs torch default", "collapsed in one arm only"):
        if key in s:
            print(f"{key}: {s[key]}")


if __name__ == "__main__":
    main()
