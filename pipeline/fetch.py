"""DVC stage `fetch`: download one dataset's official files into a directory, verified against pinned checksums.

    python pipeline/fetch.py mnist data/raw/mnist

Set GRUTUNE_DATA_MIRROR to a directory or base URL to try before the official URLs, and GRUTUNE_CHECKSUMS to a
YAML file of replacement checksums (for a re-packaged mirror).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from grutune.config import load_params
from grutune.data import DATASETS, fetch
from grutune.errors import cli


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=list(DATASETS), help="dataset to fetch")
    parser.add_argument("out_dir", type=Path, help="directory to put the official files in")
    args = parser.parse_args()
    load_params("params.yaml")  # refuse to do anything with an invalid params file, even keys this stage ignores
    paths = fetch(args.dataset, args.out_dir)
    print(f"{args.dataset}: {len(paths)} verified file(s) in {args.out_dir}")


if __name__ == "__main__":
    main()
