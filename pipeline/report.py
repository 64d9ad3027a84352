"""Stage `report`: one self-contained HTML page of every sweep (each dataset's and the GAN's), classifier and GAN.

    python pipeline/report.py report/index.html --search metrics/{dataset}/search.json ... (see dvc.yaml)

Covers every dataset in `datasets` plus the GAN on `gan.dataset`; `search.space` and `gan_search.space` say which
hyperparameters each sweep searched on a log scale. Each input is named by its path in the stage's `cmd`; in the
per-dataset ones `{dataset}` stands for each dataset's name. The page embeds its plots as PNG data URIs, so it reads
offline.
"""

import argparse
from pathlib import Path

from grutune.config import load_params
from grutune.errors import cli
from grutune.io import write_text
from grutune.report import DATASET_FILES, GAN_FILES, load_dataset_results, load_gan_results, render_report
from grutune.tracking import run_context


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the HTML page to write")
    for role in DATASET_FILES:
        ap.add_argument(
            f"--{role.replace('_', '-')}",
            required=True,
            metavar="PATH",
            help=f"per-dataset {role} file, with {{dataset}} for the dataset's name",
        )
    for role in GAN_FILES:
        ap.add_argument(f"--gan-{role.replace('_', '-')}", required=True, metavar="PATH", help=f"the GAN's {role} file")
    args = vars(ap.parse_args())
    params = load_params()
    datasets = [
        load_dataset_results(
            ds,
            {r: Path(args[r].format(dataset=ds)) for r in DATASET_FILES},
            params.search.space,
            tuple(params.search.objectives),
        )
        for ds in params.datasets
    ]
    gan = load_gan_results(params.gan.dataset, {r: Path(args[f"gan_{r}"]) for r in GAN_FILES}, params.gan_search.space)
    ctx = run_context()
    page = render_report(datasets, gan, commit=ctx.get("git_commit", "unknown"), experiment=ctx.get("dvc_experiment"))
    write_text(args["out"], page)
    print(f"wrote {args['out']} ({len(page) / 1e6:.1f} MB): {', '.join(params.datasets)} and the GAN")


if __name__ == "__main__":
    main()
