"""What every benchmark shares: the machine it ran on, a printed table, and a JSON file under benchmarks/results/
(or the folder $GRUTUNE_BENCHMARK_RESULTS names; caches under benchmarks/.data/ or $GRUTUNE_BENCHMARK_DATA)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from grutune.data import Prepared, fetch, load_prepared, prepare

ROOT = Path(__file__).resolve().parents[1]
# Where results and caches go: the repository's folders, unless these variables name others (the tests of the
# benchmarks' smoke paths keep theirs out of the repository).
RESULTS = Path(os.environ.get("GRUTUNE_BENCHMARK_RESULTS") or ROOT / "benchmarks" / "results")
# downloads, prepared data and cached models; not committed
DATA = Path(os.environ.get("GRUTUNE_BENCHMARK_DATA") or ROOT / "benchmarks" / ".data")
MIRROR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist: the real files, offline


def fashion_mnist_file(data_dir: Path = DATA) -> Path:
    """data_dir/fashion_mnist.npz: real Fashion-MNIST as the pipeline prepares it (params.yaml's val_fraction 0.1,
    seed 0), fetched and prepared on first use (from $GRUTUNE_DATA_MIRROR, by default Debian's dataset-fashion-mnist
    copy; fetch checks the content hashes)."""
    npz = data_dir / "fashion_mnist.npz"
    if not npz.exists():
        os.environ.setdefault("GRUTUNE_DATA_MIRROR", MIRROR)
        fetch("fashion_mnist", data_dir / "raw")
        prepare("fashion_mnist", data_dir / "raw", npz, val_fraction=0.1, seed=0)
    return npz


def fashion_mnist(data_dir: Path = DATA, verify: bool = True) -> Prepared:
    """`fashion_mnist_file`, read back; `verify=False` skips re-hashing a file prepared before."""
    return load_prepared(fashion_mnist_file(data_dir), verify=verify)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """The facts a reader needs to compare figures: CPU model and cores, GPU, torch and its threads."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        **{name: _version(name) for name in ("optuna", "ray")},  # the searcher's results move with their versions
        "python": platform.python_version(),
        "git_commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table (also valid Markdown), numbers formatted to 3 significant decimals."""

    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def save(name: str, payload: dict, machine_facts: dict | None = None) -> Path:
    """benchmarks/results/<name>.json with the machine's facts (this machine's, or `machine_facts`: those of the
    machine that made the results, when a rerun only summarises them again); returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_name(f".{path.name}.tmp")  # atomically: a kill mid-write leaves the previous file whole
    facts = machine_facts or machine()
    tmp.write_text(dumps(portable({"benchmark": name, "machine": facts, **payload})))
    os.replace(tmp, path)
    return path


def portable(value, root: Path = ROOT):
    """`value` with every string that is an absolute path inside the repository (`root`) written relative to it: a
    result names `benchmarks/.data`, not the folder of the clone or worktree that made it."""
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, root) for v in value]
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str) and value.startswith(str(root) + os.sep):
        return value[len(str(root)) + 1 :]
    return value


def dumps(results: dict) -> str:
    """Results as indented JSON, except that a long list of records (a run per seed, arm and setting) is written a
    record a line: the same JSON, a third of the size, and a diff shows which runs changed."""
    parts = []
    for key, value in results.items():
        if isinstance(value, list) and len(value) > 100 and all(isinstance(v, dict) for v in value):
            lines = ("    " + json.dumps(v, separators=(",", ":"), default=str) for v in value)
            text = "[\n" + ",\n".join(lines) + "\n  ]"
        else:
            text = json.dumps(value, indent=2, default=str).replace("\n", "\n  ")
        parts.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"
