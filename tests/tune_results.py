"""Reading a sweep's Tune result files in tests: what each trial reported, and how many trained at once."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import ray


def trial_results(state: Path, pattern: str = "mnist-*/tune-*/run_trial_*/result.json") -> dict[str, list[dict]]:
    """{trial directory name: its result.json lines} (a line still being written is left out)."""
    out = {}
    for f in state.glob(pattern):
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        if rows:
            out[f.parent.name] = rows
    return out


def peak_concurrency(results: dict[str, list[dict]]) -> int:
    """A lower bound on the most trials training at one moment (waiting for a node does not count).

    Each reported epoch trained during (end - time_this_iter_s, end), where Tune's `timestamp` gives the end rounded
    down to a whole second; the part of that interval certain whatever the rounding is
    [timestamp + 1 - time, timestamp].
    """
    events = []
    for rows in results.values():
        for r in rows:
            start, end = r["timestamp"] + 1 - r["time_this_iter_s"], r["timestamp"]
            if start < end:
                events += [(start, 1), (end, -1)]
    running = peak = 0
    for _, step in sorted(events):  # at equal times, an end (-1) comes before a start (+1)
        running += step
        peak = max(peak, running)
    return peak


@contextmanager
def cpus_in_use(total: float, every_s: float = 0.02):
    """While the block runs, sample how many of the cluster's `total` CPUs Ray has handed out; yields the samples."""
    used, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            used.append(total - ray.available_resources().get("CPU", 0))  # Ray leaves out a resource with none left
            time.sleep(every_s)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield used
    finally:
        stop.set()
        watcher.join(timeout=5)
