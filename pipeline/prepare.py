"""DVC stage `prepare`: parse one dataset's raw files, carve a seeded validation split, write one .npz.

    python pipeline/prepare.py mnist data/raw/mnist data/prepared/mnist.npz

Reads `seed` and `prepare.val_fraction` from params.yaml.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from grutune.config import load_params
from grutune.data import DATASETS, prepare
from grutune.errors import cli


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=list(DATASETS), help="dataset to prepare")
    parser.add_argument("raw_dir", type=Path, help="directory the fetch stage filled")
    parser.add_argument("out_npz", type=Path, help="where to write the prepared arrays (.npz)")
    args = parser.parse_args()
    params = load_params("params.yaml")
    meta = prepare(args.dataset, args.raw_dir, args.out_npz, params.prepare.val_fraction, params.seed)
    print(
        f"{meta['dataset']}: train {meta['n_train']}, val {meta['n_val']}, test {meta['n_test']} images of "
        f"{tuple(meta['image_shape'])}, {len(meta['classes'])} classes -> {args.out_npz} ({meta['content_hash']})"
    )


if __name__ == "__main__":
    main()
