"""Stage `report`: one self-contained HTML page of every dataset's sweep and classifier, and of the GAN.

    python pipeline/report.py metrics search data/prepared report/index.html

Covers every dataset in `datasets` plus the GAN on `gan.dataset`, reading each from where its stage writes it:
<metrics>/<ds>/{search,classifier}.json and confusion.csv, <search>/<ds>/trials.csv, <prepared>/<ds>.npz,
<metrics>/gan.json and gan_samples.png. The page embeds its plots as PNG data URIs, so it reads offline.
"""

import argparse
from pathlib import Path

from grutune.config import load_params
from grutune.errors import cli
from grutune.io import write_text
from grutune.report import load_dataset_results, load_gan_results, render_report
from grutune.tracking import run_context


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics_dir", type=Path, help="where the search, train and gan stages write their metrics")
    ap.add_argument("search_dir", type=Path, help="holds <dataset>/trials.csv from the search stage")
    ap.add_argument("prepared_dir", type=Path, help="holds <dataset>.npz from the prepare stage")
    ap.add_argument("out", type=Path, help="the HTML page to write")
    args = ap.parse_args()
    params = load_params()
    datasets = [load_dataset_results(ds, args.metrics_dir, args.search_dir, args.prepared_dir)
                for ds in params.datasets]
    gan = load_gan_results(params.gan.dataset, args.metrics_dir, args.prepared_dir)
    ctx = run_context()
    page = render_report(datasets, gan, commit=ctx.get("git_commit", "unknown"),
                         experiment=ctx.get("dvc_experiment"))
    write_text(args.out, page)
    print(f"wrote {args.out} ({len(page) / 1e6:.1f} MB): {', '.join(params.datasets)} and the GAN")


if __name__ == "__main__":
    main()
