"""benchmarks/_common.py: what every benchmark's results file holds."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common  # noqa: E402


def test_save_writes_paths_inside_the_repository_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    payload = {
        "settings": {"data_dir": ROOT / "benchmarks" / ".data", "mirror": "/usr/share/datasets/fashion-mnist"},
        "runs": [{"samples": str(ROOT / "benchmarks" / "results" / "x_samples"), "seeds": (1, 2)}],
        "note": str(ROOT) + "-elsewhere/file",  # a sibling folder whose name starts alike is not inside
    }
    saved = json.loads(_common.save("x", payload, machine_facts={"cpu": "test"}).read_text())
    assert saved["settings"] == {"data_dir": "benchmarks/.data", "mirror": "/usr/share/datasets/fashion-mnist"}
    assert saved["runs"] == [{"samples": "benchmarks/results/x_samples", "seeds": [1, 2]}]
    assert saved["note"] == str(ROOT) + "-elsewhere/file"


def test_no_committed_result_names_the_folder_it_was_made_in():
    for path in sorted((ROOT / "benchmarks" / "results").rglob("*.json")):
        text = path.read_text()
        assert str(ROOT) not in text, path
        assert '"/work/' not in text, f"{path}: an absolute path of the clone that made it"
