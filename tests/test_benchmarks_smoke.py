"""The benchmarks' smoke paths, as their docstrings give them, on real Fashion-MNIST (Debian's dataset-fashion-mnist):
each runs the benchmark's own code end to end at a tiny budget, into a folder of the test's (not benchmarks/results/),
so that a change to the library that breaks a benchmark fails here, not hours into its run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path("/usr/share/datasets/fashion-mnist")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MIRROR.is_dir(), reason=f"needs Debian's dataset-fashion-mnist ({MIRROR})"),
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Results and caches of this module's runs: the prepared data is made once and shared."""
    root = tmp_path_factory.mktemp("benchmarks")
    return {"GRUTUNE_BENCHMARK_RESULTS": str(root / "results"), "GRUTUNE_BENCHMARK_DATA": str(root / "data")}


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **env, "GRUTUNE_DATA_MIRROR": str(MIRROR), "RAY_ADDRESS": "local"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc


def test_the_conditional_gan_benchmark_runs_both_arms_and_decides_nothing_before_three_seeds(folders):
    run(["benchmarks/gan_quality.py", "--conditional", "--smoke-test", "--threads", "1"], folders)
    results = json.loads(
        (Path(folders["GRUTUNE_BENCHMARK_RESULTS"]) / "gan_quality_conditional_smoke.json").read_text()
    )
    assert sorted((r["arm"], r["seed"]) for r in results["runs"]) == [
        ("conditional", 0),
        ("conditional", 1),
        ("unconditional", 0),
        ("unconditional", 1),
    ]
    assert results["summary"]["paired_seeds"] == [0, 1] and results["summary"]["verdict"] is None
    conditional = [r for r in results["runs"] if r["arm"] == "conditional" and "FID" in r]
    assert all(0 <= r["class consistency"] <= 1 for r in conditional)


def test_the_real_training_search_benchmark_runs_many_trials_in_flight(folders):
    args = ["--seeds", "2100", "--arms", "random_asha,grutune", "--budget", "12", "--max-epochs", "2"]
    args += ["--subset", "200", "--val-images", "200", "--in-flight", "4", "--name", "in_flight_smoke"]
    run(["benchmarks/search_confirm.py", *args], folders)
    results = json.loads((Path(folders["GRUTUNE_BENCHMARK_RESULTS"]) / "in_flight_smoke.json").read_text())
    assert results["declared"]["in_flight"] == 4 and results["declared"]["seeds"] == "2100-2119"
    assert [(r["seed"], r["arm"]) for r in results["runs"]] == [(2100, "random_asha"), (2100, "grutune")]
    for r in results["runs"]:
        assert 2 <= r["in_flight"]["max"] <= 4  # more than one at once, never more than asked
        assert r["trial_epochs"] <= 12 + 2 and len(r["test_per_seed"]) == 3
